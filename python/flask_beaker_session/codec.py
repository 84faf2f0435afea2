"""The payload codec: session data to stored bytes and back.

A stored payload is the pickled dict of the user's keys. The two time keys every session
shows (``_creation_time``, ``_accessed_time``) are not in it: the core keeps the times in
the record's header. Legacy Beaker payloads are different: they hold the times inside the
pickle, sometimes wrapped in Beaker's outer dict, with Beaker's ``_domain``/``_path`` keys.

Everything here is pure: functions return or raise, and never touch the store or the log.
What to do with a payload that cannot be read (remove it, log it) is the caller's decision
(see :func:`flask_beaker_session.stored.decode_or_remove`).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from . import _core
from .errors import SessionTooLargeError

__all__ = [
    "TIME_KEYS",
    "UNREAD",
    "Decoded",
    "PayloadError",
    "decode",
    "encode",
    "loads",
    "same",
    "unchanged",
]

#: Keys the original package shows in every session; kept visible, stored in the header.
TIME_KEYS = ("_creation_time", "_accessed_time")
_TIME_KEY_SET = frozenset(TIME_KEYS)
#: Keys Beaker >= 1.11 added to stored sessions; dropped when a legacy session is read.
_BEAKER_INTERNAL = ("_domain", "_path")
#: Types whose values cannot change in place: a session holding only these (directly, or in
#: tuples / frozensets of them) and never assigned to cannot have changed.
_IMMUTABLE = frozenset({str, bytes, int, float, bool, complex, type(None)})

_RECORD = _core.PayloadKind.Record
_WRAPPED = _core.PayloadKind.LegacyWrapped


class _Unread:
    """The placeholder of a large value not read yet (``large.py``). It never reaches
    user code (every read of the session replaces it first); should it leak, it refuses
    to be pickled rather than being stored as a value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread large session value>"

    def __reduce__(self) -> Any:
        raise TypeError("an unread large session value cannot be pickled")


#: The placeholder in the session's mapping of every large value not read yet.
UNREAD: Any = _Unread()


class Decoded(NamedTuple):
    """A payload turned back into session data."""

    #: The user's keys (no time keys, no Beaker internals).
    data: dict[str, Any]
    #: Creation time (epoch seconds), if known.
    created: float | None
    #: Time of the last request that used the session, if known.
    last_access: float | None
    #: Whether it came from a legacy (Beaker) file, to be rewritten in our format.
    legacy: bool = False


class PayloadError(ValueError):
    """A payload cannot be turned back into session data: it does not unpickle (its class
    is gone, it is garbled) or is not a dict. ``str()`` is ``"<Type>: <message>"`` of the
    underlying error, which is kept in :attr:`cause`."""

    def __init__(self, cause: Exception, *, unpickled: bool = True) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        #: The error unpickling (or checking the result) raised.
        self.cause = cause
        #: Whether the payload unpickled (and its shape was wrong): False when unpickling
        #: itself failed, e.g. for a class this process cannot import.
        self.unpickled = unpickled


def encode(data: dict[str, Any], max_size: int | None = None) -> bytes:
    """Pickles the user's keys for storage.

    :raises TypeError: a value cannot be pickled; the message names its key, because
        "cannot pickle 'generator' object" alone does not say which of fifty keys it is.
    :raises SessionTooLargeError: the pickle is longer than ``max_size`` bytes (the
        message names both sizes); nothing has been stored.
    """
    try:
        payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
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
    if max_size is not None and len(payload) > max_size:
        raise SessionTooLargeError(len(payload), max_size)
    return payload


def loads(payload: bytes) -> dict[str, Any]:
    """The user's keys of a payload this package encoded (and already read once)."""
    data: dict[str, Any] = pickle.loads(payload)
    return data


def seconds(value: Any) -> float | None:
    """A time key's value as epoch seconds; None if it is not a number (a legacy pickle, or
    a view, may hold anything under ``_creation_time``)."""
    return float(value) if isinstance(value, (int, float)) else None


def decode(
    kind: _core.PayloadKind,
    payload: bytes,
    created: float | None,
    last_access: float | None,
) -> Decoded:
    """Turns a stored payload into ``(user data, created, last access)``.

    ``created`` and ``last_access`` are the times the core read from the record. A legacy
    payload carries its own inside the pickle; they are taken out and win over the core's,
    and Beaker's ``_domain``/``_path`` are dropped. Whether a legacy session has expired
    by those times is for the caller to ask the store (``Store.expired``).

    :raises PayloadError: the payload cannot be used (a stored value that cannot be loaded
        must never lock its user out: the caller starts a new session).
    """
    # One comparison of the kind on the common path: each is a call into the native module.
    record = kind == _RECORD
    try:
        data = pickle.loads(payload)
    except Exception as exc:
        raise PayloadError(exc, unpickled=False) from exc
    try:
        if not record and kind == _WRAPPED:
            data = data["session"]
        if not isinstance(data, dict):
            raise TypeError(f"stored session is a {type(data).__name__}")
    except Exception as exc:
        raise PayloadError(exc) from exc
    if record:
        # The common case, kept short: it runs on every request that uses a session.
        if type(data) is dict and not (data.keys() & _TIME_KEY_SET):
            # tuple.__new__ directly: a NamedTuple's own constructor is a Python-level
            # call, and this runs on every request that uses a session.
            return tuple.__new__(Decoded, (data, created, last_access, False))
        for key in TIME_KEYS:
            data.pop(key, None)
        return Decoded(data, seconds(created), seconds(last_access))
    created = data.pop("_creation_time", created)
    last_access = data.pop("_accessed_time", last_access)
    for key in _BEAKER_INTERNAL:
        data.pop(key, None)
    return Decoded(data, seconds(created), seconds(last_access), legacy=True)


def unchanged(loaded: bytes | None, modified: bool, data: dict[str, Any]) -> bytes | None:
    """The ``loaded`` payload if ``data`` provably did not change since it was loaded,
    else None.

    Change detection normally pickles the data and compares it with what was loaded, which
    is what makes in-place mutation of stored lists and dicts persist. That costs a full
    pickle (milliseconds for a 1 MB session) on every request; when no mutating method was
    called (``modified`` is False) and every value is immutable, nothing can have changed
    and the pickle is skipped.
    """
    if modified or loaded is None:
        return None
    for value in data.values():
        kind = type(value)
        if kind in _IMMUTABLE or value is UNREAD:  # (a large value never read: unchanged)
            continue
        if (kind is tuple or kind is frozenset) and all(type(v) in _IMMUTABLE for v in value):
            continue
        return None
    return loaded


def same(a: Any, b: Any) -> bool:
    """Whether two values pickle identically (so in-place mutation counts as a change);
    False if either cannot be pickled."""
    try:
        return pickle.dumps(a, pickle.HIGHEST_PROTOCOL) == pickle.dumps(b, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
