"""The object behind :data:`flask.session`: a dict that loads itself on first use.

:class:`BeakerSession` is the mapping and the Beaker API. Where the session is stored, the
lock held on it and how it is written are its :class:`~flask_beaker_session.stored.
StoredSession`'s business; the session only decides *what* is stored (the user's keys, not
the two time keys it answers for) and keeps what ``revert()`` needs.

The two time keys of the original package (``_creation_time``, ``_accessed_time``) are kept
outside the mapping by :class:`BeakerSession` (``SESSION_TIME_KEYS = False``, the default:
``len``, ``bool``, iteration, ``==``, ``copy()`` see only the user's data, while
``session['_creation_time']``, ``.get()`` and ``in`` still answer for them), and inside it by
:class:`~flask_beaker_session.time_keys_session.TimeKeysSession` (``True``: the original's
mapping).

Reading a session's identity — :attr:`~BeakerSession.id`, :attr:`~BeakerSession.created` or
the ``_creation_time`` key — makes a new session be stored at the end of the request, even
without data, as the original package does (:attr:`StoredSession.keep
<flask_beaker_session.stored.StoredSession.keep>`).

The session interface talks to it through a small surface: :attr:`~BeakerSession.loaded`,
:attr:`~BeakerSession.finished`, :meth:`~BeakerSession.persist`, :attr:`~BeakerSession.outcome`,
:attr:`~BeakerSession.was_permanent`, :meth:`~BeakerSession.finish` and
:meth:`~BeakerSession.release` (and the public :attr:`id`, :attr:`created`, ``permanent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from flask.sessions import SessionMixin

from .codec import TIME_KEYS, loads
from .large import UNREAD
from .store import AppState
from .stored import Outcome, StoredSession

__all__ = ["BeakerSession"]

_CREATED, _ACCESSED = TIME_KEYS
_TIME_KEY_SET = frozenset(TIME_KEYS)
_CREATED_OUTCOME, _SAVED_OUTCOME = Outcome.CREATED, Outcome.SAVED
#: ``dict.get``'s answer for a missing key (no user value can be this object).
_ABSENT: Any = object()


class BeakerSession(dict, SessionMixin):  # type: ignore[type-arg]
    """The object behind :data:`flask.session`: a dict that loads itself on first use.

    Beyond the mapping it offers the Beaker methods users of the original call: :attr:`id`,
    :attr:`is_new`, :attr:`created`, :attr:`last_accessed`, :meth:`delete`,
    :meth:`invalidate`, :meth:`regenerate_id`, :meth:`save` and :meth:`revert`.
    In-place changes of stored values (``session['cart'].append(x)``) are saved without
    ``session.modified = True``, because saving compares the pickled data with what was
    loaded.

    The mapping holds only the user's data; ``_creation_time`` and ``_accessed_time`` are
    answered by ``[]``, :meth:`get` and ``in`` without being keys of it.
    """

    # Defaults at class level: one session object per request, so setting each of these in
    # __init__ would cost every request the assignments.

    #: Whether the session was used (and so loaded) in this request.
    loaded = False
    #: Set by :meth:`finish`: no lock is held any more, none will be taken.
    finished = False
    #: The data as loaded (pickled), for revert(); it survives regenerate_id() and is set
    #: for legacy sessions too.
    _snapshot: bytes | None = None
    #: The values of ``_creation_time`` and ``_accessed_time`` (set by loading).
    _created: Any = None
    _accessed: Any = None
    #: Flask's flags: ``modified`` is set by any mutating method; ``accessed`` by Flask
    #: whenever the :data:`flask.session` proxy is used.
    modified = False
    accessed = False
    #: What the end of the request did with the stored session (None before), for
    #: :meth:`~flask_beaker_session.session_interface.BeakerSessionInterface.should_set_cookie`.
    outcome: Outcome | None = None
    #: Whether ``_creation_time`` and ``_accessed_time`` are keys of the mapping
    #: (:class:`~flask_beaker_session.time_keys_session.TimeKeysSession`).
    _time_keys_in_mapping = False
    #: Whether the stored session was ``permanent`` when loaded: a save that changes it
    #: must re-send the cookie with the other kind of expiry.
    was_permanent = False
    #: Whether some value may still be the placeholder of a large value not read yet
    #: (:mod:`~flask_beaker_session.large`): single-key reads replace that key's, reads
    #: of every value (:meth:`_read_all`) all of them, before anything is returned.
    _unread = False

    #: The stored side (lock, id, record), created by the first use: a request whose view
    #: never touches the session builds nothing more than this object (SPEC §5).
    _stored: StoredSession

    def __init__(self, app: AppState, cookie_value: str | None) -> None:
        # (No dict.__init__: the mapping starts empty, and it runs on every request.)
        self._app = app
        self._cookie_value = cookie_value

    # -- loading -----------------------------------------------------------------------

    def _load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        # Flask >= 3.1 sets ``accessed`` whenever the proxy is used; older Flask leaves
        # that to the session class (as its SecureCookieSession does on reads).
        self.accessed = True
        stored = self._stored = self._app.stored_class(self._app, self._cookie_value)
        if self.finished:  # first used inside a streamed body: read without locking
            stored.finished = True
        now = self._app.clock()
        loaded = stored.load(now)
        if loaded is None:
            self._fill_fresh(now)
            return
        data, created, self._snapshot = loaded
        self._created = created if created else now
        self._accessed = now
        if self._time_keys_in_mapping:
            # Time keys first (as in a new session and the original package), so that
            # iteration order and popitem() do not change from one request to the next.
            dict.__setitem__(self, _CREATED, self._created)
            dict.__setitem__(self, _ACCESSED, now)
        dict.update(self, data)
        if stored.large is not None:
            self._unread = True
        if "_permanent" in data:  # (False, the class default, otherwise)
            self.was_permanent = bool(data["_permanent"])

    def _fill_fresh(self, now: float) -> None:
        self._snapshot = None
        self._created = self._accessed = now

    def _read_all(self) -> None:
        """Loads before a read that returns every value (``items()``, ``copy()`` …), and
        reads every large value not read yet."""
        self._load()
        if self._unread:
            self._read_unread()

    def _read_unread(self) -> None:
        for key, value in list(dict.items(self)):
            if value is UNREAD:
                self._read_large(key)
        self._unread = False

    def _read_large(self, key: Any) -> Any:
        """Reads large value ``key`` into the mapping and returns it; a value that cannot be
        read (logged as a corrupt record) is removed, and the result is UNREAD."""
        value = self._stored.read_large(key)
        if value is UNREAD:
            dict.pop(self, key, None)
        else:
            dict.__setitem__(self, key, value)
        return value

    # -- the interface's side ----------------------------------------------------------

    def persist(self, now: float) -> Outcome:
        """Stores the session at the end of the request and releases its lock.

        Records what was done in :attr:`outcome` and returns it. Once it returns, the
        session is finished (:meth:`finish`): a successful persist holds no lock.
        """
        stored = self._stored
        self.outcome = outcome = stored.persist(
            dict(dict.items(self)), self.modified, self._created, now
        )
        self.finished = stored.finished = True
        return outcome

    def written_size(self) -> int | None:
        """Bytes of data the last :meth:`persist` wrote (None: it wrote no data)."""
        outcome = self.outcome
        if outcome is _CREATED_OUTCOME or outcome is _SAVED_OUTCOME:
            stored = self._stored
            if stored.written is not None:
                return stored.written  # small and large values (large.py)
            payload = stored.payload
            return None if payload is None else len(payload)
        return None

    def finish(self) -> None:
        """Ends the request's use of the store: releases the lock; a first use after this
        (in a streamed body) reads without locking."""
        self.finished = True
        if self.loaded:  # nothing is held (or even built) for a session never used
            self._stored.finished = True
            self._stored.release()

    def release(self) -> None:
        """Releases the locks held for this session (at teardown)."""
        if self.loaded:
            self._stored.release()

    # -- Beaker API --------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The 32-hex session id (a new session gets its id on first use).

        Reading it makes the session be stored at the end of the request, even without
        data, so that the id stays valid (as with the original package).
        """
        self._load()
        stored = self._stored
        stored.keep = True
        sid = stored.id
        assert sid is not None
        return sid

    @property
    def is_new(self) -> bool:
        """Whether no stored session was found for this request's cookie."""
        self._load()
        return self._stored.is_new

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Flask's name for :attr:`is_new`."""
        return self.is_new

    @property
    def created(self) -> float:
        """Creation time (epoch seconds) of the session; reading it stores the session,
        as reading :attr:`id` does."""
        self._load()
        self._stored.keep = True
        return float(self._creation_time())

    def _creation_time(self) -> Any:
        return self._created

    @property
    def last_accessed(self) -> float | None:
        """Time of the previous request that used the session; None for a new one."""
        self._load()
        return self._stored.last_access

    def delete(self) -> None:
        """Removes all data and the stored record now, and expires the cookie.

        The old id is dead: replaying it gives an empty session. Keys set afterwards in the
        same request start a new session under a new id.
        """
        self._load()
        now = self._app.now()
        self._stored.remove(now)
        dict.clear(self)
        self._fill_fresh(now)
        self.modified = True

    def invalidate(self) -> None:
        """Clears the data and moves to a new id; the old record is removed."""
        self.delete()

    def regenerate_id(self) -> None:
        """Keeps the data under a new id (session-fixation defence, e.g. at login).

        The old record is removed when the new one has been stored.
        """
        self._load()
        self._stored.regenerate()
        self.modified = True

    def save(self) -> None:
        """Kept for compatibility: sessions are saved at the end of the request."""

    def revert(self) -> None:
        """Restores the data as it was loaded at the start of this request."""
        self._load()
        dict.clear(self)
        if self._snapshot is not None:
            dict.update(self, loads(self._snapshot))
        self._unread_again()
        self.modified = True

    def _unread_again(self) -> None:
        """``revert()``: large values as loaded, read again from the record when used."""
        large = self._stored.large
        if large is not None and self._snapshot is not None:
            large.forget()
            for key in large.entries:
                dict.__setitem__(self, key, UNREAD)
            self._unread = True

    # -- mapping: every access loads first ---------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._load()
        value = dict.__getitem__(self, key)  # a miss goes to __missing__
        if value is UNREAD:
            value = self._read_large(key)
            if value is UNREAD:
                raise KeyError(key)
        return value

    def __missing__(self, key: str) -> Any:
        # The time keys answer without being keys of the mapping.
        if key == _CREATED:
            self._stored.keep = True
            return self._created
        if key == _ACCESSED:
            return self._accessed
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        if key in _TIME_KEY_SET:
            # Kept outside the mapping; a new creation time is stored with the session.
            if key == _CREATED:
                self._created = value
            else:
                self._accessed = value
        else:
            dict.__setitem__(self, key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        self._load()
        dict.__delitem__(self, key)
        self.modified = True

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key) or key in _TIME_KEY_SET

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
        self._read_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._read_all()
        return dict.__ne__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._read_all()
        return f"<{type(self).__name__} {dict.__repr__(self)}>"

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._read_all()
        return dict(dict.items(self)) | dict(other)

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._read_all()
        return dict(other) | dict(dict.items(self))

    def __ior__(self, other: Any) -> BeakerSession:
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        # Pickling the session object itself gives a plain dict (no store, no lock).
        self._read_all()
        return (dict, (dict(dict.items(self)),))

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        value = dict.get(self, key, _ABSENT)
        if value is _ABSENT:
            return self.__missing__(key) if key in _TIME_KEY_SET else default
        if value is UNREAD:
            value = self._read_large(key)
            if value is UNREAD:
                return default
        return value

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._read_all()
        return dict.values(self)

    def items(self) -> Any:
        self._read_all()
        return dict.items(self)

    @classmethod
    def fromkeys(cls, iterable: Iterable[Any], value: Any = None) -> dict[Any, Any]:
        """A plain ``dict``: a session object only exists inside a request."""
        return dict.fromkeys(iterable, value)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data."""
        self._read_all()
        return dict(dict.items(self))

    def clear(self) -> None:
        """Removes all the data; an emptied session is deleted at the end of the request
        (unless its identity is read again after this)."""
        self._load()
        dict.clear(self)
        self._stored.keep = False
        self.modified = True

    def pop(self, key: str, *default: Any) -> Any:
        self._load()
        self.modified = True
        if dict.get(self, key) is UNREAD:
            self._read_large(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        self._read_all()
        self.modified = True
        return dict.popitem(self)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._load()
        self.modified = True
        if dict.get(self, key) is UNREAD:
            self._read_large(key)
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._load()
        self.modified = True
        dict.update(self, *args, **kwargs)
