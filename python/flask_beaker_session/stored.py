"""The stored side of one request's session: what the store holds, and the lock on it.

A :class:`StoredSession` is created, without I/O, for every request. Its :meth:`load`
runs at the session's first real use: the core validates the cookie value, takes the
per-session lock (waiting with the GIL released), reads and verifies the record. Anything
unusable — malformed, unknown, expired, corrupt, newer, undecodable — gives a fresh
server-made id; a client-chosen id is never adopted.

At the end of the request :meth:`persist` stores what the session holds and says what it
did as an :class:`Outcome`, the one input of the cookie decision:

* unchanged data is not rewritten (the core at most refreshes the last access, at its
  touch interval), changed data is saved in place, a new session that holds data is
  created, an emptied one is deleted, then the lock is released;
* a session whose identity was read (:attr:`StoredSession.keep`: its id or creation time,
  in this request or, for a stored session without data, an earlier one) is stored even
  without data, so that an id a view has seen survives;
* in non-locking mode (``SESSION_LOCKING = False``) no lock was kept after loading: the
  keys this request changed are merged into the data stored *now* (:func:`merge`).
"""

from __future__ import annotations

import enum
import logging
import pickle
from time import perf_counter
from typing import Any, Optional

from . import _core
from ._log import CORRUPT, LEGACY, NEWER, PROCESS, UNAUTHENTICATED, Once, log_id
from .codec import (
    TIME_KEYS,
    Decoded,
    PayloadError,
    decode,
    loads,
    same,
    seconds,
    unchanged,
)
from .large import UNREAD, LargeUnreadable, LoadedLarge, encode_parts, reuses_all
from .metrics import Metrics
from .store import AppState

__all__ = ["Loaded", "Outcome", "StoredSession", "decode_or_remove", "merge"]

_CORRUPT = _core.OpenStatus.Corrupt
_UNAUTHENTICATED = _core.OpenStatus.Unauthenticated
_NEWER = _core.OpenStatus.Newer
_RECORD = _core.PayloadKind.Record
_UNTRUSTED = _core.OpenStatus.Untrusted
_TIME_KEY_SET = frozenset(TIME_KEYS)
_CREATED_KEY, _ACCESSED_KEY = TIME_KEYS
_loads = pickle.loads


class Outcome(enum.Enum):
    """What :meth:`StoredSession.persist` did; the cookie follows from it."""

    #: Stored for the first time, under a new id: the client needs the cookie.
    CREATED = "created"
    #: Rewritten in place (same id): a refreshing cookie is re-sent.
    SAVED = "saved"
    #: Only its last access was refreshed: a refreshing cookie is re-sent.
    TOUCHED = "touched"
    #: Stored, and left as it was (nothing written): only a permanent session's cookie is
    #: re-sent (``SESSION_REFRESH_EACH_REQUEST``).
    UNCHANGED = "unchanged"
    #: Nothing is stored (a new session that got no data and whose identity was not read),
    #: and the client has no cookie to expire: no cookie.
    NOTHING = "nothing"
    #: The id the client's cookie names holds no session any more: expire the cookie.
    DELETED = "deleted"


#: A stored session as :meth:`StoredSession.load` found it: the user's keys, the creation
#: time if known, and the data as loaded, pickled (for ``revert()``; None if it cannot be
#: pickled). A plain tuple: it is built on every request that uses a session, and a
#: NamedTuple's constructor is a Python-level call.
Loaded = tuple[dict[str, Any], Optional[float], Optional[bytes]]


