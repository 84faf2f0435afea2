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
from collections.abc import Callable

from . import _core

__all__ = ["FORKS", "Forks", "on_fork_in_child"]

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


def _after_fork_in_child() -> None:
    FORKS.generation += 1
    _core.reset_after_fork()
    for callback in list(_callbacks):
        callback()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
