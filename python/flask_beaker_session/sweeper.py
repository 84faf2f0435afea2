"""The automatic sweep (``SESSION_SWEEP_INTERVAL``, on by default: every 600 s).

Each worker process runs one daemon thread that wakes every interval and asks the core to
sweep *if due*: a ``flock`` on ``<data_dir>/sweep.stamp`` elects one process, and the
stamp's mtime makes every other process skip until the next interval, so the store is swept
at most once per interval however many workers share it (and however often they restart:
the stamp outlives them). The sweep itself runs in Rust with the GIL released, on one
thread; no request ever waits for it.

Per backend: files as above; a memory store is its process's own, so each process sweeps
it every interval; Redis expires keys itself, so no thread is started (``config.load``
gives Redis apps no interval). ``None``, ``0`` or ``False`` turn it off.

Fork safety: no thread exists before a pre-fork server forks. The thread starts right
after a fork in the child (subscribed through :mod:`flask_beaker_session._fork`), or, in a
server that does not fork, at the first request — detected by comparing the fork
generation, not by ``getpid()``, so the per-request check costs no system call.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from . import _core, _fork
from ._log import PROCESS, logger
from .metrics import Metrics
from .store import Clock

__all__ = ["AutoSweeper", "stop_all"]

_sweepers: weakref.WeakSet[AutoSweeper] = weakref.WeakSet()


@_fork.on_fork_in_child
def _restart_in_child() -> None:
    for sweeper in list(_sweepers):
        sweeper.restart_after_fork()


def report_obstacles(store: _core.Store, report: _core.Report) -> None:
    """Warns once per process about what a walk found and left alone: symlinks where the
    store's directories belong (never followed) and entries it never writes."""
    if report.symlinks or report.foreign:
        PROCESS.log(
            "confinement",
            logging.WARNING,
            "%s: %d symlinks where the store's directories or records belong (never "
            "followed) and %d entries this package did not write (left alone); see "
            "`flask beaker-session stats`",
            store.data_dir,
            report.symlinks,
            report.foreign,
        )


def stop_all() -> None:
    """Stops the sweeper thread of every app of this process (tests, clean shutdowns)."""
    for sweeper in list(_sweepers):
        sweeper.stop()


class AutoSweeper:
    """Sweeps one store in the background of every process that uses it."""

    def __init__(
        self,
        store: _core.Store,
        interval: float,
        clock: Clock,
        metrics: Metrics | None = None,
        index_grace: float | None = None,
    ) -> None:
        #: The store swept.
        self.store = store
        #: Seconds between sweeps.
        self.interval = interval
        #: Where "now" comes from (the app's clock, read at each sweep).
        self.clock = clock
        #: Where each sweep is counted (``SESSION_METRICS``), or None.
        self.metrics = metrics
        #: With ``SESSION_USER_KEY``: how old a stale index entry must be to be removed
        #: after each sweep (:func:`flask_beaker_session.users.index_grace`); None: no index.
        self.index_grace = index_grace
        #: The counts of the last sweep this process ran, or None.
        self.last_report: _core.Report | None = None
        #: This process's sweeping thread; ``thread.started_in`` (the fork generation
        #: whose process runs it) is compared on every request without a call.
        self.thread = _fork.ProcessThread("flask-beaker-session-sweeper", self._run)
        _sweepers.add(self)

    def ensure_started(self) -> None:
        """Starts this process's thread if it has none (cheap when it has)."""
        self.thread.ensure_started()

    def restart_after_fork(self) -> None:
        """Starts the thread in a forked child (the parent's does not exist there)."""
        self.thread.after_fork()
        self.thread.ensure_started()

    def stop(self) -> None:
        """Stops this process's thread (for tests and clean shutdowns)."""
        self.thread.stop()

    def sweep_once(self) -> _core.Report | None:
        """Sweeps now if no process did in the last interval; returns the counts."""
        # One thread: a background sweep must not compete with requests for every core.
        started = time.perf_counter()
        now = self.clock()
        report = self.store.sweep_if_due(now, self.interval, 1)
        if report is not None and self.index_grace is not None:
            # After the records: entries whose expired record just went go too.
            self.store.index_sweep(now, self.index_grace)
        if report is not None:
            if self.metrics is not None:
                self.metrics.swept(report, time.perf_counter() - started)
            self.last_report = report
            logger.info(
                "swept %s: removed %d expired, %d corrupt, %d temporary; %d live",
                self.store.data_dir,
                report.expired,
                report.corrupt,
                report.temp,
                report.live,
            )
            report_obstacles(self.store, report)
        return report

    def _run(self, stop: threading.Event) -> None:
        # A short first wait, so a process that starts after a long pause sweeps soon; the
        # stamp prevents a burst when many workers start together.
        wait = min(self.interval, 5.0)
        while not stop.wait(wait):
            try:
                self.sweep_once()
            except Exception:  # keep sweeping: a failed pass must not end the thread
                logger.exception("automatic sweep of %s failed", self.store.data_dir)
            wait = self.interval
