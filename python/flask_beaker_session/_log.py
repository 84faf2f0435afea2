"""The package's one logger, its "once" helper, and how ids appear in log lines.

Problems that recur on every request (a corrupt record, a lock timeout, a session migrated
from the original package) are worth one warning, not a flood: :class:`Once` logs the first
occurrence of each kind at its level and the later ones at DEBUG, so nothing is lost for
whoever turns DEBUG on. Each application has its own :class:`Once` (in a worker process
that serves one app: once per process). :data:`PROCESS` reports the insecure settings found
by ``init_app`` (no ``SECRET_KEY``, a data dir writable by others) once per process however
many apps are created, and serves code with no app at hand (the CLI).

Session ids are bearer secrets (OWASP): log lines carry :func:`log_id`, a short digest that
lets an operator correlate lines without being able to replay the session.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

__all__ = ["CORRUPT", "LEGACY", "LOCK_TIMEOUT", "NEWER", "PROCESS", "Once", "log_id", "logger"]

#: The package's logger: configure it like any other (``logging.getLogger(...)``). Every
#: module of the package logs through this object.
logger = logging.getLogger("flask_beaker_session")

#: Message kinds logged once (then at DEBUG).
CORRUPT = "corrupt"
NEWER = "newer"
LOCK_TIMEOUT = "lock-timeout"
LEGACY = "legacy"


def log_id(sid: str) -> str:
    """A short digest of a session id, for log lines (the id itself is a secret)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


class Once:
    """Logs each kind of message once at its level, and later occurrences at DEBUG."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def log(self, kind: str, level: int, msg: str, *args: Any) -> bool:
        """Logs ``msg % args``; True if this was the first message of ``kind``."""
        with self._lock:
            first = kind not in self._seen
            self._seen.add(kind)
        if first:
            logger.log(level, msg + " (reported once; repeats are logged at DEBUG)", *args)
        else:
            logger.debug(msg, *args)
        return first


#: For code paths without an application (start-up checks, the CLI).
PROCESS = Once()
