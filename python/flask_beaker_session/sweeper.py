"""The opt-in automatic sweep (``SESSION_SWEEP_INTERVAL``).

Each worker process runs one daemon thread that wakes every interval and asks the core to
sweep *if due*: a ``flock`` on ``<data_dir>/sweep.stamp`` elects one process, and the
stamp's mtime makes every other process skip until the next interval, so the store is swept
at most once per interval however many workers share it. The sweep itself runs in Rust with
the GIL released; no request ever waits for it.

Fork safety: no thread exists before a pre-fork server forks. The thread starts right
after a fork in the child (``os.register_at_fork``), or, in a server that does not fork, at
the first request — detected by comparing a fork generation counter, not by ``getpid()``, so
the per-request check costs no system call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from . import _core

logger = logging.getLogger("flask_beaker_session")

_fork_generation = 0
_sweepers: weakref.WeakSet[AutoSweeper] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    for sweeper in list(_sweepers):
        # A thread of the parent may have held the lock at the fork: it never returns here.
        sweeper._lock = threading.Lock()
        sweeper.ensure_started()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class AutoSweeper:
    """Sweeps one store in the background of every process that uses it."""

    def __init__(self, store: _core.Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._generation = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.last_report: dict[str, Any] | None = None
        _sweepers.add(self)

    def ensure_started(self) -> None:
        """Starts this process's thread if it has none (cheap when it has)."""
        if self._generation == _fork_generation:
            return
        with self._lock:
            if self._generation == _fork_generation:
                return
            self._generation = _fork_generation
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._run, name="flask-beaker-session-sweeper", daemon=True
            )
            thread.start()

    def stop(self) -> None:
        """Stops this process's thread (for tests and clean shutdowns)."""
        self._stop.set()

    def sweep_once(self) -> dict[str, Any] | None:
        """Sweeps now if no process did in the last interval; returns the counts."""
        # One thread: a background sweep must not compete with requests for every core.
        report = self.store.sweep_if_due(time.time(), self.interval, 1)
        if report is not None:
            self.last_report = report
            logger.info(
                "swept %s: removed %d expired, %d corrupt, %d temporary; %d live",
                self.store.data_dir,
                report["expired"],
                report["corrupt"],
                report["temp"],
                report["live"],
            )
        return report

    def _run(self) -> None:
        stop = self._stop
        # A short first wait, so a process that starts after a long pause sweeps soon; the
        # stamp prevents a burst when many workers start together.
        wait = min(self.interval, 5.0)
        while not stop.wait(wait):
            try:
                self.sweep_once()
            except Exception:  # keep sweeping: a failed pass must not end the thread
                logger.exception("automatic sweep of %s failed", self.store.data_dir)
            wait = self.interval
