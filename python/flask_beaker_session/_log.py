"""The package's one logger, its "once" helper, and how ids appear in log lines.

Problems that recur on every request (a corrupt record, a lock timeout, a session migrated
from the original package) are worth one warning, not a flood: :class:`Once` logs the first
occurrence of each kind at its level and the later ones at DEBUG, so nothing is lost for
whoever turns DEBUG on. Each application has its own :class:`Once` (in a worker process
that serves one app: once per process). :data:`PROCESS` reports the insecure settings found
by ``init_app`` (no ``SECRET_KEY``, a data dir writable by others) once per process however
many apps are created, and serves code with no app at hand (the CLI).

Failures that hit every request while they last (the store unreachable) are not logged
once but rate-limited: :class:`RateLimited` logs the first of each kind, then at most one
line per interval, each saying how many it left out meanwhile (those go to DEBUG).

Nothing here holds a lock another thread could hold when a worker forks (a child would
wait for it forever): both helpers rely on operations the interpreter performs atomically.

Session ids are bearer secrets (OWASP): log lines carry :func:`log_id`, a short digest that
lets an operator correlate lines without being able to replay the session.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from typing import Any

__all__ = [
    "CORRUPT",
    "LEGACY",
    "LOCK_TIMEOUT",
    "NEWER",
    "OUTAGES",
    "PROCESS",
    "Once",
    "RateLimited",
    "log_id",
    "logger",
]

#: The package's logger: configure it like any other (``logging.getLogger(...)``). Every
#: module of the package logs through this object.
logger = logging.getLogger("flask_beaker_session")

#: Message kinds logged once (then at DEBUG).
CORRUPT = "corrupt"
UNAUTHENTICATED = "unauthenticated"
NEWER = "newer"
LOCK_TIMEOUT = "lock-timeout"
LEGACY = "legacy"


def log_id(sid: str) -> str:
    """A short digest of a session id, for log lines (the id itself is a secret)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


class Once:
    """Logs each kind of message once at its level, and later occurrences at DEBUG."""

    def __init__(self) -> None:
        self._seen: dict[str, object] = {}

    def log(self, kind: str, level: int, msg: str, *args: Any) -> bool:
        """Logs ``msg % args``; True if this was the first message of ``kind``."""
        token = object()
        # ``dict.setdefault`` is atomic: exactly one caller finds its own token stored.
        first = self._seen.setdefault(kind, token) is token
        if first:
            logger.log(level, msg + " (reported once; repeats are logged at DEBUG)", *args)
        else:
            logger.debug(msg, *args)
        return first


class RateLimited:
    """Logs each kind of message at most once per ``interval`` seconds at its level; the
    ones in between go to DEBUG, and the next logged line says how many there were."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        #: kind -> (end of the current window, counter of messages left out in it)
        self._windows: dict[str, tuple[float, itertools.count[int]]] = {}

    def log(self, kind: str, level: int, msg: str, *args: Any) -> bool:
        """Logs ``msg % args`` unless a message of ``kind`` was logged less than
        ``interval`` seconds ago; True if it was logged at ``level``."""
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is not None and now < window[0]:
            next(window[1])  # atomic: concurrent requests lose no count
            logger.debug(msg, *args)
            return False
        self._windows[kind] = (now + self.interval, itertools.count())
        left_out = next(window[1]) if window is not None else 0
        if left_out:
            msg += " (%d more in the last %.0f s not logged at this level; see DEBUG)"
            args = (*args, left_out, self.interval)
        logger.log(level, msg, *args)
        return True


#: For code paths without an application (start-up checks, the CLI).
PROCESS = Once()
#: Store outages of this process (one shared server, whichever app uses it).
OUTAGES = RateLimited()
