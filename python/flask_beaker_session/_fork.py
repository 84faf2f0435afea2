"""What a forked child must do before it serves anything: one ``os.register_at_fork``.

A pre-fork server (gunicorn, uWSGI) forks after the app was created, sometimes after it
served requests. In the child, the threads of the parent are gone: locks they held would
never be released, and pooled connections and descriptors are shared with the parent. So
the child first resets the native core (:func:`_core.reset_after_fork`), then runs the
callbacks subscribed here, in subscription order (restart the sweeper thread, warn about
memory sessions). Modules subscribe with :func:`on_fork_in_child` instead of registering
their own hooks, so the order is written down in one place: the core first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from . import _core

__all__ = ["FORKS", "Forks", "ProcessThread", "on_fork_in_child"]

_callbacks: list[Callable[[], None]] = []


class Forks:
    """The fork count of this process, as an attribute: code on the request path compares
    it with a remembered value without a function call."""

    #: How many forks led to this process (0 in the process that imported the package).
    generation = 0


#: This process's fork count.
FORKS = Forks()


def on_fork_in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Runs ``callback`` in every child forked from now on, after the core was reset.

    Returns ``callback``, so it can be used as a decorator.
    """
    _callbacks.append(callback)
    return callback


class ProcessThread:
    """One daemon thread per process running ``run(stop)``, started on demand.

    :meth:`ensure_started` is cheap once the thread runs (the request path calls it, or
    compares :attr:`started_in` with ``FORKS.generation`` itself); in a forked child, where
    the parent's thread does not exist, the next call starts the child's own (its owner
    calls :meth:`after_fork` in the child first). ``stop`` is the thread's
    :class:`threading.Event`, set by :meth:`stop`.
    """

    def __init__(self, name: str, run: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._run = run
        #: The fork generation whose process runs the thread (-1: none yet).
        self.started_in = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def ensure_started(self) -> None:
        """Starts this process's thread if it has none."""
        generation = FORKS.generation
        if self.started_in == generation:
            return
        with self._lock:
            if self.started_in == generation:
                return
            self.started_in = generation
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(self._stop,), name=self.name, daemon=True
            )
            thread.start()

    def stop(self) -> None:
        """Asks this process's thread to end."""
        self._stop.set()

    def after_fork(self) -> None:
        """In a forked child: forgets the parent's lock (a thread of the parent may have
        held it at the fork: it never returns here)."""
        self._lock = threading.Lock()


def _after_fork_in_child() -> None:
    FORKS.generation += 1
    _core.reset_after_fork()
    for callback in list(_callbacks):
        callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
