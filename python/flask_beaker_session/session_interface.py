"""The Flask side: the session object and the :class:`~flask.sessions.SessionInterface`.

Life of a session in one request:

1. ``open_session`` returns a :class:`BeakerSession` without any I/O (SPEC §5: a view that
   never touches the session costs no syscall, even when the request carries a cookie).
2. The first real use of the mapping loads it: the Rust core validates the cookie value,
   takes the per-session lock (waiting with the GIL released), reads and verifies the record.
   Anything unusable — malformed, unknown, expired, corrupt — gives an empty session under a
   fresh server-made id; a client-chosen id is never adopted.
3. ``save_session`` pickles the user keys and compares them with what was loaded: unchanged
   data is not rewritten (at most the record's mtime is refreshed, rate-limited), changed data
   is saved in place, a new session that holds data is created, an emptied one is deleted.
   Then the lock is released. Teardown releases it too, for requests that never get to
   ``save_session`` (an exception with ``PROPAGATE_EXCEPTIONS``).

Responses with a 5xx status do not save the request's changes (as Django): a request that
failed half-way must not commit half its work. Explicit ``delete()`` / ``invalidate()`` take
effect at once, whatever the response.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context
from flask.sessions import SessionInterface, SessionMixin

from . import _core
from ._log import CORRUPT, LEGACY, LOCK_TIMEOUT, NEWER, PROCESS, Once, logger
from .config import COOKIE_NAME, PERSISTENT_COOKIE_SECONDS, SessionConfig
from .errors import ConfigurationError, LockTimeoutError, StoreUnavailableError
from .sweeper import AutoSweeper

if TYPE_CHECKING:
    from flask import Flask, Request, Response

#: Keys the original package shows in every session; kept visible, stored in the header.
TIME_KEYS = ("_creation_time", "_accessed_time")
_TIME_KEY_SET = frozenset(TIME_KEYS)
#: Keys Beaker >= 1.11 added to stored sessions; dropped when a legacy session is read.
_BEAKER_INTERNAL = ("_domain", "_path")
#: Key under which the request environ lists the sessions opened for it (for teardown).
_ENVIRON_KEY = "flask_beaker_session.sessions"

if hasattr(os, "register_at_fork"):
    # Threads that held in-process session locks do not exist in a forked child.
    os.register_at_fork(after_in_child=_core.reset_after_fork)


def _hashed(sid: str) -> str:
    """A short digest of an id for log lines: ids are bearer secrets (OWASP)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def make_store(config: SessionConfig) -> _core.Store:
    """Builds the native store for a configuration (no I/O, no connection)."""
    if config.type == "memory":
        return _core.Store.memory(config.timeout, config.absolute_timeout, config.lock_timeout)
    if config.type == "redis":
        try:
            return _core.Store.redis(
                config.redis_url,
                config.redis_prefix,
                list(config.secret_keys),
                config.timeout,
                config.absolute_timeout,
                config.lock_timeout,
                config.redis_connect_timeout,
                config.redis_timeout,
                config.redis_lock_ttl,
                config.redis_tls_ca_certs,
                config.redis_tls_client,
            )
        except ConfigurationError as exc:
            # The core refuses a malformed URL, or TLS material it cannot parse (the files
            # were already checked to hold PEM blocks of the right kind).
            keys = "SESSION_REDIS_URL"
            if config.redis_tls_ca_certs or config.redis_tls_client:
                keys += " or SESSION_REDIS_TLS_*"
            raise ConfigurationError(f"{keys} is invalid: {exc}") from None
    return _core.Store(
        str(config.data_dir),
        list(config.secret_keys),
        config.timeout,
        config.absolute_timeout,
        config.lock_timeout,
        config.read_legacy,
    )


