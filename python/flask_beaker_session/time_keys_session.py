"""The session object with ``SESSION_TIME_KEYS = True``: :class:`TimeKeysSession`.

The original package kept the two time keys (``_creation_time``, ``_accessed_time``) inside
the session's mapping; :class:`~flask_beaker_session.beaker_session.BeakerSession` keeps them
outside it by default. This subclass restores the original's mapping; what is stored, the
lock and the Beaker API are the base class's.
"""

from __future__ import annotations

from typing import Any

from .beaker_session import _ABSENT, _ACCESSED, _CREATED, _TIME_KEY_SET, BeakerSession
from .codec import TIME_KEYS, loads
from .large import UNREAD
from .stored import Outcome

__all__ = ["TimeKeysSession"]


class TimeKeysSession(BeakerSession):
    """The session with ``SESSION_TIME_KEYS = True``: the original package's mapping, in
    which ``_creation_time`` and ``_accessed_time`` are keys like the user's (listed first,
    counted by ``len``, returned by ``items()``, removed by ``clear()``).

    Reads that return the creation time (``[]``, :meth:`get`, :meth:`items`,
    :meth:`values`, :meth:`copy` and what is built on them: ``dict(session)``, JSON) count
    as reading the session's identity.
    """

    _time_keys_in_mapping = True

    def _fill_fresh(self, now: float) -> None:
        BeakerSession._fill_fresh(self, now)
        dict.__setitem__(self, _CREATED, now)
        dict.__setitem__(self, _ACCESSED, now)

    def _read_all(self) -> None:
        # Every value includes the creation time: reading them reads the identity.
        BeakerSession._read_all(self)
        self._stored.keep = True

    def _creation_time(self) -> Any:
        return dict.get(self, _CREATED, 0.0)

    def persist(self, now: float) -> Outcome:
        data = {k: v for k, v in dict.items(self) if k not in _TIME_KEY_SET}
        # After clear() the key is gone: the session keeps its creation time.
        created = dict.get(self, _CREATED, self._created)
        stored = self._stored
        self.outcome = outcome = stored.persist(data, self.modified, created, now)
        self.finished = stored.finished = True
        return outcome

    def revert(self) -> None:
        self._load()
        times = {k: dict.get(self, k, _ABSENT) for k in TIME_KEYS}
        dict.clear(self)
        dict.update(self, {k: v for k, v in times.items() if v is not _ABSENT})
        if self._snapshot is not None:
            dict.update(self, loads(self._snapshot))
        self._unread_again()
        self.modified = True

    def __missing__(self, key: str) -> Any:
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        self._load()
        if key == _CREATED:
            self._stored.keep = True
        value = dict.__getitem__(self, key)
        if value is UNREAD:
            value = self._read_large(key)
            if value is UNREAD:
                raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        dict.__setitem__(self, key, value)
        self.modified = True

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        if key == _CREATED:
            self._stored.keep = True
        value = dict.get(self, key, _ABSENT)
        if value is _ABSENT:
            return default
        if value is UNREAD:
            value = self._read_large(key)
            if value is UNREAD:
                return default
        return value
