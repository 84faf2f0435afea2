"""A user's sessions: the per-user index (``SESSION_USER_KEY``), listing and revocation.

With ``SESSION_USER_KEY`` set, :class:`IndexedStoredSession` replaces
:class:`~flask_beaker_session.stored.StoredSession` for the app's sessions. When the user
key's value of a session changes at save (login, logout, ``regenerate_id()``, ``delete()``)
it updates the store's index, in the order that keeps the index complete whatever fails or
crashes in between:

* the new entry is written **before** the record that names the user (a login costs that one
  extra write; a failure to write it fails the save, so no record names a user without an
  entry);
* the old entry is removed **after** the record stopped naming the user (a failure there
  leaves a stale entry, which is harmless).

An entry is only ever a candidate. Listing and revocation open each candidate's record
under its session lock, through the normal path, and believe only the user key inside the
verified record: a stale entry (its record gone, expired, or naming someone else) is never
listed and never revoked, and the sweep removes it once it is older than
:func:`index_grace` (younger ones may be ahead of their record). Revocation deletes the
record under its lock through the normal delete path, so the revoked session is dead at
once: its next request, even one already waiting for the lock, finds no session and starts
a fresh, empty one.

With the setting off (the default), nothing here runs: the request path is unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, request
from flask import session as flask_session

from . import _core
from ._log import log_id, logger
from .codec import PayloadError, decode
from .errors import LockTimeoutError
from .stored import Loaded, Outcome, StoredSession, decode_or_remove

if TYPE_CHECKING:
    from .store import AppState

__all__ = [
    "IndexedStoredSession",
    "MetadataHook",
    "UserSession",
    "index_grace",
    "list_sessions",
    "revoke",
    "revoke_all",
    "user_id",
]

#: Outcomes after which the session is stored under its id.
_STORED = (Outcome.CREATED, Outcome.SAVED, Outcome.TOUCHED, Outcome.UNCHANGED)
_SAVED, _UNCHANGED, _TOUCHED = Outcome.SAVED, Outcome.UNCHANGED, Outcome.TOUCHED
#: ``IndexedStoredSession.indexed`` before it is first needed.
_PENDING: Any = object()
#: Longest user agent kept in the metadata (characters).
_MAX_AGENT = 256
#: The store's bound on an entry's metadata (bytes).
_MAX_META = 4096

#: An application's metadata function: given the session's data at login, the extra
#: ``str`` fields to keep in the index entry (e.g. an OpenID Connect ``sid``).
MetadataHook = Callable[[Mapping[str, Any]], Mapping[str, str]]


def user_id(value: Any) -> str | None:
    """The index's name for a user key value: ``str(value)``; None (no user) for None or an
    empty string. Flask-Login stores ``str(user.get_id())``, so ``5`` and ``"5"`` are the
    same user."""
    if value is None:
        return None
    text = str(value)
    return text or None


def _key(state: AppState) -> str:
    """The app's ``SESSION_USER_KEY`` (this module runs only when it is set)."""
    key = state.config.user_key
    assert key is not None
    return key


def index_grace(lock_timeout: float) -> float:
    """Seconds an index entry whose record is missing is kept by the sweep: its record may
    still be on its way (the entry is written first). A minute beyond the lock timeout."""
    return 60.0 + lock_timeout


