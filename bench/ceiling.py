"""The session-free ceiling under a real server (issue 21): gunicorn, ``wrk`` and the
same cookies on two routes of one server.

``/rw`` increments the session's counter; ``/free`` does not touch the session but gets
the same cookie, so the difference between the two is what the session costs the
server, everything else (gunicorn, Flask, the socket, the client) being equal. The ratio
``rw ÷ free`` is the share of the ceiling the session leaves (1.0: free).

Each repetition runs ``rw, free, free, rw`` (the next one ``free, rw, rw, free``), so
drift in the machine's speed weighs on both routes alike; the *A/A* figure compares the
first and the second run of each route within the repetitions (1.00: they agree), which
is how far two runs of the same thing drift apart here. ``null`` (``impls.py``), a
process-local dict behind Flask's ``SessionInterface``, is the ideal store: its ratio is
the best a session that is used can reach, what Flask's session proxy, the view's own
work and ``Vary: Cookie`` cost with nothing stored. The sessions are created in
process (``worker.py populate`` into the data dir) before gunicorn starts, so the
runs only measure serving them.

Standalone::

    python bench/ceiling.py [--impls ours,null] [--baseline REF]
                            [--sessions 1000,100000]
                            [--configs sync:2,sync:4,gthread:2x4]
                            [--seconds 5] [--reps 2]

``run.py`` runs it as its ``ceiling`` phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpu
import load
from impls import IMPLS

BENCH = Path(__file__).resolve().parent
SCRIPT = BENCH / "ceiling.lua"
#: wrk's own threads and connections (the issue's ``wrk -c16``).
WRK_THREADS = 2
WRK_CONNECTIONS = 16
#: Before the measured runs: every worker forked, imported and warmed on both routes.
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class Config:
    """One gunicorn set-up: ``sync:4`` (4 sync workers) or ``gthread:2x4`` (2 workers
    of 4 threads)."""

    worker_class: str
    workers: int
    threads: int = 1

    @classmethod
    def parse(cls, text: str) -> Config:
        kind, _, size = text.partition(":")
        workers, _, threads = size.partition("x")
        return cls(kind, int(workers), int(threads or 1))

    @property
    def label(self) -> str:
        size = (
            f"{self.workers}x{self.threads}" if self.threads > 1 else str(self.workers)
        )
        return f"{self.worker_class}:{size}"


def available() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    port: int, path: str, cookie_name: str, ids: Path, seconds: float
) -> dict[str, Any]:
    """One ``wrk`` run; its figures as a dict (errors: non-2xx plus socket errors)."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{WRK_CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(SCRIPT),
            f"http://{load.HOST}:{port}",
            "--",
            path,
            cookie_name,
            str(ids),
            str(WRK_THREADS),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "path": path,
        "req_per_s": float(rate.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, sockets.groups())) if sockets else 0,
    }