class _Backend:
    """Per-application state shared by the interface and its sessions."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.store = make_store(config)
        #: Recurring problems of this app's sessions are logged once each (then at DEBUG).
        self.once = Once()
        # Read-only requests refresh the last-access time at most this often, so the
        # sliding timeout is exact to within a tenth of itself (and one minute).
        self.touch_interval = min(config.timeout / 10, 60.0) if config.timeout else None


def _pickle_user_data(data: dict[str, Any]) -> bytes:
    try:
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        for key, value in data.items():
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as inner:
                raise TypeError(
                    f"session value for key {key!r} cannot be pickled "
                    f"({type(value).__name__}: {inner}); the stored session is unchanged"
                ) from inner
        raise TypeError(f"session cannot be pickled: {exc}") from exc


def decode_record(
    handle: _core.Handle,
    config: SessionConfig,
    now: float,
    raw: bytes | None = None,
    once: Once = PROCESS,
) -> tuple[dict[str, Any], float | None, float | None] | None:
    """Unpickles an opened record into ``(user data, created, last access)``.

    Legacy Beaker sessions carry their times inside the pickle: they are taken out, Beaker's
    ``_domain``/``_path`` dropped, and the idle timeout applied here when the core could not
    read the times itself. Returns None, after removing the record, when the data cannot be
    used (it cannot be unpickled — e.g. its class is gone — or it expired): a stored value
    that cannot be loaded must never lock its user out.
    """
    try:
        data = pickle.loads(handle.payload if raw is None else raw)
        if handle.legacy == 2:
            data = data["session"]
        if not isinstance(data, dict):
            raise TypeError(f"stored session is a {type(data).__name__}")
    except Exception as exc:
        once.log(
            CORRUPT,
            logging.WARNING,
            "session %s: stored data cannot be loaded (%s: %s); removed, a new session was started",
            _hashed(handle.id),
            type(exc).__name__,
            exc,
        )
        handle.delete()
        return None
    created = handle.created
    last = handle.last_access
    if handle.legacy:
        created = data.pop("_creation_time", created)
        last = data.pop("_accessed_time", last)
        for key in _BEAKER_INTERNAL:
            data.pop(key, None)
        idle = config.timeout or float("inf")
        lifetime = config.absolute_timeout or float("inf")
        stale = (isinstance(last, (int, float)) and now - last > idle) or (
            isinstance(created, (int, float)) and now - created > lifetime
        )
        if stale:
            handle.delete()
            return None
    else:
        for key in TIME_KEYS:
            data.pop(key, None)
    created = float(created) if isinstance(created, (int, float)) else None
    last = float(last) if isinstance(last, (int, float)) else None
    return data, created, last


#: Types whose values cannot change in place: a session holding only these (directly, or in
#: tuples / frozensets of them) and never assigned to cannot have changed.
_IMMUTABLE = frozenset({str, bytes, int, float, bool, complex, type(None)})


def _unchanged(session: BeakerSession, user: dict[str, Any]) -> bytes | None:
    """The loaded payload if the data provably did not change in this request, else None.

    Change detection normally pickles the data and compares it with what was loaded, which
    is what makes in-place mutation of stored lists and dicts persist. That costs a full
    pickle (milliseconds for a 1 MB session) on every request; when no mutating method was
    called and every value is immutable, nothing can have changed and the pickle is skipped.
    """
    if session.modified or session._loaded_payload is None:
        return None
    for value in user.values():
        kind = type(value)
        if kind in _IMMUTABLE:
            continue
        if (kind is tuple or kind is frozenset) and all(type(v) in _IMMUTABLE for v in value):
            continue
        return None
    return session._loaded_payload


def _same(a: Any, b: Any) -> bool:
    try:
        return pickle.dumps(a, pickle.HIGHEST_PROTOCOL) == pickle.dumps(b, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False


def _merge(
    stored: dict[str, Any], baseline: dict[str, Any], mine: dict[str, Any]
) -> dict[str, Any]:
    """Three-way merge at key granularity: ``stored`` (now), ``baseline`` (what this request
    loaded) and ``mine`` (what it ends with). Keys this request added, changed (compared
    pickled, so in-place mutation counts) or removed are applied to ``stored``; the others
    keep whatever concurrent requests stored."""
    merged = dict(stored)
    for key in baseline.keys() | mine.keys():
        if key not in mine:
            merged.pop(key, None)
        elif key not in baseline or not _same(mine[key], baseline[key]):
            merged[key] = mine[key]
    return merged


class BeakerSession(dict, SessionMixin):  # type: ignore[type-arg]
    """The object behind :data:`flask.session`: a dict that loads itself on first use.

    Beyond the mapping it offers the Beaker methods users of the original call: :attr:`id`,
    :attr:`is_new`, :attr:`created`, :attr:`last_accessed`, :meth:`delete`,
    :meth:`invalidate`, :meth:`regenerate_id`, :meth:`save` and :meth:`revert`.
    In-place changes of stored values (``session['cart'].append(x)``) are saved without
    ``session.modified = True``, because saving compares the pickled data with what was
    loaded.
    """

    def __init__(self, backend: _Backend, cookie_value: str | None) -> None:
        super().__init__()
        self._backend = backend
        self._cookie_value = cookie_value
        self._loaded = False
        #: The open, locked record (locking mode) from load until save.
        self._handle: _core.Handle | None = None
        #: Id of the stored record this session was loaded from (both modes; None if new).
        self._stored_sid: str | None = None
        #: Records to remove once the session is stored under its new id.
        self._retired: list[_core.Handle] = []
        self._retired_ids: list[str] = []
        self._sid: str | None = None
        self._is_new = True
        self._loaded_payload: bytes | None = None
        #: The data as loaded (pickled), for revert(); unlike ``_loaded_payload`` it
        #: survives regenerate_id() and is set for legacy sessions too.
        self._revert_payload: bytes | None = None
        self._last_accessed: float | None = None
        #: Flask's flags: ``modified`` is set by any mutating method; ``accessed`` by Flask
        #: whenever the :data:`flask.session` proxy is used.
        self.modified = False
        self.accessed = False
        #: Set once ``save_session`` has run: a first use after that (inside a streamed
        #: response body) reads the session without keeping its lock, as nothing more will
        #: be saved and the lock must not be held while the body streams.
        self._finished = False

    # -- loading ---------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        # Flask >= 3.1 sets ``accessed`` whenever the proxy is used; older Flask leaves
        # that to the session class (as its SecureCookieSession does on reads).
        self.accessed = True
        now = time.time()
        value = self._cookie_value
        if value is not None:
            handle, status = self._backend.store.open(value, now)
            if handle is not None:
                if self._adopt(handle, now):
                    return
            elif status == _core.OPEN_CORRUPT:
                self._backend.once.log(
                    CORRUPT,
                    logging.WARNING,
                    "session %s: corrupt or unauthenticated record removed; a new "
                    "session was started",
                    _hashed(value),
                )
            elif status == _core.OPEN_NEWER:
                self._backend.once.log(
                    NEWER,
                    logging.WARNING,
                    "session %s: record written by a newer version of "
                    "flask-beaker-session; a new session was started",
                    _hashed(value),
                )
        self._start_fresh(now)

    def _adopt(self, handle: _core.Handle, now: float) -> bool:
        """Fills the dict from an opened record; False if it could not be used."""
        raw = handle.payload
        legacy = handle.legacy
        data: Any = None
        if not legacy:
            # The common case, kept short: it runs on every request that uses a session.
            try:
                data = pickle.loads(raw)
            except Exception:
                data = None
        if type(data) is dict and not (data.keys() & _TIME_KEY_SET):
            created, last = handle.created, handle.last_access
        else:
            decoded = decode_record(handle, self._backend.config, now, raw, self._backend.once)
            if decoded is None:
                return False
            data, created, last = decoded
        if legacy:
            self._backend.once.log(
                LEGACY,
                logging.INFO,
                "session %s: migrating a session stored by the original package (Beaker) "
                "to this package's format",
                _hashed(handle.id),
            )
        # Time keys first, as in a fresh session (and the original package), so that
        # iteration order and popitem() do not change from one request to the next.
        dict.__setitem__(self, "_creation_time", created if created else now)
        dict.__setitem__(self, "_accessed_time", now)
        dict.update(self, data)
        self._sid = self._stored_sid = handle.id
        self._is_new = False
        if self._backend.config.locking and not self._finished:
            self._handle = handle
        else:
            # Non-locking mode: the lock is held only while reading; changes are merged
            # into the stored data at save time (see BeakerSessionInterface._merge_save).
            handle.release()
        self._last_accessed = last
        # Legacy sessions are rewritten in our format by the first save.
        self._loaded_payload = None if legacy else raw
        self._revert_payload = raw
        if legacy:
            try:
                self._revert_payload = pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
            except Exception:  # the first save reports it, naming the key
                self._revert_payload = None
        return True

    def _start_fresh(self, now: float) -> None:
        self._sid = self._backend.store.new_id()
        self._stored_sid = None
        self._is_new = True
        self._last_accessed = None
        self._loaded_payload = None
        self._revert_payload = None
        dict.__setitem__(self, "_creation_time", now)
        dict.__setitem__(self, "_accessed_time", now)

    def _release(self) -> None:
        for handle in [self._handle, *self._retired]:
            if handle is not None:
                handle.release()
        self._handle = None
        self._retired = []
        self._retired_ids = []

    def _user_data(self) -> dict[str, Any]:
        return {k: v for k, v in dict.items(self) if k not in TIME_KEYS}

    # -- Beaker API ------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The 32-hex session id (a new session gets its id on first use)."""
        self._load()
        assert self._sid is not None
        return self._sid

    @property
    def is_new(self) -> bool:
        """Whether no stored session was found for this request's cookie."""
        self._load()
        return self._is_new

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Flask's name for :attr:`is_new`."""
        return self.is_new

    @property
    def created(self) -> float:
        """Creation time (epoch seconds) of the session."""
        self._load()
        return float(dict.get(self, "_creation_time", 0.0))

    @property
    def last_accessed(self) -> float | None:
        """Time of the previous request that used the session; None for a new one."""
        self._load()
        return self._last_accessed

    def delete(self) -> None:
        """Removes all data and the stored record now, and expires the cookie.

        The old id is dead: replaying it gives an empty session. Keys set afterwards in the
        same request start a new session under a new id.
        """
        self._load()
        if self._handle is not None:
            self._handle.delete()
            self._handle = None
        elif self._stored_sid is not None:
            handle, _ = self._backend.store.open(self._stored_sid, time.time())
            if handle is not None:
                handle.delete()
        dict.clear(self)
        self._start_fresh(time.time())
        self.modified = True

    def invalidate(self) -> None:
        """Clears the data and moves to a new id; the old record is removed."""
        self.delete()

    def regenerate_id(self) -> None:
        """Keeps the data under a new id (session-fixation defence, e.g. at login).

        The old record is removed when the new one has been stored.
        """
        self._load()
        if self._handle is not None:
            self._retired.append(self._handle)
            self._handle = None
        elif self._stored_sid is not None:
            self._retired_ids.append(self._stored_sid)
        self._stored_sid = None
        self._sid = self._backend.store.new_id()
        self._is_new = True
        self._loaded_payload = None
        self.modified = True

    def save(self) -> None:
        """Kept for compatibility: sessions are saved at the end of the request."""

    def revert(self) -> None:
        """Restores the data as it was loaded at the start of this request."""
        self._load()
        times = {k: dict.get(self, k) for k in TIME_KEYS}
        dict.clear(self)
        dict.update(self, {k: v for k, v in times.items() if v is not None})
        if self._revert_payload is not None:
            dict.update(self, pickle.loads(self._revert_payload))
        self.modified = True

    # -- mapping: every access loads first --------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._load()
        return dict.__getitem__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        dict.__setitem__(self, key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        self._load()
        dict.__delitem__(self, key)
        self.modified = True

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._load()
        return dict.__reversed__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        self._load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._load()
        return dict.__ne__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._load()
        return f"<{type(self).__name__} {dict.__repr__(self)}>"

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._load()
        return dict(dict.items(self)) | dict(other)

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._load()
        return dict(other) | dict(dict.items(self))

    def __ior__(self, other: Any) -> BeakerSession:
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        # Pickling the session object itself gives a plain dict (no store, no lock).
        self._load()
        return (dict, (dict(dict.items(self)),))

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._load()
        return dict.values(self)

    def items(self) -> Any:
        self._load()
        return dict.items(self)

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> dict[Any, Any]:
        """A plain ``dict``: a session object only exists inside a request."""
        return dict.fromkeys(iterable, value)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data."""
        self._load()
        return dict(dict.items(self))

    def clear(self) -> None:
        self._load()
        dict.clear(self)
        self.modified = True

    def pop(self, key: str, *default: Any) -> Any:
        self._load()
        self.modified = True
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._load()
        self.modified = True
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._load()
        self.modified = True
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._load()
        self.modified = True
        dict.update(self, *args, **kwargs)


_RETRY = {"Retry-After": "1", "Content-Type": "text/plain; charset=utf-8"}


def _once() -> Once:
    """The current app's :class:`Once` (the process-wide one outside an app)."""
    if has_app_context():
        interface = current_app.session_interface
        if isinstance(interface, BeakerSessionInterface):
            return interface._backend.once
    return PROCESS


def _lock_timeout_response(error: LockTimeoutError) -> tuple[str, int, dict[str, str]]:
    _once().log(LOCK_TIMEOUT, logging.WARNING, "session lock timeout: %s", error)
    return ("The session is busy with another request; please retry.", 503, _RETRY)


def _unavailable_response(
    error: StoreUnavailableError,
) -> tuple[str, int, dict[str, str]]:
    # Internals (addresses, errors) go to the log, never to the client.
    logger.error("session store unavailable: %s", error)
    return ("The session store is unavailable; please retry.", 503, _RETRY)


class BeakerSessionInterface(SessionInterface):
    """Stores sessions server-side through the Rust core; the cookie holds only the id."""

    #: Sessions are ``BeakerSession`` objects.
    session_class = BeakerSession

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._backend = _Backend(config)
        #: The automatic sweeper (``SESSION_SWEEP_INTERVAL``), or None.
        self.sweeper = (
            AutoSweeper(self._backend.store, config.sweep_interval)
            if config.sweep_interval
            else None
        )

    @property
    def store(self) -> _core.Store:
        """The native store (for tools and tests)."""
        return self._backend.store

    def open_session(self, app: Flask, request: Request) -> BeakerSession:
        # No I/O here: the session loads itself on first use.
        if self.sweeper is not None:
            self.sweeper.ensure_started()
        environ = request.environ
        session = BeakerSession(self._backend, _cookie_value(environ.get("HTTP_COOKIE")))
        environ.setdefault(_ENVIRON_KEY, []).append(session)
        return session

    def is_null_session(self, obj: object) -> bool:
        return not isinstance(obj, BeakerSession)

    def _cookie_kwargs(self, app: Flask) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app) or "Lax",
        }
        partitioned = getattr(self, "get_cookie_partitioned", None)
        if partitioned is not None and partitioned(app):
            kwargs["partitioned"] = True
        return kwargs

    def _expires(self, app: Flask, session: BeakerSession, now: float) -> datetime | None:
        if session.permanent:
            return datetime.fromtimestamp(now, timezone.utc) + app.permanent_session_lifetime
        expires = self.config.expires
        if expires is True:
            return None
        if expires is False:
            return datetime.fromtimestamp(now + PERSISTENT_COOKIE_SECONDS, timezone.utc)
        return datetime.fromtimestamp(session.created + expires, timezone.utc)

    def _refreshes(self, app: Flask, session: BeakerSession) -> bool:
        """Whether a persistent cookie is re-sent when its session is written/touched."""
        return (self.config.expires is False or session.permanent) and bool(
            app.config.get("SESSION_REFRESH_EACH_REQUEST", True)
        )

    def _set_cookie(
        self, app: Flask, session: BeakerSession, response: Response, now: float
    ) -> None:
        assert session._sid is not None
        response.set_cookie(
            COOKIE_NAME,
            session._sid,
            expires=self._expires(app, session, now),
            **self._cookie_kwargs(app),
        )

    def _delete_cookie(self, app: Flask, session: BeakerSession, response: Response) -> None:
        if session._cookie_value is not None:
            response.delete_cookie(COOKIE_NAME, **self._cookie_kwargs(app))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, BeakerSession):
            return
        try:
            if session.accessed or session._loaded:
                _vary_cookie(response)
            if not session._loaded:
                return
            if response.status_code >= 500:
                return
            try:
                self._commit(app, session, response)
            except (StoreUnavailableError, LockTimeoutError) as exc:
                # Flask's error handlers do not run for errors raised here, so the response
                # is turned into the same 503 they would give.
                if isinstance(exc, LockTimeoutError):
                    body, status, headers = _lock_timeout_response(exc)
                else:
                    body, status, headers = _unavailable_response(exc)
                response.set_data(body)
                response.status_code = status
                response.headers.update(headers)
                response.headers.pop("Set-Cookie", None)
        finally:
            session._finished = True
            session._release()

    def _commit(self, app: Flask, session: BeakerSession, response: Response) -> None:
        now = time.time()
        user = session._user_data()
        handle = session._handle
        if handle is None and session._stored_sid is not None:
            self._merge_save(app, session, response, user, now)
            return
        if handle is not None:
            if not user:
                handle.delete()
                session._handle = None
                self._delete_cookie(app, session, response)
                return
            payload = _unchanged(session, user) or _pickle_user_data(user)
            # Save or touch, and release the lock in the same native call. If that fails the
            # handle keeps its lock, and save_session's `finally` releases it.
            if payload != session._loaded_payload:
                handle.save(payload, now, dict.get(session, "_creation_time"), True)
                session._loaded_payload = payload
                wrote = True
            else:
                interval = self._backend.touch_interval
                if interval is None:
                    handle.release()
                    wrote = False
                else:
                    wrote = handle.touch(now, interval, True)
            session._handle = None
            if wrote and self._refreshes(app, session):
                self._set_cookie(app, session, response, now)
            return
        if not user:
            self._retire(session, now)
            self._delete_cookie(app, session, response)
            return
        payload = _pickle_user_data(user)
        assert session._sid is not None
        self._backend.store.create(session._sid, payload, session.created, now)
        self._retire(session, now)
        session._loaded_payload = payload
        self._set_cookie(app, session, response, now)

    def _retire(self, session: BeakerSession, now: float) -> None:
        """Removes the records a regenerate_id() left behind (after the new one exists)."""
        for old in session._retired:
            old.delete()
        session._retired = []
        for sid in session._retired_ids:
            handle, _ = self._backend.store.open(sid, now)
            if handle is not None:
                handle.delete()
        session._retired_ids = []

    def _merge_save(
        self,
        app: Flask,
        session: BeakerSession,
        response: Response,
        user: dict[str, Any],
        now: float,
    ) -> None:
        """Non-locking mode: applies the keys this request changed to the data stored now.

        Keys changed by concurrent requests of the same session survive; for a key changed
        by both, the last save wins. A session deleted meanwhile (logout in another tab) is
        not resurrected.
        """
        store = self._backend.store
        sid = session._stored_sid
        assert sid is not None
        payload = (_unchanged(session, user) or _pickle_user_data(user)) if user else b""
        if user and payload == session._loaded_payload:
            interval = self._backend.touch_interval
            last = session._last_accessed
            if interval is not None and (last is None or now - last >= interval):
                handle, _ = store.open(sid, now)
                if handle is not None:
                    try:
                        if handle.touch(now, interval) and self._refreshes(app, session):
                            self._set_cookie(app, session, response, now)
                    finally:
                        handle.release()
            return
        baseline: dict[str, Any] = (
            pickle.loads(session._loaded_payload) if session._loaded_payload else {}
        )
        handle, _ = store.open(sid, now)
        if handle is None:
            self._delete_cookie(app, session, response)
            return
        try:
            decoded = decode_record(handle, self.config, now, once=self._backend.once)
            if decoded is None:
                self._delete_cookie(app, session, response)
                return
            merged = _merge(decoded[0], baseline, user)
            if not merged:
                handle.delete()
                self._delete_cookie(app, session, response)
                return
            merged_payload = _pickle_user_data(merged)
            handle.save(merged_payload, now, session.created)
            session._loaded_payload = merged_payload
            if self._refreshes(app, session):
                self._set_cookie(app, session, response, now)
        finally:
            handle.release()


def _cookie_value(header: str | None) -> str | None:
    """The first ``beaker.session.id`` value of a Cookie header (as Werkzeug picks it).

    Parsing the whole header into ``request.cookies`` costs more than the rest of a
    session's request put together; we need one cookie, whose only acceptable values are
    32 lowercase hex characters (anything else is rejected by the core before any I/O, so
    unusual quoting or encoding can only make a value invalid, never select a session).
    """
    if not header or COOKIE_NAME not in header:
        return None
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip() == COOKIE_NAME:
            return value.strip().strip('"')
    return None


def _vary_cookie(response: Response) -> None:
    """Adds ``Cookie`` to the Vary header (cheaper than building ``response.vary``)."""
    headers = response.headers
    vary = headers.get("Vary")
    if not vary:
        headers["Vary"] = "Cookie"
    elif "cookie" not in (v.strip().lower() for v in vary.split(",")):
        headers["Vary"] = f"{vary}, Cookie"


def release_request_sessions(environ: dict[str, Any]) -> None:
    """Releases every session lock taken for a request (called at teardown)."""
    sessions: Iterable[BeakerSession] = environ.pop(_ENVIRON_KEY, ())
    for session in sessions:
        session._release()
