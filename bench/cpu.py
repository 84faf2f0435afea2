"""CPU time read from ``/proc`` (Linux): per process and for the whole machine.

``ha_bench.py`` counts the Redis servers' CPU per request with it, ``ceiling.py`` splits
a gunicorn run's CPU per request by who spent it (:class:`CpuMeter`).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Seconds per clock tick, the unit of ``/proc``'s CPU times.
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
#: ``/proc/stat``'s fields counted as busy: user, nice, system, irq, softirq, steal.
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def machine_ticks() -> list[int] | None:
    """The machine's CPU ticks by kind (``/proc/stat``), or None without ``/proc``."""
    try:
        with open("/proc/stat") as stat:
            return [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_ticks(pid: int) -> tuple[int, int]:
    """A process's user and system CPU ticks so far (all its threads).

    :raises OSError: the process is gone.
    """
    fields = _stat_fields(pid)
    return int(fields[11]), int(fields[12])


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a gunicorn master's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile
    return found


class CpuMeter:
    """CPU time per request of one load run, split by who spent it (µs): the whole
    machine's busy time, ``pids``' (the workers') user and system time, and ``other``
    (the rest of the busy time: the load client, the kernel's network and writeback
    work, the master).

    Two routes' difference says where a session's cost goes; ``other`` is the part an
    instruction count inside the worker does not see."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids if machine_ticks() is not None else []

    def start(self) -> tuple[list[int] | None, list[tuple[int, int]]]:
        return machine_ticks(), [self._ticks(pid) for pid in self.pids]

    @staticmethod
    def _ticks(pid: int) -> tuple[int, int]:
        try:
            return process_ticks(pid)
        except OSError:
            return 0, 0

    def per_request(
        self, started: tuple[list[int] | None, list[tuple[int, int]]], requests: int
    ) -> dict[str, float] | None:
        """µs per request since ``started`` (what :meth:`start` returned); None without
        ``/proc``, workers or requests."""
        machine0, workers0 = started
        machine1, workers1 = self.start()
        if machine0 is None or machine1 is None or not self.pids or not requests:
            return None
        scale = TICK_S * 1e6 / requests
        busy = sum(machine1[i] - machine0[i] for i in BUSY_FIELDS) * scale
        user = sum(b[0] - a[0] for a, b in zip(workers0, workers1)) * scale
        system = sum(b[1] - a[1] for a, b in zip(workers0, workers1)) * scale
        return {
            "busy": busy,
            "workers_user": user,
            "workers_sys": system,
            "other": busy - user - system,
        }