def decode_or_remove(
    handle: _core.Handle,
    store: _core.Store,
    now: float,
    once: Once = PROCESS,
    payload: bytes | None = None,
    metrics: Metrics | None = None,
    keep_unloadable_legacy: bool = False,
) -> Decoded | None:
    """Decodes an opened record; None, after removing it, if it cannot be used.

    Removed: a payload that does not decode (logged once as corrupt: a stored value that
    cannot be loaded must never lock its user out), and a legacy session expired by the
    times kept inside its pickle, which the core could not see when it opened the file.

    :raises PayloadError: with ``keep_unloadable_legacy``, for a legacy payload that does
        not unpickle in this process, left in place (``migrate``: its classes may be
        importable in the application, which migrates it on first use).
    """
    try:
        decoded = decode(
            handle.kind,
            handle.payload if payload is None else payload,
            handle.created,
            handle.last_access,
        )
    except PayloadError as exc:
        if keep_unloadable_legacy and not exc.unpickled and handle.kind != _RECORD:
            raise
        if metrics is not None:
            metrics.count("corrupt_payloads")
        once.log(
            CORRUPT,
            logging.WARNING,
            "session %s: stored data cannot be loaded (%s); removed, a new session was started",
            log_id(handle.id),
            exc,
        )
        handle.delete()
        return None
    if decoded.legacy and store.expired(now, decoded.created, decoded.last_access):
        handle.delete()
        return None
    if not decoded.legacy:
        record = handle.record()
        if record is not None and record[3] is not None:
            # Every value, for callers that need the whole session (merge, the CLI).
            large = LoadedLarge(handle, record[3])
            for key in large.entries:
                try:
                    decoded.data[key] = large.read(key)
                except LargeUnreadable as exc:
                    large.report(once, handle.id, key, exc)
    return decoded


