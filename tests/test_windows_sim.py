"""Keeps the ``posix_only`` marking honest on Linux (the Windows run is only in the release
workflow): with what Windows lacks made unavailable (``tests/windows_sim.py``: no
``fcntl``/``pwd``/``grp``/``resource``/``termios``/``pty``, no ``os.fork``,
``os.register_at_fork``, ``os.geteuid``, ``signal.SIGKILL``...), the package imports and
serves a request, its CLI runs, and every test module collects (a collection error would
fail the whole Windows run). ``python tests/windows_sim.py -m "not posix_only"`` runs
the rest of what Windows runs under the same simulation (about a minute; not part of
this module, which stays within seconds)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import TESTS_DIR

SIM = str(TESTS_DIR / "windows_sim.py")

_PACKAGE = """
import sys
sys.path.insert(0, sys.argv[1])
import windows_sim
windows_sim.simulate()
import os
assert not hasattr(os, "fork") and not hasattr(os, "register_at_fork")
from flask_beaker_session import _fork, cli
from helpers import build_app
app = build_app(sys.argv[2])
client = app.test_client()
assert client.get("/set/a/1").status_code == 200
assert client.get("/get/a").get_data(as_text=True) == "1"
result = app.test_cli_runner().invoke(args=["beaker-session", "stats"])
assert result.exit_code == 0, result.output
assert "sessions:        1" in result.output, result.output
print("ok", _fork.FORKS.generation)
"""


def test_package_imports_and_serves_without_posix(tmp_path: Path) -> None:
    """The package (``_fork`` registers no at-fork hook where there is no fork), a
    request through the file backend and ``flask beaker-session stats``."""
    done = subprocess.run(
        [sys.executable, "-c", _PACKAGE, str(TESTS_DIR), str(tmp_path / "sessions")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "0"]


def test_every_test_module_collects_without_posix() -> None:
    """Collection of the whole suite under the simulation: no error, the marker is
    registered (``--strict-markers``), and the POSIX-only tests are the ones Windows
    skips (deselected here by ``-m "not posix_only"``)."""
    args = ["--collect-only", "-q", "--strict-markers", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, SIM, *args, "-m", "not posix_only", str(TESTS_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS_DIR.parent,
    )
    tail = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, tail
    summary = done.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"(\d+)/(\d+) tests collected \((\d+) deselected\) in .*", summary)
    assert found is not None, tail
    portable, total, posix_only = (int(n) for n in found.groups())
    assert "error" not in summary
    # Sanity bounds, not exact counts: most of the suite runs on Windows, and the
    # POSIX-only part is not empty (servers, fork, modes).
    assert portable > total // 2 and posix_only > 50, summary
