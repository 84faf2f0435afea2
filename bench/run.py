"""Benchmark: this package vs. the original (Beaker), Flask-Session, Flask's cookie.

    python bench/run.py [--quick] [--redis | --postgres | --variants]
                        [--impls ours,original,...] [--no-readme] [--baseline REF]

Builds (and caches) one virtualenv per implementation, runs the same Flask app in each,
interleaves the implementations round by round, prints a markdown table and writes the
raw numbers and their summary to ``bench/results/<timestamp>.json``. The last phase,
``redis``, compares this package's Redis store with Flask-Session's Redis backend on
one ``redis-server`` started for the run; ``--redis`` runs only that phase. A full run
that covers every file implementation rewrites the results section of
``bench/README.md``; a full run with the ``redis`` phase rewrites its Redis section.
``--variants`` runs only the ``variants`` phase: this package with encryption off, with
the per-user index, with metrics (each a ratio to ``ours`` in the same rounds), the
original and the cookie session, on the micro scenarios (a login among them) and the
syscall counter. See ``bench/README.md`` for the method.
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

import ceiling
import envs
import load
import pgbench
import redisbench
import report
import syscalls
from envs import BENCH, REPO, log
from impls import IMPLS, impl_names

RESULTS = BENCH / "results"
#: Longest any single worker command may take before the run is aborted (s).
COMMAND_TIMEOUT = 900
#: Micro scenarios of the Redis comparison (besides the baseline).
REDIS_SCENARIOS = ("free_cookie", "read_only", "read_write", "new_session", "rw_10KB")
#: Implementations of ``--variants`` (the default of its ``--impls``): ours, a second
#: worker of ours (``ours_aa``: the A/A spread every other ratio is read against), its
#: variants (ratios to ours), the original (issue 17's 1 MB target) and the cookie.
VARIANT_IMPLS = (
    "ours", "ours_aa", "ours_plain", "ours_index", "ours_metrics", "original", "cookie",
)  # fmt: skip
#: Micro scenarios of ``--variants`` (besides the baseline).
VARIANT_SCENARIOS = (
    "read_only", "read_write", "new_session", "login", "rw_user",
    "rw_1MB", "ro_small_key_1MB", "blob_1MB",
)  # fmt: skip
#: Scenarios whose syscalls ``--variants`` counts (``free``: the baseline).
VARIANT_SYSCALLS = (
    "free", "read_only", "read_write", "new_session", "login", "rw_user",
)  # fmt: skip


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
    redis_rounds: int
    redis_requests: int
    redis_load_workers: tuple[int, ...]
    redis_load_rounds: int
    variant_rounds: int
    #: The ceiling phase: (stored sessions, gunicorn set-ups) pairs, the seconds of
    #: each ``wrk`` run and the ABBA repetitions (``ceiling.py``).
    ceiling_runs: tuple[tuple[int, tuple[str, ...]], ...]
    ceiling_seconds: float
    ceiling_reps: int


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
        redis_rounds=3,
        redis_requests=100,
        redis_load_workers=(4,),
        redis_load_rounds=1,
        variant_rounds=3,
        ceiling_runs=((1_000, ("sync:2",)),),
        ceiling_seconds=2,
        ceiling_reps=1,
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
        redis_rounds=9,
        redis_requests=300,
        redis_load_workers=(4,),
        redis_load_rounds=2,
        variant_rounds=11,
        ceiling_runs=(
            (1_000, ("sync:2", "sync:4", "gthread:2x4")),
            (100_000, ("sync:2", "sync:4")),
        ),
        ceiling_seconds=5,
        ceiling_reps=2,
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
    """Test-client scenarios, interleaved; then the read-only rewrite check."""
    return micro_rounds(pythons, plan.rounds, plan.requests, "micro", rewrite=plan)


def micro_rounds(
    pythons: dict[str, Path],
    count: int,
    requests: int,
    label: str,
    only: tuple[str, ...] | None = None,
    rewrite: Plan | None = None,
    redis_cost: int = 0,
) -> dict[str, Any]:
    """``count`` interleaved rounds: round r starts with implementation r.

    Then either the read-only rewrite check (``rewrite``) or, for the Redis
    implementations, ``redis_cost`` requests of each scenario counting Redis round
    trips and commands (one implementation at a time: nothing else talks to Redis).
    """
    names = list(pythons)
    rounds: list[dict[str, Any]] = []
    extra = {} if only is None else {"only": list(only)}
    with workers(pythons, label) as pool:
        for r in range(count):
            log(f"{label} round {r + 1}/{count}")
            order = rotated(names, r)
            results = {
                name: pool[name].call("micro", n=requests, **extra) for name in order
            }
            rounds.append({"order": order, "results": results})
        if redis_cost:
            costs = {
                name: pool[name].call("redis_cost", n=redis_cost, **extra)
                for name in names
            }
            return {"rounds": rounds, "redis_cost": costs}
        if rewrite is None:
            return {"rounds": rounds}
        checks = {
            name: pool[name].call("rewrite_check", n=rewrite.rewrite_requests)
            for name in names
        }
    return {"rounds": rounds, "rewrite": checks}


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


def run_syscalls(
    pythons: dict[str, Path],
    plan: Plan,
    scenarios: tuple[str, ...] = syscalls.SCENARIOS,
) -> dict[str, Any]:
    if not shutil.which("strace"):
        log("strace not found: syscall counts skipped (apt-get install strace)")
        return {}
    results = {}
    for name, python in pythons.items():
        log(f"syscalls: {name}")
        results[name] = syscalls.trace(python, name, plan.syscall_requests, scenarios)
    return results


def run_variants(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    """Ours and its variants (encryption off, per-user index, metrics), the original
    and the cookie session: interleaved micro rounds (a login and a logged-in
    read-write among them), then syscalls per request, login included."""
    micro = micro_rounds(
        pythons,
        plan.variant_rounds,
        plan.requests,
        "variants",
        only=VARIANT_SCENARIOS,
    )
    return {"micro": micro, "syscalls": run_syscalls(pythons, plan, VARIANT_SYSCALLS)}


def run_gunicorn(
    pythons: dict[str, Path],
    plan: Plan,
    load_workers: tuple[int, ...] | None = None,
    load_rounds: int | None = None,
) -> list[dict[str, Any]]:
    names = list(pythons)
    runs = []
    turn = 0
    for workers_count in load_workers or plan.load_workers:
        for sessions in (plan.load_sessions, 1):
            for r in range(load_rounds or plan.load_rounds):
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


def run_ceiling(pythons: dict[str, Path], plan: Plan) -> list[dict[str, Any]]:
    """Issue 21: ``/rw`` against the session-free ``/free`` on one gunicorn server
    (``wrk``, the same cookies), for ours and, with ``--baseline``, the baseline."""
    runs: list[dict[str, Any]] = []
    for sessions, configs in plan.ceiling_runs:
        runs += ceiling.run(
            pythons,
            (sessions,),
            tuple(ceiling.Config.parse(c) for c in configs),
            plan.ceiling_seconds,
            plan.ceiling_reps,
            log,
        )
    return runs


def run_redis(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    """Ours' Redis store vs. Flask-Session's Redis backend on one redis-server:
    micro scenarios (test client, interleaved rounds), then gunicorn."""
    with redisbench.server() as server:
        log(
            f"redis-server {server['version']} on {server['url']} (pid {server['pid']})"
        )
        micro = micro_rounds(
            pythons,
            plan.redis_rounds,
            plan.redis_requests,
            "redis-micro",
            only=REDIS_SCENARIOS,
            redis_cost=plan.rewrite_requests,
        )
        runs = run_gunicorn(
            pythons, plan, plan.redis_load_workers, plan.redis_load_rounds
        )
        port = redisbench.port_of(server["url"])
        server["keys_at_end"] = int(redisbench.command(port, "DBSIZE"))
    return {"server": server, "micro": micro, "gunicorn": runs}


def run_postgres(pythons: dict[str, Path], plan: Plan) -> dict[str, Any]:
    """Ours' PostgreSQL store vs. ours' Redis store and Flask-Session's SQLAlchemy
    backend (on the same PostgreSQL): micro scenarios, then gunicorn."""
    with redisbench.server(), pgbench.server() as server:
        log(f"{server['version']} on {server['url']}")
        micro = micro_rounds(
            pythons,
            plan.redis_rounds,
            plan.redis_requests,
            "pg-micro",
            only=REDIS_SCENARIOS,
        )
        runs = run_gunicorn(
            pythons, plan, plan.redis_load_workers, plan.redis_load_rounds
        )
    return {"server": server, "micro": micro, "gunicorn": runs}


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
        "--redis",
        action="store_true",
        help="only the Redis comparison: " + " vs. ".join(impl_names("redis")),
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="only the PostgreSQL comparison: " + " vs. ".join(impl_names("postgres")),
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="only the variants of this package (ratios to ours, issues 17 and 20): "
        + ", ".join(VARIANT_IMPLS)
        + " on the micro scenarios and syscalls (< 5 min)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="only the read-only/read-write micro rounds and the ceiling phase: "
        "gunicorn + wrk, /rw against the session-free /free with the same cookies "
        "(issue 21)",
    )
    parser.add_argument(
        "--impls",
        default=None,
        help="comma-separated subset of: "
        + ", ".join(impl_names("file"))
        + " (with --variants: of "
        + ", ".join(VARIANT_IMPLS)
        + ")",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="never rewrite bench/README.md"
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure this package at git commit REF (before/after tables in one "
        "run; with --postgres, its PostgreSQL store); implies --no-readme",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to skip: "
        "floor,micro,syscalls,store,gunicorn,ceiling,redis,postgres,variants",
    )
    return parser.parse_args(argv)


FILE_PHASES = ("floor", "micro", "syscalls", "store", "gunicorn")
#: Implementations the ceiling phase serves (the others have their own gunicorn rows).
CEILING_IMPLS = ("ours", "baseline", "ours_plain")
#: ``--ceiling``'s implementations: the in-process goals are ratios to these two.
CEILING_DEFAULT = ("ours", "original", "cookie")
#: ``--ceiling``'s micro scenarios (besides the baseline).
CEILING_SCENARIOS = ("read_only", "read_write")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    skip = set(filter(None, args.skip.split(",")))
    allowed = VARIANT_IMPLS if args.variants else tuple(impl_names("file"))
    default = allowed
    if args.ceiling:
        allowed = (*allowed, "ours_plain")
        default = CEILING_DEFAULT
    names = [n for n in (args.impls or ",".join(default)).split(",") if n]
    unknown = set(names) - set(allowed)
    if unknown:
        raise SystemExit(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    variant_names: list[str] = []
    if args.variants:
        if "ours" not in names:
            raise SystemExit("--variants: the ratios need ours in --impls")
        # Only this phase; the README's variants section is rewritten by a full run.
        variant_names, names = names, []
        skip |= {*FILE_PHASES, "ceiling", "redis"}
    else:
        skip.add("variants")
    if args.baseline:
        os.environ[envs.BASELINE_ENV] = args.baseline
        target = variant_names if args.variants else names
        target.insert(1 if "ours" in target else 0, "baseline")
        args.no_readme = True
    if args.ceiling:
        skip |= {"floor", "syscalls", "store", "gunicorn", "redis", "variants"}
    if "ceiling" not in skip and not ceiling.available():
        if args.ceiling:
            raise SystemExit("no wrk (apt-get install wrk)")
        log("no wrk: ceiling phase skipped (apt-get install wrk)")
        skip.add("ceiling")
    if args.redis:
        skip |= {*FILE_PHASES, "ceiling", "variants"}
        names = []
    if "redis" not in skip and not redisbench.available():
        if args.redis:
            raise SystemExit("no redis-server (apt-get install redis-server)")
        log("no redis-server: Redis phase skipped (apt-get install redis-server)")
        skip.add("redis")
    if args.postgres:
        skip |= {*FILE_PHASES, "ceiling", "redis", "variants"}
        names = []
        if not (pgbench.available() and redisbench.available()):
            raise SystemExit(
                "no PostgreSQL or redis-server "
                "(apt-get install postgresql redis-server)"
            )
    else:
        # Only on request: the PostgreSQL comparison needs its own venvs and servers.
        skip.add("postgres")
    redis_names = [] if "redis" in skip else impl_names("redis")
    # The file store too: one run gives the README's backend table (file, Redis, PostgreSQL).
    pg_names = (
        [] if "postgres" in skip else ["ours_redis", *impl_names("postgres"), "ours"]
    )
    if pg_names and args.baseline:
        # Before/after of the PostgreSQL store in the same run (the baseline venv).
        pg_names.insert(pg_names.index("ours_postgres") + 1, "baseline_postgres")
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in argv)
    started = time.monotonic()
    # The ideal store (a process-local dict, ``ours``' venv) whenever the ceiling phase
    # runs: its ratio is the best any session that is used can reach.
    ideal_names = [report.IDEAL] if "ceiling" not in skip else []
    pythons = envs.ensure_all(
        list(
            dict.fromkeys(names + redis_names + pg_names + variant_names + ideal_names)
        )
    )
    log(f"venvs ready ({time.monotonic() - started:.0f} s); {mode} run")
    measured = time.monotonic()
    frozen: dict[Path, list[str]] = {}
    results: dict[str, Any] = {
        "command": command.strip(),
        "mode": mode,
        "plan": asdict(plan),
        "impls": {n: IMPLS[n].label for n in names},
        "redis_impls": {n: IMPLS[n].label for n in redis_names},
        "postgres_impls": {n: IMPLS[n].label for n in pg_names},
        "variant_impls": {n: IMPLS[n].label for n in variant_names},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "git": git_state(),
        "baseline": envs.baseline_commit() if args.baseline else None,
        "source_digest": envs.source_digest(),
        "versions": {
            n: frozen.setdefault(p, envs.freeze(p)) for n, p in pythons.items()
        },
    }
    files = {n: pythons[n] for n in names}
    phases: dict[str, Callable[[], Any]] = {
        "floor": lambda: run_floor(plan),
        "micro": lambda: (
            micro_rounds(
                files, plan.rounds, plan.requests, "micro", only=CEILING_SCENARIOS
            )
            if args.ceiling
            else run_micro(files, plan)
        ),
        "syscalls": lambda: run_syscalls(files, plan),
        "store": lambda: run_store(files, plan),
        "gunicorn": lambda: run_gunicorn(files, plan),
        "ceiling": lambda: run_ceiling(
            {
                **{n: p for n, p in files.items() if n in CEILING_IMPLS},
                **{n: pythons[n] for n in ideal_names},
            },
            plan,
        ),
        "redis": lambda: run_redis({n: pythons[n] for n in redis_names}, plan),
        "postgres": lambda: run_postgres({n: pythons[n] for n in pg_names}, plan),
        "variants": lambda: run_variants({n: pythons[n] for n in variant_names}, plan),
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
    kind = (
        "ceiling-"
        if args.ceiling
        else "redis-"
        if args.redis
        else "postgres-"
        if args.postgres
        else "variants-"
        if args.variants
        else ""
    )
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}{mode}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    log(f"measured in {results['seconds']:.0f} s; results in {out.relative_to(REPO)}")
    if mode == "full" and not args.no_readme and not args.postgres:
        for section in report.update_readme(BENCH / "README.md", results):
            log(f"bench/README.md updated: {section}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