@dataclass(frozen=True)
class UserSession:
    """One live session of a user, as :meth:`Session.user_sessions
    <flask_beaker_session.session.Session.user_sessions>` lists it."""

    #: Non-secret name of the session (keyed hash of its id; never the id): pass it to
    #: :meth:`~flask_beaker_session.session.Session.revoke_session`.
    handle: str
    #: Creation time (epoch seconds), or None when unknown (a legacy session).
    created: float | None
    #: Time of its last request that wrote or refreshed it (epoch seconds), or None.
    last_access: float | None
    #: When it expires if unused (idle timeout, capped by the absolute lifetime), or None.
    expires: float | None
    #: What was recorded at login: ``user_agent`` and ``ip`` with
    #: ``SESSION_USER_METADATA``, and the application's fields (:meth:`user_metadata
    #: <flask_beaker_session.session.Session.user_metadata>`).
    metadata: dict[str, str] = field(default_factory=dict)
    #: Whether this is the session of the current request.
    current: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``sessions --json``)."""
        return {
            "handle": self.handle,
            "created": self.created,
            "last_access": self.last_access,
            "expires": self.expires,
            "metadata": dict(self.metadata),
            "current": self.current,
        }


def _metadata(state: AppState, data: Mapping[str, Any]) -> bytes:
    """The JSON metadata of an entry written now (at most the store's bound)."""
    meta: dict[str, str] = {}
    if state.config.user_metadata and has_request_context():
        meta["user_agent"] = (request.headers.get("User-Agent") or "")[:_MAX_AGENT]
        meta["ip"] = request.remote_addr or ""
    hook = _hook()
    if hook is not None:
        meta.update((str(k), str(v)) for k, v in hook(data).items())
    encoded = json.dumps(meta, separators=(",", ":")).encode()
    if len(encoded) > _MAX_META:
        # Never fail a login over metadata: keep what fits.
        logger.warning("session index metadata is over %d bytes; dropped", _MAX_META)
        return b"{}"
    return encoded


def _hook() -> MetadataHook | None:
    ext = current_app.extensions.get("flask_beaker_session")
    hook: MetadataHook | None = getattr(ext, "metadata_hook", None)
    return hook


class IndexedStoredSession(StoredSession):
    """:class:`~flask_beaker_session.stored.StoredSession` keeping the per-user index."""

    #: ``(user, id)`` the index holds for this session's record (None: none); worked out
    #: from the loaded user's value when first needed (:meth:`_entry`).
    indexed: Any = _PENDING
    #: The user key's value as loaded (None: none), compared by identity at persist: the
    #: usual request leaves it alone, and then the index has nothing to do.
    _loaded_user: Any = None

    def load(self, now: float) -> Loaded | None:
        loaded = StoredSession.load(self, now)
        if loaded is not None:
            self._loaded_user = loaded[0].get(self.app.user_key)
        return loaded

    def _entry(self) -> tuple[str, str] | None:
        """What the index holds for this session's record as loaded, or as last saved."""
        indexed = self.indexed
        if indexed is _PENDING:
            # A loaded record is named by the cookie value it was opened with.
            user = user_id(self._loaded_user)
            sid = self.cookie_value
            indexed = self.indexed = None if user is None or sid is None else (user, sid)
        return indexed  # type: ignore[no-any-return]

    def persist(self, data: dict[str, Any], modified: bool, created: Any, now: float) -> Outcome:
        raw = data.get(self.app.user_key)
        if (
            raw is self._loaded_user
            # (the id is the cookie's only while the session is the one loaded from it)
            and self.id is self.cookie_value
            and (type(raw) is str or raw is None or type(raw) is int)
        ):
            # The same user (an immutable value: it cannot have changed in place) under
            # the same id as loaded: the entry (or its absence) is right before the save.
            outcome = StoredSession.persist(self, data, modified, created, now)
            if outcome is _SAVED or outcome is _UNCHANGED or outcome is _TOUCHED:
                return outcome
            self._reindexed(None)
            return outcome
        store = self.app.store
        user = user_id(data.get(self.app.user_key))
        sid = self.id
        target = (user, sid) if user is not None and sid is not None else None
        if target is not None and (data or self.keep) and target != self._entry():
            # Before the record: a crash after this leaves a stale entry, never a record
            # naming the user without one. A failure here fails the save (nothing written).
            store.index_put(target[0], target[1], _metadata(self.app, data), now)
        outcome = super().persist(data, modified, created, now)
        self._reindexed(target if outcome in _STORED else None)
        return outcome

    def _reindexed(self, now_indexed: tuple[str, str] | None) -> None:
        """Records what the index holds for this session after a save, and removes the
        entry it held before if that is no longer it."""
        old = self._entry()
        self.indexed = now_indexed
        if old is not None and old != now_indexed:
            # After the record: a failure leaves a stale entry, filtered by every reader.
            try:
                self.app.store.index_remove(*old)
            except Exception as exc:  # the save itself succeeded
                self.app.once.log(
                    "index-remove",
                    logging.WARNING,
                    "session %s: its old per-user index entry could not be removed (%s); "
                    "readers ignore it, and a sweep removes it once the session is gone",
                    log_id(old[1]),
                    exc,
                )


def _current(state: AppState) -> tuple[Any, str | None]:
    """The current request's session of this app and the id it holds locked (None: no
    request, or no lock held: then its record can be opened like any other)."""
    if not has_request_context():
        return None, None
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    stored = getattr(session, "_stored", None)
    if not getattr(session, "loaded", False) or not isinstance(stored, StoredSession):
        return session, None
    if stored.app is not state:
        return None, None
    return session, stored.stored_id


def _expires(state: AppState, created: float | None, last: float | None) -> float | None:
    limits = []
    if state.config.timeout is not None and last is not None:
        limits.append(last + state.config.timeout)
    if state.config.absolute_timeout is not None and created is not None:
        limits.append(created + state.config.absolute_timeout)
    return min(limits) if limits else None


def _meta(raw: bytes) -> dict[str, str]:
    try:
        meta = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def list_sessions(state: AppState, user: Any, now: float) -> list[UserSession]:
    """The live sessions of ``user``, oldest first. Each candidate is opened under its lock
    (waiting, as a request would, for one in use) and listed only if its record names
    ``user``; the current request's session (whose lock this request holds) is answered
    from memory."""
    name = user_id(user)
    if name is None:
        return []
    store = state.store
    key = _key(state)
    session, current_sid = _current(state)
    out: list[UserSession] = []
    for sid, _, raw in store.index_list(name):
        if sid == current_sid:
            if user_id(dict.get(session, key)) != name:
                continue
            created = session._created if isinstance(session._created, float) else None
            last = session._stored.last_access
            current = True
        else:
            try:
                _, handle = store.open(sid, now)
            except LockTimeoutError:
                logger.info("session %s is busy: left out of the listing", log_id(sid))
                continue
            if handle is None:
                continue  # gone or expired: a stale entry
            try:
                try:
                    decoded = decode(
                        handle.kind, handle.payload, handle.created, handle.last_access
                    )
                except PayloadError:
                    continue
                if user_id(decoded.data.get(key)) != name:
                    continue
                created, last = decoded.created, decoded.last_access
            finally:
                handle.release()
            current = False
        out.append(
            UserSession(
                handle=store.handle_of(sid),
                created=created,
                last_access=last,
                expires=_expires(state, created, last),
                metadata=_meta(raw),
                current=current,
            )
        )
    out.sort(key=lambda s: (s.created or 0.0, s.handle))
    return out


def _revoke_sid(state: AppState, name: str, sid: str, now: float) -> bool:
    """Deletes session ``sid`` if its record (read under its lock) names ``name``."""
    store = state.store
    session, current_sid = _current(state)
    if sid == current_sid:
        if user_id(dict.get(session, _key(state))) != name:
            return False
        session.delete()  # removes the record now, under the lock this request holds
    else:
        _, handle = store.open(sid, now)
        if handle is None:
            return False  # gone already (or its entry is ahead of its record: left alone)
        try:
            decoded = decode_or_remove(handle, store, now, state.once)
            if decoded is None:
                return False  # unreadable: removed, so dead all the same
            if user_id(decoded.data.get(_key(state))) != name:
                return False  # a stale entry: the session belongs to someone else now
            handle.delete()
        finally:
            handle.release()
    try:
        store.index_remove(name, sid)
    except Exception as exc:  # the session is dead; the stale entry is ignored
        logger.warning("session %s: index entry not removed (%s)", log_id(sid), exc)
    return True


def revoke(state: AppState, user: Any, handle: str, now: float) -> bool:
    """Revokes ``user``'s session named by ``handle``; False if there is none."""
    name = user_id(user)
    if name is None:
        return False
    store = state.store
    for sid, _, _ in store.index_list(name):
        if store.handle_of(sid) == handle:
            return _revoke_sid(state, name, sid, now)
    return False


def revoke_all(
    state: AppState,
    user: Any,
    now: float,
    *,
    except_current: bool = False,
    except_handle: str | None = None,
) -> int:
    """Revokes every session of ``user`` but the current request's (``except_current``) and
    the one named ``except_handle``; returns how many were revoked."""
    name = user_id(user)
    if name is None:
        return 0
    store = state.store
    _, current_sid = _current(state)
    revoked = 0
    for sid, _, _ in store.index_list(name):
        if except_current and sid == current_sid:
            continue
        if except_handle is not None and store.handle_of(sid) == except_handle:
            continue
        revoked += _revoke_sid(state, name, sid, now)
    return revoked


def sweep_index(state: AppState, now: float, grace: float | None = None) -> int:
    """Removes stale entries (record gone for longer than the grace); how many went."""
    if grace is None:
        grace = index_grace(state.config.lock_timeout)
    return store_sweep(state.store, now, grace)


def store_sweep(store: _core.Store, now: float, grace: float) -> int:
    """:meth:`_core.Store.index_sweep` (kept apart for the CLI's fresh store)."""
    return store.index_sweep(now, grace)
