"""Large session values: stored apart, read when used, rewritten only when changed.

A record (format version 3, ``docs/security.md``) keeps the session's small values in one
*head*, and each value whose pickle is at least :data:`LARGE_VALUE` bytes in a segment of
its own. Loading a session opens the head only; each large key is held in the session's
mapping as :data:`UNREAD` until something reads it, when :meth:`LoadedLarge.read` asks the
core for that one segment (verified and decrypted with the GIL released) and unpickles it.
A save (:func:`encode_parts`) reuses the stored segment of every large value that was never
read, or that is the very immutable object loaded, or whose pickle did not change: it is
neither pickled, encrypted nor hashed again.

Small sessions (all values small: most of them) take none of this: one pickle, one segment.

A large value whose segment does not verify when it is read (an altered record) or does
not unpickle in this process (its class is gone) is reported once as a corrupt record and
reads as absent; the next save writes the record without it. Until it is read, its key is
listed (``in``, ``keys()``, ``len()``), as nothing has been checked yet.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from . import _core
from ._log import CORRUPT, Once, log_id
from .codec import _IMMUTABLE, UNREAD, encode
from .errors import SessionTooLargeError

__all__ = ["LARGE_VALUE", "UNREAD", "LargeUnreadable", "LoadedLarge", "encode_parts"]

#: A value whose pickle (or, for ``bytes``, whose length) is at least this many bytes is
#: stored in a segment of its own (``record::LARGE_VALUE`` in the core: 4 KiB).
LARGE_VALUE: int = _core.LARGE_VALUE
#: A session whose whole pickle is smaller than this (64 KiB), and that was not stored with
#: large values, is stored in one segment whatever its values hold: finding its large
#: values would mean pickling each value on its own at every save, which costs more than
#: decrypting the whole of such a session does.
SPLIT_AT: int = 16 * LARGE_VALUE

_dumps = pickle.dumps
_HIGHEST = pickle.HIGHEST_PROTOCOL
_changed = _core.LargeValue.changed
_reused = _core.LargeValue.loaded


class LargeUnreadable(Exception):
    """A large value's segment did not verify, or its pickle did not load."""


class _Entry:
    """One large value of the loaded record."""

    __slots__ = ("index", "key_pickle", "pickled", "raw", "size", "value")

    def __init__(self, index: int, key_pickle: bytes, raw: bool, size: int) -> None:
        self.index = index
        self.key_pickle = key_pickle
        self.raw = raw
        #: Bytes of its pickle (or of the value, raw) as stored, for the size limit.
        self.size = size
        #: The value as read (UNREAD until then).
        self.value: Any = UNREAD
        #: Its pickle as read (None for a raw ``bytes`` value, or before it is read).
        self.pickled: bytes | None = None


class LoadedLarge:
    """The large values of a loaded record, read one at a time on first use.

    ``handle`` is the native handle the record was opened with: its large values stay
    readable after the lock is given up (the core keeps their stored bytes).
    """

    def __init__(self, handle: _core.Handle, listed: tuple[tuple[bytes, bool, int], ...]) -> None:
        self.handle = handle
        #: By key, in stored order.
        self.entries: dict[Any, _Entry] = {}
        #: How many the record lists (a save reusing all of them, and the same small
        #: values, changes nothing).
        self.count = len(listed)
        for index, (key_pickle, raw, size) in enumerate(listed):
            try:
                key = pickle.loads(key_pickle)
                hash(key)
            except Exception:
                continue  # a key that does not load: absent (the head is authentic)
            self.entries[key] = _Entry(index, key_pickle, raw, size)

    def read(self, key: Any) -> Any:
        """The value of large key ``key``, read (once) from the record.

        :raises LargeUnreadable: its segment does not verify or its pickle does not load.
        """
        entry = self.entries[key]
        if entry.value is not UNREAD:
            return entry.value
        data = self.handle.open_large(entry.index)
        if data is None:
            raise LargeUnreadable("stored data does not verify (altered)")
        if entry.raw:
            value: Any = data
        else:
            try:
                value = pickle.loads(data)
            except Exception as exc:
                raise LargeUnreadable(f"{type(exc).__name__}: {exc}") from exc
            entry.pickled = data
        entry.value = value
        return value

    def original(self, key: Any) -> Any:
        """Large value ``key`` as stored, a fresh object (what was read may have been
        changed in place since): the baseline of a non-locking merge.

        :raises LargeUnreadable: as :meth:`read`.
        """
        entry = self.entries[key]
        if entry.value is UNREAD or entry.raw:
            return self.read(key)  # never handed out (or immutable bytes)
        assert entry.pickled is not None
        return pickle.loads(entry.pickled)

    def forget(self) -> None:
        """Forgets what was read (``revert()``: the values are read again from the record)."""
        for entry in self.entries.values():
            entry.value = UNREAD
            entry.pickled = None

    def report(self, once: Once, sid: str | None, key: Any, exc: Exception) -> None:
        """Logs an unreadable large value as the corrupt record it is part of."""
        once.log(
            CORRUPT,
            logging.WARNING,
            "session %s: stored value of key %r cannot be loaded (%s); left out, the "
            "session is saved without it",
            log_id(sid) if sid else "?",
            key,
            exc,
        )