def serve_runs(
    python: Path,
    impl: str,
    data_dir: Path,
    ids: Path,
    config: Config,
    seconds: float,
    reps: int,
) -> dict[str, Any]:
    """One gunicorn server, ``reps`` ABBA blocks of ``/rw`` and ``/free``."""
    spec = IMPLS[impl]
    runs: list[dict[str, Any]] = []
    with load.gunicorn(
        python,
        spec,
        config.workers,
        worker_class=config.worker_class,
        threads=config.threads,
        data_dir=str(data_dir),
    ) as server:
        port = server.port
        for path in ("/rw", "/free"):
            wrk(port, path, spec.cookie_name, ids, WARMUP_SECONDS)
        # (After the warm-up: every worker forked.)
        meter = cpu.CpuMeter(cpu.children(server.pid))
        os.sync()
        for rep in range(reps):
            order = ("/rw", "/free") if rep % 2 == 0 else ("/free", "/rw")
            for position, path in enumerate((*order, *reversed(order))):
                started = meter.start()
                run = wrk(port, path, spec.cookie_name, ids, seconds)
                # The pages a run dirtied are written back now, inside its CPU account,
                # rather than by the kernel during the next run (which made a /free run
                # after a /rw run ~5 % slower than one after a /free run; 5-23 % with
                # gthread workers).
                os.sync()
                spent = meter.per_request(started, run["requests"])
                runs.append({"rep": rep, "half": position // 2, **run, "cpu_us": spent})
    return {"impl": impl, "config": config.label, "runs": runs, **summarise(runs)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``rw ÷ free`` per repetition (its median overall), and the A/A agreement: the
    first half's runs of each route against the second half's."""
    by_rep: dict[int, dict[str, list[float]]] = {}
    halves: dict[str, list[float]] = {}
    for run in runs:
        by_rep.setdefault(run["rep"], {}).setdefault(run["path"], []).append(
            run["req_per_s"]
        )
        halves.setdefault(f"{run['path']}#{run['half']}", []).append(run["req_per_s"])
    ratios = [
        statistics.mean(rep["/rw"]) / statistics.mean(rep["/free"])
        for rep in by_rep.values()
    ]
    rw = [r["req_per_s"] for r in runs if r["path"] == "/rw"]
    free = [r["req_per_s"] for r in runs if r["path"] == "/free"]
    # CPU µs per request that /rw spends beyond /free, by kind (median of each route).
    cpu: dict[str, float] | None = None
    if all(r.get("cpu_us") for r in runs):
        cpu = {
            kind: statistics.median(
                r["cpu_us"][kind] for r in runs if r["path"] == "/rw"
            )
            - statistics.median(r["cpu_us"][kind] for r in runs if r["path"] == "/free")
            for kind in runs[0]["cpu_us"]
        }
    return {
        "cpu_over_free_us": cpu,
        "rw_req_per_s": statistics.median(rw),
        "free_req_per_s": statistics.median(free),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "aa_rw": sum(halves["/rw#1"]) / sum(halves["/rw#0"]),
        "aa_free": sum(halves["/free#1"]) / sum(halves["/free#0"]),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }


def populate(python: Path, impl: str, data_dir: Path, sessions: int) -> Path:
    """Creates ``sessions`` sessions in ``data_dir`` through the app (in process);
    returns the file holding their ids."""
    from run import Worker  # the JSON-lines worker (run.py imports this module)

    worker = Worker(impl, python, data_dir)
    try:
        made = worker.call(
            "populate", total=sessions, budget_s=max(60.0, sessions / 500)
        )
        if made["stalled"]:
            raise RuntimeError(f"{impl}: populate stalled at {made['stored']}")
        ids = data_dir.parent / f"{data_dir.name}.ids"
        worker.call("write_ids", path=str(ids))
    finally:
        worker.close()
    return ids


def run(
    pythons: dict[str, Path],
    sessions: tuple[int, ...],
    configs: tuple[Config, ...],
    seconds: float,
    reps: int,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every implementation on every (sessions, config); implementations alternate
    within each config so that they share the machine's moods."""
    root = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    results = []
    try:
        for count in sessions:
            prepared = {}
            for impl, python in pythons.items():
                started = time.monotonic()
                data_dir = root / f"{impl}-{count}"
                prepared[impl] = (data_dir, populate(python, impl, data_dir, count))
                took = time.monotonic() - started
                log(f"ceiling: {count} sessions for {impl} in {took:.0f} s")
            for config in configs:
                for impl, python in pythons.items():
                    data_dir, ids = prepared[impl]
                    log(f"ceiling: {impl}, gunicorn {config.label}, {count} sessions")
                    result = serve_runs(
                        python, impl, data_dir, ids, config, seconds, reps
                    )
                    results.append({"sessions": count, **result})
            for data_dir, ids in prepared.values():
                shutil.rmtree(data_dir, ignore_errors=True)
                ids.unlink(missing_ok=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv: list[str]) -> int:
    import envs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--impls",
        default="ours,null",
        help="null: the ideal store (a process-local dict), the best ratio reachable",
    )
    parser.add_argument("--baseline", metavar="REF", help="also this package at REF")
    parser.add_argument("--sessions", default="1000")
    parser.add_argument("--configs", default="sync:2,sync:4")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    if not available():
        raise SystemExit("no wrk (apt-get install wrk)")
    names = args.impls.split(",")
    if args.baseline:
        import os

        os.environ[envs.BASELINE_ENV] = args.baseline
        names.append("baseline")
    pythons = envs.ensure_all(names)
    results = run(
        pythons,
        tuple(int(n) for n in args.sessions.split(",")),
        tuple(Config.parse(c) for c in args.configs.split(",")),
        args.seconds,
        args.reps,
    )
    out = BENCH / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-ceiling.json"
    out.write_text(json.dumps({"argv": argv, "results": results}, indent=1) + "\n")
    import report

    print(report.ceiling_table(results))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
