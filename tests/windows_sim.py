"""A Linux approximation of what Windows lacks, to keep the ``posix_only`` marking honest.

The Python suite runs on Windows only in the release workflow; a test module that imports
``fcntl`` or ``pwd``, or reads ``signal.SIGKILL`` at import time, breaks the whole run
there (a collection error fails pytest). :func:`simulate` makes this process look like
Windows to Python code: the POSIX-only standard modules cannot be imported, and the
POSIX-only functions and constants of ``os`` and ``signal`` are gone. It does not emulate
Windows file semantics (locks, deletion, modes, symlinks): those tests are marked by hand
(``tests/conftest.py``). The package's native core is the Linux one; only its Python
glue is exercised.

Run as a script, it simulates and then runs pytest with the given arguments::

    python tests/windows_sim.py --collect-only -q      # what test_windows_sim.py does
    python tests/windows_sim.py -m "not posix_only"    # the whole portable suite

Under simulation ``os.fork`` is missing, so ``conftest.POSIX`` is False and every
``posix_only`` test is skipped, as on Windows.
"""

from __future__ import annotations

# Besides what is used here: modules whose Linux branch imports or calls what Windows
# lacks, where Windows takes another branch (click's terminal code: termios here, msvcrt
# there; multiprocessing: statvfs, _posixshmem, pthread_sigmask). They are imported before
# simulate() removes those, as on Windows they import fine.
import multiprocessing
import multiprocessing.heap
import multiprocessing.popen_fork
import multiprocessing.resource_tracker
import multiprocessing.synchronize
import os
import signal
import subprocess
import sys

import _pytest.tmpdir
import click._termui_impl  # noqa: F401

#: Standard modules that do not exist on Windows (``pty`` and ``tty`` import ``termios``).
POSIX_MODULES = (
    "fcntl",
    "grp",
    "pwd",
    "pty",
    "resource",
    "syslog",
    "termios",
    "tty",
)

#: ``os`` functions and constants that Windows' ``os`` does not have.
POSIX_OS_NAMES = (
    "fork",
    "forkpty",
    "register_at_fork",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getgroups",
    "getpgid",
    "getsid",
    "setsid",
    "setpgid",
    "killpg",
    "chown",
    "fchown",
    "lchown",
    "mkfifo",
    "mknod",
    "openpty",
    "pread",
    "pwrite",
    "wait",
    "wait3",
    "wait4",
    "O_NOFOLLOW",
    "O_DIRECTORY",
    "O_CLOEXEC",
    "sched_getaffinity",
    "getloadavg",
)

#: ``signal`` names that Windows' ``signal`` does not have (it has SIGINT, SIGTERM,
#: SIGABRT, SIGFPE, SIGILL, SIGSEGV, SIGBREAK and the CTRL_* events).
POSIX_SIGNAL_NAMES = (
    "SIGALRM",
    "SIGBUS",
    "SIGCHLD",
    "SIGCLD",
    "SIGCONT",
    "SIGHUP",
    "SIGIO",
    "SIGKILL",
    "SIGPIPE",
    "SIGPOLL",
    "SIGPROF",
    "SIGPWR",
    "SIGQUIT",
    "SIGRTMAX",
    "SIGRTMIN",
    "SIGSTOP",
    "SIGSYS",
    "SIGTRAP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGUSR1",
    "SIGUSR2",
    "SIGVTALRM",
    "SIGWINCH",
    "SIGXCPU",
    "SIGXFSZ",
    "alarm",
    "pause",
    "setitimer",
    "getitimer",
)


def simulate() -> None:
    """Makes this process look like Windows to Python code (irreversibly: run it in a
    process of its own)."""
    # What the standard library and pytest do differently on Windows keeps working:
    # subprocess and multiprocessing kill with SIGKILL on POSIX (TerminateProcess on
    # Windows), and pytest's tmp_path asks for no uid there.
    sigkill = signal.SIGKILL
    subprocess.Popen.kill = lambda self: self.send_signal(sigkill)  # type: ignore[method-assign]
    multiprocessing.popen_fork.Popen.kill = (  # type: ignore[method-assign]
        lambda self: self._send_signal(sigkill)
    )
    _pytest.tmpdir.get_user_id = lambda: None  # type: ignore[attr-defined]
    # Windows has no fork: multiprocessing's default there is spawn.
    multiprocessing.set_start_method("spawn", force=True)
    for name in POSIX_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    for name in POSIX_OS_NAMES:
        if hasattr(os, name):
            delattr(os, name)
    for name in POSIX_SIGNAL_NAMES:
        if hasattr(signal, name):
            delattr(signal, name)


if __name__ == "__main__":
    simulate()
    import pytest

    sys.exit(pytest.main(sys.argv[1:]))
