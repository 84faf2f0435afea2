"""Benchmark: this package vs. the original (Beaker), Flask-Session, Flask's cookie.

    python bench/run.py [--quick] [--impls ours,original,...] [--no-readme]

Builds (and caches) one virtualenv per implementation, runs the same Flask app in each,
interleaves the implementations round by round, prints a markdown table and writes the
raw numbers and their summary to ``bench/results/<timestamp>.json``. A full run that
covers every implementation also rewrites the results section of ``bench/README.md``.
See ``bench/README.md`` for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import envs
import load
import report
import syscalls
from envs import BENCH, REPO, log
from impls import IMPLS

RESULTS = BENCH / "results"
#: Longest any single worker command may take before the run is aborted (s).
COMMAND_TIMEOUT = 900


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    rounds: int
    requests: int
    rewrite_requests: int
    syscall_requests: int
    store_sizes: tuple[int, ...]
    store_rounds: int
    store_requests: int
    populate_ms_per_session: float
    survivor_sample: int
    load_workers: tuple[int, ...]
    load_rounds: int
    load_seconds: float
    load_max_requests: int
    load_sessions: int
    floor_iterations: int


PLANS = {
    "quick": Plan(
        rounds=3,
        requests=100,
        rewrite_requests=50,
        syscall_requests=50,
        store_sizes=(1_000, 10_000),
        store_rounds=3,
        store_requests=100,
        populate_ms_per_session=1.0,
        survivor_sample=1_000,
        load_workers=(2, 4),
        load_rounds=1,
        load_seconds=1.5,
        load_max_requests=50_000,
        load_sessions=1_000,
        floor_iterations=500,
    ),
    "full": Plan(
        rounds=9,
        requests=300,
        rewrite_requests=200,
        syscall_requests=200,
        store_sizes=(1_000, 10_000, 100_000),
        store_rounds=5,
        store_requests=300,
        populate_ms_per_session=1.5,
        survivor_sample=5_000,
        load_workers=(2, 4),
        load_rounds=2,
        load_seconds=6.0,
        load_max_requests=200_000,
        load_sessions=1_000,
        floor_iterations=2_000,
    ),
}


def rotated(names: list[str], offset: int) -> list[str]:
    """The implementations in round ``offset``'s order (each goes first in turn)."""
    k = offset % len(names)
    return names[k:] + names[:k]