def merge(stored: dict[str, Any], baseline: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge at key granularity: ``stored`` (now), ``baseline`` (what this request
    loaded) and ``mine`` (what it ends with). Keys this request added, changed (compared
    pickled, so in-place mutation counts) or removed are applied to ``stored``; the others
    keep whatever concurrent requests stored."""
    merged = dict(stored)
    for key in baseline.keys() | mine.keys():
        if key not in mine:
            merged.pop(key, None)
        elif key not in baseline or not same(mine[key], baseline[key]):
            merged[key] = mine[key]
    return merged


#: How an unusable stored session is reported (once per app and kind, repeats at DEBUG);
#: ``id`` is the session's log id, ``key`` where the generated key lives.
_UNUSABLE: dict[_core.OpenStatus, tuple[str, str]] = {
    _CORRUPT: (
        CORRUPT,
        "session %(id)s: corrupt record (torn or garbled) removed; a new session was started",
    ),
    _UNAUTHENTICATED: (
        UNAUTHENTICATED,
        "session %(id)s: record removed, a new session was started: it is whole but was "
        "written with a different key (or altered). If this happens to many sessions, "
        "records are being written with another key: workers or hosts with different "
        "SECRET_KEY values, a SECRET_KEY generated at start-up (e.g. os.urandom() in the "
        "app: each worker gets its own), SECRET_KEY changed without the old one in "
        "SECRET_KEY_FALLBACKS, or, without SECRET_KEY, %(key)s deleted or replaced",
    ),
    _UNTRUSTED: (
        "untrusted-legacy",
        "session %(id)s: legacy (Beaker) session file not read: it is not a regular file owned "
        "by this process's user and writable only by it (see SECURITY.md); a new session "
        "was started",
    ),
    _NEWER: (
        NEWER,
        "session %(id)s: record written by a newer version of flask-beaker-session; a new "
        "session was started",
    ),
}


class StoredSession:
    """Where one request's session is stored, and the lock held on it."""

    # Defaults at class level: one session object per request, so setting each of these in
    # __init__ would cost every request the assignments.

    #: The session's id: the stored one, or a fresh one from the store (set by load).
    id: str | None = None
    #: Id of the record this session was loaded from (None: new, or regenerated).
    stored_id: str | None = None
    #: The open, locked record (locking mode) from load until persist.
    handle: _core.Handle | None = None
    #: The payload as loaded or last written; None when the next persist must write
    #: (a new, regenerated or legacy session).
    payload: bytes | None = None
    #: Time of the previous request that used the session (None: new).
    last_access: float | None = None
    #: The loaded record's large values (None: it has none), read on first use; their
    #: keys hold :data:`~flask_beaker_session.large.UNREAD` in the data until then.
    large: LoadedLarge | None = None
    #: Bytes of pickles (and keys) the session holds as last encoded for a save (the
    #: ``record_bytes`` metric), None before.
    written: int | None = None
    #: Records to remove once the session is stored under its new id.
    _retired: tuple[_core.Handle, ...] = ()
    _retired_ids: tuple[str, ...] = ()
    #: Whether the session is stored even without data: set when its identity (id,
    #: creation time) is read, and for a stored session found without data (an earlier
    #: request read its identity); reset by ``clear()`` and ``delete()``.
    keep = False
    #: Set once the response's session was persisted: a first use after that (inside a
    #: streamed body) reads without keeping the lock, as nothing more will be saved and
    #: the lock must not be held while the body streams.
    finished = False

    def __init__(self, app: AppState, cookie_value: str | None) -> None:
        #: The application's store, clock and log.
        self.app = app
        #: The id the request's cookie carried (None: no cookie); used only to look up.
        self.cookie_value = cookie_value

    @property
    def is_new(self) -> bool:
        """Whether this session was not loaded from the store (or moved to a new id)."""
        return self.stored_id is None

    # -- loading -----------------------------------------------------------------------

    def load(self, now: float) -> Loaded | None:
        """Opens the session the cookie names; None (with a fresh id) if there is none."""
        value = self.cookie_value
        if value is not None:
            app = self.app
            metrics = app.metrics
            if metrics is None:
                status, handle = app.store.open(value, now)
            else:
                started = perf_counter()
                status, handle = app.store.open(value, now)
                # (A found session is counted without hashing its status: a native call.)
                metrics.opened(None if handle is not None else status, perf_counter() - started)
            if handle is not None:
                # The common case inline (it runs on every request that uses a session):
                # a record of ours holding a plain dict of the user's keys. Anything else
                # (legacy payloads, time keys left by 0.2, payloads that do not unpickle)
                # takes _load_unusual.
                record = handle.record()
                data: Any = None
                listed = None
                if record is not None:
                    payload, created, last_access, listed = record
                    try:
                        data = _loads(payload)
                    except Exception:
                        data = None
                    if type(data) is not dict or _CREATED_KEY in data or _ACCESSED_KEY in data:
                        data = None
                if data is not None:
                    kept: bytes | None = payload
                    snapshot: bytes | None = payload
                    if listed is not None:
                        # Large values: placeholders, read when used (large.py).
                        large = self.large = LoadedLarge(handle, listed)
                        for key in large.entries:
                            if key not in data:
                                data[key] = UNREAD
                else:
                    unusual = self._decode_unusual(handle, now, metrics)
                    if unusual is None:
                        self.start_fresh()
                        return None
                    data, created, last_access, kept, snapshot = unusual
                # The cookie value: the core opened exactly the id it spells.
                self.id = self.stored_id = value
                if app.locking and not self.finished:
                    self.handle = handle
                else:
                    # Non-locking mode: the lock is held only while reading; changes are
                    # merged into the stored data at persist time.
                    handle.release()
                self.last_access = last_access
                self.payload = kept
                # Stored without data: some request read its id (the original package
                # stored every session it handed out), so it stays until cleared, deleted
                # or expired.
                self.keep = not data
                return data, created, snapshot
            if status in _UNUSABLE:
                kind, message = _UNUSABLE[status]
                args = {"id": log_id(value), "key": self._key_file()}
                self.app.once.log(kind, logging.WARNING, message, args)
        self.start_fresh()
        return None

    def _decode_unusual(
        self, handle: _core.Handle, now: float, metrics: Metrics | None
    ) -> tuple[dict[str, Any], Any, float | None, bytes | None, bytes | None] | None:
        """``load``'s decoding of anything but a plain record of ours: legacy payloads,
        time keys left by 0.2, payloads that do not unpickle (decode_or_remove reports
        and removes what cannot be used: None). Gives the data, the times, the payload to
        keep as loaded (None for a legacy session: the first save rewrites it in our
        format) and the snapshot for ``revert()``."""
        app = self.app
        payload = handle.payload
        decoded = decode_or_remove(handle, app.store, now, app.once, payload, metrics)
        if decoded is None:
            return None
        data, created, last_access, legacy = decoded
        if not legacy:
            return data, created, last_access, payload, payload
        app.once.log(
            LEGACY,
            logging.INFO,
            "session %s: migrating a session stored by the original package "
            "(Beaker) to this package's format",
            log_id(handle.id),
        )
        try:
            snapshot: bytes | None = pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
        except Exception:  # the first save reports it, naming the key
            snapshot = None
        return data, created, last_access, None, snapshot

    def _key_file(self) -> str:
        """Where the generated key lives (for messages)."""
        data_dir = self.app.store.data_dir
        return str(data_dir / "session.key") if data_dir is not None else "the key file"

    def start_fresh(self) -> None:
        """Moves to a new, empty, unstored session."""
        self.id = self.app.store.new_id()
        self.stored_id = None
        self.last_access = None
        self.payload = None
        self.large = None
        self.keep = False

    # -- the Beaker API's storage side ---------------------------------------------------

    def remove(self, now: float) -> None:
        """Removes the stored record now and moves to a fresh id (``delete()``)."""
        if self.handle is not None:
            self.handle.delete()
            self.handle = None
        elif self.stored_id is not None:
            _, handle = self.app.store.open(self.stored_id, now)
            if handle is not None:
                handle.delete()
        self.start_fresh()

    def regenerate(self) -> None:
        """Moves the data to a new id; the old record goes once the new one is stored."""
        if self.handle is not None:
            self._retired += (self.handle,)
            self.handle = None
        elif self.stored_id is not None:
            self._retired_ids += (self.stored_id,)
        self.stored_id = None
        self.id = self.app.store.new_id()
        self.payload = None

    def release(self) -> None:
        """Gives up every lock held (idempotent; at save and at teardown)."""
        if self.handle is None and not self._retired:
            self._retired_ids = ()
            return
        for handle in [self.handle, *self._retired]:
            if handle is not None:
                handle.release()
        self.handle = None
        self._retired = ()
        self._retired_ids = ()

    def read_large(self, key: Any) -> Any:
        """The loaded record's large value ``key``, read on first use; UNREAD (after
        reporting it as a corrupt record, once) if it cannot be read: the caller treats
        it as absent, and the next save writes the record without it."""
        large = self.large
        if large is None or key not in large.entries:
            return UNREAD
        try:
            return large.read(key)
        except LargeUnreadable as exc:
            large.report(self.app.once, self.stored_id, key, exc)
            metrics = self.app.metrics
            if metrics is not None:
                metrics.count("corrupt_payloads")
            # Whatever else happens, the next persist rewrites the record.
            self.payload = None
            return UNREAD

    # -- persisting ----------------------------------------------------------------------

    def persist(self, data: dict[str, Any], modified: bool, created: Any, now: float) -> Outcome:
        """Stores ``data`` (the user's keys) and releases the lock; says what it did.

        ``modified`` is the session's flag (unset: the pickle may be skipped when the data
        provably did not change); ``created`` is its ``_creation_time`` as the user left it
        (anything: a value that is not a number counts as unknown, and a session created
        without a known creation time is created now). If the store fails, the exception
        propagates; :meth:`release` (which ``save_session`` always calls) then gives up
        whatever lock is still held.
        """
        # (The usual value is the float loading gave: no call for it.)
        created_at = created if type(created) is float else seconds(created)
        if self.handle is None and self.stored_id is not None:
            return self._merge(data, modified, created_at, now)
        handle = self.handle
        if handle is not None:
            if not data and not self.keep:
                handle.delete()
                self.handle = None
                return self._deleted()
            payload = unchanged(self.payload, modified, data)
            parts = None
            if payload is None:
                payload, parts, size = encode_parts(
                    data, self.app.config.max_size, self.large, True, self.read_large
                )
                same = payload == self.payload and reuses_all(parts, self.large)
                self.written = size
            else:
                same = True
            # Save or touch, and release the lock in the same native call.
            if not same:
                handle.save(payload, now, created_at, parts)
                self.handle = None
                self.payload = payload
                return Outcome.SAVED
            wrote = handle.touch(now)
            self.handle = None
            return Outcome.TOUCHED if wrote else Outcome.UNCHANGED
        if not data and not self.keep:
            self._retire(now)
            return self._deleted()
        payload, parts, self.written = encode_parts(
            data, self.app.config.max_size, self.large, False, self.read_large
        )
        assert self.id is not None
        self.app.store.create(
            self.id, payload, now if created_at is None else created_at, now, parts
        )
        self._retire(now)
        self.payload = payload
        return Outcome.CREATED

    def _deleted(self) -> Outcome:
        # Nothing stored: the client's cookie, if it sent one, must go.
        return Outcome.DELETED if self.cookie_value is not None else Outcome.NOTHING

    def _retire(self, now: float) -> None:
        """Removes the records a regenerate() left behind (after the new one exists)."""
        for old in self._retired:
            old.delete()
        self._retired = ()
        for sid in self._retired_ids:
            _, handle = self.app.store.open(sid, now)
            if handle is not None:
                handle.delete()
        self._retired_ids = ()

    def _merge(
        self, data: dict[str, Any], modified: bool, created: float | None, now: float
    ) -> Outcome:
        """Non-locking mode: applies the keys this request changed to the data stored now.

        Keys changed by concurrent requests of the same session survive; for a key changed
        by both, the last save wins. A session deleted meanwhile (logout in another tab) is
        not resurrected.
        """
        store = self.app.store
        sid = self.stored_id
        assert sid is not None
        limit = self.app.config.max_size
        kept = bool(data) or self.keep
        large = self.large
        same = False
        if kept:
            payload = unchanged(self.payload, modified, data)
            same = payload is not None
            if payload is None:
                payload, parts, self.written = encode_parts(
                    data, limit, large, True, self.read_large
                )
                same = payload == self.payload and reuses_all(parts, large)
        if same:
            # Only a touch may be due. The core applies its touch interval itself; asking
            # first spares most read-only requests a lock and a read.
            interval = store.config.touch_interval
            last = self.last_access
            if interval is not None and (last is None or now - last >= interval):
                _, handle = store.open(sid, now)
                if handle is not None:
                    try:
                        if handle.touch(now):
                            return Outcome.TOUCHED
                    finally:
                        handle.release()
            return Outcome.UNCHANGED
        baseline = loads(self.payload) if self.payload else {}
        if large is not None:
            # Compared key by key: every value as loaded (the stored side changed meanwhile).
            for key in large.entries:
                try:
                    baseline[key] = large.original(key)
                except LargeUnreadable as exc:
                    large.report(self.app.once, sid, key, exc)
            data = {k: v for k, v in data.items() if v is not UNREAD or k in baseline}
            data = {k: (baseline[k] if v is UNREAD else v) for k, v in data.items()}
        _, handle = store.open(sid, now)
        if handle is None:
            return self._deleted()
        try:
            decoded = decode_or_remove(handle, store, now, self.app.once)
            if decoded is None:
                return self._deleted()
            merged = merge(decoded.data, baseline, data)
            if not merged and not self.keep:
                handle.delete()
                return self._deleted()
            merged_payload, parts, self.written = encode_parts(merged, limit, None, False, None)
            handle.save(merged_payload, now, created, parts)
            self.payload = merged_payload
            return Outcome.SAVED
        finally:
            handle.release()
