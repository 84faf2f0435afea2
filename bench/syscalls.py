"""Syscalls per request, counted with ``strace -f`` between marker syscalls.

``worker.py syscalls`` warms every route up, then runs each scenario N times between
two ``stat("/nonexistent-bench-marker/<scenario>/start|end")`` calls. Counting the
syscalls between the markers gives exact per-request figures for each scenario in one
traced process; the session-free route without cookie is the baseline, so
``scenario - baseline`` is what the session layer costs.

An ``open``/``openat`` that creates a file (``O_CREAT``) is counted as
``openat+O_CREAT`` (``open+O_CREAT``), so that files created per request show apart
from files opened; ``writes`` are the calls that write data (``write``, ``pwrite64``,
...), whatever the target.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from envs import BENCH

SCENARIOS = ("free", "free_cookie", "read_only", "read_write", "new_session")
#: Calls that write data to a file (or any descriptor).
WRITE_SYSCALLS = frozenset(("write", "pwrite64", "writev", "pwritev", "pwritev2"))
#: Syscalls that touch the filesystem (what "zero syscalls" and "rewrite" are about).
# fmt: off
FILE_SYSCALLS = frozenset(
    (
        "open", "openat", "openat2", "creat", "close", "read", "pread64", "readv",
        "preadv", "write", "pwrite64", "writev", "pwritev", "stat", "lstat", "fstat",
        "newfstatat", "statx", "access", "faccessat", "faccessat2", "flock", "fcntl",
        "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat",
        "rmdir", "ftruncate", "truncate", "fsync", "fdatasync", "getdents64", "lseek",
        "chmod", "fchmod", "fchmodat", "utimensat", "futimesat", "link", "linkat",
        "symlink", "readlink", "readlinkat", "open+O_CREAT", "openat+O_CREAT",
    )
)
# fmt: on
_CALL = re.compile(r"^(?:\d+\s+)?([a-z_0-9]+)\(")
_MARKER = re.compile(r'"/nonexistent-bench-marker/([A-Za-z_0-9]+)/(start|end)"')
_OPENS = frozenset(("open", "openat", "openat2"))


def trace(
    python: Path, impl: str, n: int, scenarios: tuple[str, ...] = SCENARIOS
) -> dict[str, Any]:
    """Per-request syscall counts of each scenario (``free`` first: the baseline)
    for ``impl``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-strace-{impl}-") as tmp:
        log_file = Path(tmp) / "trace"
        command = [
            "strace", "-f", "-qq", "-s", "80", "-o", str(log_file),
            str(python), str(BENCH / "worker.py"), "syscalls", impl,
            str(Path(tmp) / "data"), ",".join(scenarios), str(n),
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=BENCH, timeout=600)
        counts = count_between_markers(log_file.read_text(errors="replace"))
    return per_request(counts, n)


def count_between_markers(text: str) -> dict[str, Counter[str]]:
    """Syscall name counts between each scenario's start and end marker."""
    counts: dict[str, Counter[str]] = {}
    current: Counter[str] | None = None
    for line in text.splitlines():
        marker = _MARKER.search(line)
        if marker:
            scenario, edge = marker.groups()
            current = (
                counts.setdefault(scenario, Counter()) if edge == "start" else None
            )
            continue
        if current is None or "resumed>" in line:
            continue
        call = _CALL.match(line)
        if call:
            name = call.group(1)
            if name in _OPENS and "O_CREAT" in line:
                name += "+O_CREAT"
            current[name] += 1
    return counts


def per_request(counts: dict[str, Counter[str]], n: int) -> dict[str, Any]:
    """Totals, file-syscall totals and the session layer's share, per request."""
    baseline = counts.get("free", Counter())
    result: dict[str, Any] = {}
    for scenario, counter in counts.items():
        extra = counter.copy()
        extra.subtract(baseline)
        result[scenario] = {
            "total": sum(counter.values()) / n,
            "file": sum(v for k, v in counter.items() if k in FILE_SYSCALLS) / n,
            "session_layer": sum(extra.values()) / n,
            "session_layer_file": sum(v for k, v in extra.items() if k in FILE_SYSCALLS)
            / n,
            "writes": sum(v for k, v in counter.items() if k in WRITE_SYSCALLS) / n,
            "session_layer_writes": sum(
                v for k, v in extra.items() if k in WRITE_SYSCALLS
            )
            / n,
            "by_name": {k: round(v / n, 3) for k, v in sorted(extra.items()) if v},
        }
    return result