class Worker:
    """A ``worker.py serve`` process in one implementation's venv."""

    def __init__(self, name: str, python: Path, data_dir: Path) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [str(python), str(BENCH / "worker.py"), "serve", name, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=BENCH,
        )
        self._read()  # the "ready" line

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], COMMAND_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"worker {self.name} died or timed out")
        return dict(json.loads(line))

    def call(self, op: str, **kwargs: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"worker {self.name}, {op}: {answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write('{"op": "exit"}\n')
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def workers(pythons: dict[str, Path], label: str) -> Iterator[dict[str, Worker]]:
    """One serving worker per implementation, each on a fresh data dir."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
    started: dict[str, Worker] = {}
    try:
        for name, python in pythons.items():
            started[name] = Worker(name, python, root / name)
        yield started
    finally:
        for worker in started.values():
            worker.close()
        shutil.rmtree(root, ignore_errors=True)


# -- phases -------------------------------------------------------------------------


def run_floor(plan: Plan) -> dict[str, Any]:
    """Compiles and runs ``floor/floor.c`` on the filesystem the data dirs use."""
    binary = envs.VENVS / "floor"
    envs.VENVS.mkdir(exist_ok=True)
    source = BENCH / "floor" / "floor.c"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as directory:
        out = subprocess.run(
            [str(binary), directory, str(plan.floor_iterations)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return dict(json.loads(out))


def run_micro(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    """Test-client scenarios, interleaved: round r starts with implementation r."""
    names = list(pythons)
    rounds: list[dict[str, Any]] = []
    with workers(pythons, "micro") as pool:
        for r in range(plan.rounds):
            log(f"micro round {r + 1}/{plan.rounds}")
            order = rotated(names, r)
            results = {
                name: pool[name].call("micro", n=plan.requests) for name in order
            }
            rounds.append({"order": order, "results": results})
        rewrite = {
            name: pool[name].call("rewrite_check", n=plan.rewrite_requests)
            for name in names
        }
    return {"rounds": rounds, "rewrite": rewrite}


def run_store(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    """Existing- and new-session cost as the store grows; then who lost sessions."""
    servers = {n: p for n, p in pythons.items() if IMPLS[n].server_side}
    active = list(servers)
    sizes: list[dict[str, Any]] = []
    with workers(servers, "store") as pool:
        for size in plan.store_sizes:
            populate = {}
            for name in list(active):
                budget = max(20.0, size * plan.populate_ms_per_session / 1000)
                log(f"store {size}: populating {name} (budget {budget:.0f} s)")
                populate[name] = pool[name].call(
                    "populate", total=size, budget_s=budget
                )
                if populate[name]["stalled"]:
                    active.remove(name)
            rounds = []
            for r in range(plan.store_rounds):
                order = [n for n in rotated(list(servers), r) if n in active]
                rounds.append(
                    {
                        "order": order,
                        "results": {
                            name: pool[name].call("store_round", n=plan.store_requests)
                            for name in order
                        },
                    }
                )
            survivors = {
                name: pool[name].call("survivors", sample=plan.survivor_sample)
                for name in populate
            }
            sizes.append(
                {
                    "size": size,
                    "populate": populate,
                    "rounds": rounds,
                    "survivors": survivors,
                }
            )
    return {"sizes": sizes}


def run_syscalls(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    if not shutil.which("strace"):
        log("strace not found: syscall counts skipped (apt-get install strace)")
        return {}
    results = {}
    for name, python in pythons.items():
        log(f"syscalls: {name}")
        results[name] = syscalls.trace(python, name, plan.syscall_requests)
    return results


def run_gunicorn(pythons: dict[str, Path], plan: Plan) -> list[dict[str, Any]]:
    names = list(pythons)
    runs = []
    turn = 0
    for workers_count in plan.load_workers:
        for sessions in (plan.load_sessions, 1):
            for r in range(plan.load_rounds):
                for name in rotated(names, turn):
                    log(f"gunicorn -w {workers_count}, {sessions} session(s): {name}")
                    result = load.load_run(
                        pythons[name],
                        IMPLS[name],
                        workers_count,
                        sessions,
                        plan.load_seconds,
                        plan.load_max_requests,
                    )
                    runs.append({"impl": name, "round": r, **result})
                turn += 1
    return runs


# -- bookkeeping --------------------------------------------------------------------


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": str(bool(git("status", "-s")))}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 3 min)")
    parser.add_argument(
        "--impls",
        default=",".join(IMPLS),
        help="comma-separated subset of: " + ", ".join(IMPLS),
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="never rewrite bench/README.md"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to skip: floor,micro,syscalls,store,gunicorn",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    names = [n for n in args.impls.split(",") if n]
    unknown = set(names) - set(IMPLS)
    if unknown:
        raise SystemExit(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    skip = set(filter(None, args.skip.split(",")))
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in argv)
    started = time.monotonic()
    pythons = envs.ensure_all(names)
    log(f"venvs ready ({time.monotonic() - started:.0f} s); {mode} run")
    measured = time.monotonic()
    results: dict[str, Any] = {
        "command": command.strip(),
        "mode": mode,
        "plan": asdict(plan),
        "impls": {n: IMPLS[n].label for n in names},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_state(),
        "source_digest": envs.source_digest(),
        "versions": {n: envs.freeze(p) for n, p in pythons.items()},
    }
    phases: dict[str, Callable[[], Any]] = {
        "floor": lambda: run_floor(plan),
        "micro": lambda: run_micro(pythons, plan),
        "syscalls": lambda: run_syscalls(pythons, plan),
        "store": lambda: run_store(pythons, plan),
        "gunicorn": lambda: run_gunicorn(pythons, plan),
    }
    for phase, run in phases.items():
        if phase not in skip:
            log(f"phase {phase}")
            results[phase] = run()
    results["seconds"] = time.monotonic() - measured
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["summary"] = report.summarise(results)
    table = report.markdown(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    log(f"measured in {results['seconds']:.0f} s; results in {out.relative_to(REPO)}")
    complete = not skip and set(names) == set(IMPLS)
    if mode == "full" and complete and not args.no_readme:
        report.update_readme(BENCH / "README.md", table, results)
        log("bench/README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
