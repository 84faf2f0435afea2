"""The ``flask_beaker_session`` logger and its "once" helper.

Problems that recur on every request (a corrupt record, a lock timeout, a session migrated
from the original package) are worth one warning, not a flood: :class:`Once` logs the first
occurrence of each kind at its level and the later ones at DEBUG, so nothing is lost for
whoever turns DEBUG on. Each application's session interface has its own :class:`Once`
(in a worker process that serves one app: once per process). :data:`PROCESS` reports the
insecure settings found by ``init_app`` (no ``SECRET_KEY``, a data dir writable by others)
once per process however many apps are created, and serves code with no app at hand.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

#: The package's logger: configure it like any other (``logging.getLogger(...)``).
logger = logging.getLogger("flask_beaker_session")

#: Message kinds logged once (then at DEBUG).
CORRUPT = "corrupt"
NEWER = "newer"
LOCK_TIMEOUT = "lock-timeout"
LEGACY = "legacy"


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


#: For code paths without an application (tools calling the helpers directly).
PROCESS = Once()