def _pickle_value(key: Any, value: Any) -> bytes:
    try:
        return _dumps(value, _HIGHEST)
    except Exception as exc:
        raise TypeError(
            f"session value for key {key!r} cannot be pickled "
            f"({type(value).__name__}: {exc}); the stored session is unchanged"
        ) from exc


def encode_parts(
    data: dict[Any, Any],
    max_size: int | None,
    loaded: LoadedLarge | None,
    reuse: bool,
    resolve: Any,
) -> tuple[bytes, list[_core.LargeValue] | None, int]:
    """Splits ``data`` into the pickle of its small values and its large values, and says
    how many bytes of pickles (and keys) they hold.

    Large values of ``loaded`` (the record being replaced) that are unread, the immutable
    object read, or pickled the same as read, are reused as stored when ``reuse`` (the
    save replaces that record); otherwise (a new id) they are read with ``resolve(key)``
    (which returns UNREAD for a value that cannot be read: left out) and written anew.

    :raises TypeError: a value cannot be pickled (the message names its key).
    :raises SessionTooLargeError: the pickles (and keys) add up to more than ``max_size``.
    """
    if loaded is None:
        # Most sessions: one pickle. Under LARGE_VALUE no value can be large (the common
        # case: no further look at the values); under SPLIT_AT only a large ``bytes``
        # value is stored apart.
        payload = encode(data, max_size)
        size = len(payload)
        if size < LARGE_VALUE or (
            size < SPLIT_AT
            and not any(type(v) is bytes and len(v) >= LARGE_VALUE for v in data.values())
        ):
            return payload, None, size
    entries = loaded.entries if loaded is not None else {}
    small: dict[Any, Any] = {}
    large: list[_core.LargeValue] = []
    size = 0
    for key, value in data.items():
        entry = entries.get(key)
        if entry is not None:
            if value is UNREAD:
                if reuse:
                    large.append(_reused(entry.index))
                    size += entry.size
                    continue
                value = resolve(key)
                if value is UNREAD:
                    continue
            elif reuse and value is entry.value and type(value) in _IMMUTABLE:
                large.append(_reused(entry.index))
                size += entry.size
                continue
        if type(value) is bytes and len(value) >= LARGE_VALUE:
            if reuse and entry is not None and entry.raw and value == entry.value:
                large.append(_reused(entry.index))
            else:
                key_pickle = _pickle_value(key, key) if entry is None else entry.key_pickle
                large.append(_changed(key_pickle, value, True))
            size += len(value)
            continue
        if value is UNREAD:
            continue  # (defensive: a placeholder without a loaded entry holds nothing)
        pickled = _pickle_value(key, value)
        if len(pickled) < LARGE_VALUE:
            small[key] = value
            continue
        size += len(pickled)
        if reuse and entry is not None and not entry.raw and pickled == entry.pickled:
            large.append(_reused(entry.index))
        else:
            key_pickle = _pickle_value(key, key) if entry is None else entry.key_pickle
            large.append(_changed(key_pickle, pickled, False))
    payload = encode(small)
    size += len(payload)
    if max_size is not None and size > max_size:
        raise SessionTooLargeError(size, max_size)
    return payload, large or None, size


def reuses_all(large: list[_core.LargeValue] | None, loaded: LoadedLarge | None) -> bool:
    """Whether ``large`` is exactly the loaded record's large values, all reused."""
    count = 0 if loaded is None else loaded.count
    if not large:
        return count == 0
    if len(large) != count:
        return False
    indexes = sorted(v.index if v.index is not None else -1 for v in large)
    return indexes == list(range(count))
