"""Lets ``make demo`` end cleanly on Ctrl-C.

Ctrl-C sends SIGINT to the terminal's foreground process group, which holds ``make`` as
well as the server; make then dies of the signal and reports an error (``Error 130``, or
``Error 143`` for SIGTERM) although the server stopped as asked. Run inside
:func:`foreground_job`, the server takes its own process group and makes it the
terminal's foreground: Ctrl-C reaches only the server, which stops and exits with status
0, the terminal is handed back, and make finishes normally. SIGTERM sent to the server
stops it the same way. Without a terminal (CI, a pipe) nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # werkzeug's server stops on it and returns normally


@contextlib.contextmanager
def foreground_job() -> Iterator[None]:
    """Runs the body as the terminal's foreground job (see the module docstring)."""
    signal.signal(signal.SIGTERM, _stop)
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:  # no controlling terminal
        yield
        return
    try:
        parent_group = os.tcgetpgrp(tty)
        if parent_group != os.getpgrp():  # started in the background: leave it alone
            yield
            return
        # Changing the terminal's foreground group from outside it raises SIGTTOU.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.setpgid(0, 0)
            os.tcsetpgrp(tty, os.getpgrp())
            try:
                yield
            finally:
                os.tcsetpgrp(tty, parent_group)
        finally:
            signal.signal(signal.SIGTTOU, previous)
    finally:
        os.close(tty)
