"""Redis Sentinel and Cluster against the single node, in one run (``docs/redis-ha.md``).

    .venv/bin/python bench/ha_bench.py [--quick] [--rounds 5] [--requests 300]
        [--load-rounds 3] [--load-seconds 5] [--no-load] [--baseline REF]

Starts, on loopback, a primary + replica + 3 Sentinels and a Cluster of 3 primaries + 3
replicas (``tests/redis_ha.py``, hence the development venv: ``make test`` makes it), then
times the micro scenarios of ``ha_worker.py`` (Flask test client) in the ``ours``
bench venv (a release build of the working tree, ``envs.py``) on:

* ``single``: the Sentinel set's primary through its plain ``redis://`` URL (the same
  server the Sentinel configuration reaches, so only the way of finding it differs);
* ``sentinel`` and ``cluster``: the ``redis+sentinel://`` and ``redis+cluster://`` URLs;
* ``sentinel-wait1`` and ``cluster-wait1``: the same with ``SESSION_REDIS_WAIT_REPLICAS=1``;
* with ``--baseline REF``, ``baseline-single``, ``baseline-sentinel`` and
  ``baseline-cluster``: this package at REF (its bench venv) on the same deployments, to
  show the single-node backend did not get slower and, as ratios to ``baseline-single``,
  what a change did to Sentinel and Cluster (rows ``baseline-*`` are relative to
  ``baseline-single``, the others to ``single``); a last line gives ``single`` over
  ``baseline-single``. ``--baseline-single-only`` measures the baseline on the single node
  alone, for a REF from before Sentinel and Cluster existed.

Rounds are interleaved (each round starts with the next configuration); overhead = the
scenario's median minus the session-free route's, in the same process; the table gives the
median over rounds and the median of the per-round ratios to ``single``. ``single-aa`` is
the single node again, as a configuration of its own: its ratio is the run's noise.

Then gunicorn (``load.py``: sync workers, ``-w 2`` and ``-w 4``, the Python load client
with 2 threads per worker, one connection per request, ``/rw`` over distinct sessions)
on ``single``, ``sentinel``, ``cluster``, ``single-wait1`` (the single node with
``SESSION_REDIS_WAIT_REPLICAS=1``: the Sentinel set's replica acknowledges) and
``flask-session`` (Flask-Session 0.8's Redis backend on the same single node: it cannot
use a Cluster or Sentinel). Each round runs every configuration once per worker count,
in rotating order; req/s is the median over rounds and ``× single`` the median of the
per-round ratios to ``single`` at the same worker count. ``--quick`` (3 rounds of 200
requests, 3 load rounds of 2 s) stays under ~5 minutes (about 2 here). ``--pin CPU``
runs the micro rounds with every Redis process and the worker on one CPU, ``--pin
CLIENT:SERVERS`` with the worker on one and every Redis process on the other (``pin``).
The micro table also gives the CPU time of all Redis processes per session request.
Results go to ``bench/results/redis-ha-<timestamp>[-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from redis_ha import RedisCluster, RedisSentinels  # noqa: E402

import cpu  # noqa: E402
import envs  # noqa: E402
import load  # noqa: E402
from impls import IMPLS, REDIS_URL_ENV, REDIS_WAIT_ENV  # noqa: E402

SCENARIOS = ("ro", "rw", "new")
#: gunicorn worker counts (sync workers).
WORKERS = (2, 4)


def config(url: str, wait: int = 0) -> dict[str, object]:
    return {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": url,
        "SESSION_REDIS_PREFIX": "bench:",
        "SESSION_TIMEOUT": 1800,
        "SESSION_EXPIRES": True,
        "SESSION_REDIS_WAIT_REPLICAS": wait,
    }


def measure(python: Path, cfg: dict[str, object], n: int) -> dict[str, float]:
    out = subprocess.run(
        [str(python), str(BENCH / "ha_worker.py"), json.dumps(cfg), str(n)],
        capture_output=True,
        text=True,
        cwd=BENCH,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def server_pids(sentinels: RedisSentinels, cluster: RedisCluster) -> list[int]:
    """Every Redis process of both deployments (servers and Sentinels)."""
    servers = [
        sentinels.primary,
        sentinels.replica,
        *sentinels.sentinels,
        *cluster.nodes,
    ]
    pids = [s.proc.pid for s in servers if s.proc is not None]
    pids += [proc.pid for proc in sentinels.procs]
    return list(dict.fromkeys(pids))


def pin(
    sentinels: RedisSentinels,
    cluster: RedisCluster,
    client: set[int],
    servers: set[int],
) -> None:
    """Sets the CPU affinity of every Redis process (``servers``) and of this one, hence
    of the workers it starts (``client``).

    On this 2-vCPU VM one loopback round trip costs ~7 µs when client and server share
    a CPU and ~56-100 µs when they do not (waking the other vCPU): where the scheduler
    puts each process decides more than the deployment does. Pinning removes that, in
    one of two ways (``--pin``): everything on one CPU, where round trips are cheapest
    but every server's CPU time is added to the app's latency (a Cluster's six servers
    contend for that CPU's caches); or the app on one CPU and every server on the other,
    where each round trip costs what a network hop does and the servers' work runs
    beside the app, as on separate hosts.
    """
    for pid in server_pids(sentinels, cluster):
        os.sched_setaffinity(pid, servers)
    os.sched_setaffinity(0, client)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far."""
    return sum(sum(cpu.process_ticks(pid)) for pid in pids) * cpu.TICK_S


def _base_of(name: str) -> str:
    """What a configuration's ratios are to: a baseline configuration is compared with
    the baseline's single node."""
    return "baseline-single" if name.startswith("baseline-") else "single"


def parse_pin(value: str) -> tuple[set[int], set[int]]:
    """``CPU`` (app and servers on it) or ``CLIENT:SERVERS``."""
    client, _, servers = value.partition(":")
    return {int(client)}, {int(servers or client)}


def load_phase(
    pythons: dict[str, Path],
    targets: dict[str, tuple[str, str, int]],
    rounds: int,
    seconds: float,
    sessions: int,
) -> dict[str, dict[int, list[dict[str, object]]]]:
    """gunicorn runs: ``targets`` maps a name to (implementation, Redis URL, WAIT)."""
    order = list(targets)
    runs: dict[str, dict[int, list[dict[str, object]]]] = {
        name: {w: [] for w in WORKERS} for name in order
    }
    for r in range(rounds):
        for workers in WORKERS:
            for name in order[r % len(order) :] + order[: r % len(order)]:
                impl, url, wait = targets[name]
                os.environ[REDIS_URL_ENV] = url
                if wait:
                    os.environ[REDIS_WAIT_ENV] = str(wait)
                else:
                    os.environ.pop(REDIS_WAIT_ENV, None)
                result = load.load_run(
                    pythons[impl], IMPLS[impl], workers, sessions, seconds, 10**7
                )
                runs[name][workers].append(result)
        print(f"load round {r + 1}/{rounds} done", file=sys.stderr)
    os.environ.pop(REDIS_WAIT_ENV, None)
    return runs


def load_summary(
    runs: dict[str, dict[int, list[dict[str, object]]]],
) -> dict[str, dict[int, dict[str, float]]]:
    """Per configuration and worker count: medians over rounds, paired ratio to
    single."""
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for name, by_workers in runs.items():
        summary[name] = {}
        for workers, results in by_workers.items():
            single = runs["single"][workers]

            def med(key: str, results: list[dict[str, object]] = results) -> float:
                return statistics.median(float(str(x[key])) for x in results)

            ratios = [
                float(str(mine["req_per_s"])) / float(str(base["req_per_s"]))
                for mine, base in zip(results, single)
                if float(str(base["req_per_s"])) > 0
            ]
            summary[name][workers] = {
                "req_per_s": med("req_per_s"),
                "x_single": statistics.median(ratios) if ratios else float("nan"),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "errors": sum(float(str(x["errors"])) for x in results),
                "lost_updates": sum(float(str(x["lost_updates"])) for x in results),
                "ok": sum(float(str(x["ok"])) for x in results),
            }
    return summary


def load_table(summary: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        "| gunicorn | configuration | req/s | × single | p50 ms | p99 ms | errors "
        "| lost updates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workers in WORKERS:
        for name, by_workers in summary.items():
            row = by_workers[workers]
            lines.append(
                f"| -w {workers} | {name} | {row['req_per_s']:,.0f} "
                f"| {row['x_single']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {row['errors']:.0f} "
                f"| {row['lost_updates']:.0f} of {row['ok']:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer and shorter rounds (< ~5 min)"
    )
    parser.add_argument("--rounds", type=int, help="micro rounds (default 5; quick 3)")
    parser.add_argument(
        "--requests", type=int, help="requests per scenario (default 300; quick 200)"
    )
    parser.add_argument(
        "--load-rounds", type=int, help="gunicorn rounds (default 3; quick 3)"
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        help="seconds per gunicorn run (default 5; quick 2)",
    )
    parser.add_argument(
        "--sessions", type=int, default=200, help="distinct sessions under gunicorn"
    )
    parser.add_argument("--no-load", action="store_true", help="skip the gunicorn runs")
    parser.add_argument(
        "--pin",
        type=parse_pin,
        metavar="CPU[:SERVERS]",
        help="micro rounds: the worker on CPU, every Redis process on SERVERS "
        "(default: the same CPU)",
    )
    parser.add_argument(
        "--baseline", help="also measure this package at REF (single node)"
    )
    parser.add_argument(
        "--baseline-single-only",
        action="store_true",
        help="the baseline on the single node only (a REF without Sentinel/Cluster)",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.requests = args.requests or (200 if args.quick else 300)
    args.load_rounds = args.load_rounds or 3
    args.load_seconds = args.load_seconds or (2.0 if args.quick else 5.0)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    names = ["ours", "flask_session_redis"]
    if args.baseline:
        os.environ[envs.BASELINE_ENV] = args.baseline
        names.append("baseline")
    pythons = envs.ensure_all(names)
    pythons["ours_redis"] = pythons["ours"]
    work = Path(tempfile.mkdtemp(prefix="bench-redis-ha-"))
    with (
        RedisSentinels(work / "sentinel") as sentinels,
        RedisCluster(work / "cluster") as cluster,
    ):
        single_url = sentinels.current_primary().url
        configs = {
            "single": (pythons["ours"], config(single_url)),
            # A/A: the single node again, as a configuration of its own: its ratio to
            # `single` is the run's noise, to read the other ratios against.
            "single-aa": (pythons["ours"], config(single_url)),
            "sentinel": (pythons["ours"], config(sentinels.url)),
            "cluster": (pythons["ours"], config(cluster.url)),
            "sentinel-wait1": (pythons["ours"], config(sentinels.url, 1)),
            "cluster-wait1": (pythons["ours"], config(cluster.url, 1)),
        }
        if args.baseline:
            # The same deployments through the baseline build: its ratios against
            # baseline-single are the "before" of a change, measured in the same rounds.
            deployments = (
                ("single",)
                if args.baseline_single_only
                else (
                    "single",
                    "sentinel",
                    "cluster",
                )
            )
            for name in deployments:
                configs[f"baseline-{name}"] = (pythons["baseline"], configs[name][1])
        order = list(configs)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in order}
        everywhere = os.sched_getaffinity(0)
        if args.pin is not None:
            pin(sentinels, cluster, *args.pin)
        pids = server_pids(sentinels, cluster)
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                python, cfg = configs[name]
                before = cpu_seconds(pids)
                timed = measure(python, cfg, args.requests)
                # Every Redis process's CPU over the worker's requests (its warm-up
                # included: a tenth of them), per session request; both deployments
                # are counted every time, so their idle work cancels in the ratio.
                served = int(timed.pop("session_requests"))
                server_us = (cpu_seconds(pids) - before) / served * 1e6
                row = {s: timed[s] - timed["free"] for s in SCENARIOS}
                rounds[name].append({**row, "server_cpu_us": server_us})
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        if args.pin is not None:
            pin(sentinels, cluster, everywhere, everywhere)
        runs: dict[str, dict[int, list[dict[str, object]]]] = {}
        if not args.no_load:
            runs = load_phase(
                pythons,
                {
                    "single": ("ours_redis", single_url, 0),
                    "sentinel": ("ours_redis", sentinels.url, 0),
                    "cluster": ("ours_redis", cluster.url, 0),
                    "single-wait1": ("ours_redis", single_url, 1),
                    "flask-session": ("flask_session_redis", single_url, 0),
                },
                args.load_rounds,
                args.load_seconds,
                args.sessions,
            )
    overhead = {
        name: {s: statistics.median(x[s] for x in runs_) / 1000 for s in SCENARIOS}
        for name, runs_ in rounds.items()
    }
    server_cpu = {
        name: statistics.median(x["server_cpu_us"] for x in runs_)
        for name, runs_ in rounds.items()
    }
    # Ratios: the median of per-round ratios (each round measures every configuration
    # back to back, so a slow stretch of the machine moves both sides of a ratio).
    ratios = {
        name: {
            s: statistics.median(
                mine[s] / base[s]
                for mine, base in zip(runs_, rounds[_base_of(name)])
                if base[s] > 0
            )
            for s in SCENARIOS
        }
        for name, runs_ in rounds.items()
    }
    lines = [
        "| configuration | "
        + " | ".join(f"{s} µs (× single)" for s in SCENARIOS)
        + " | Redis CPU µs per request |",
        "|---|" + "---|" * (len(SCENARIOS) + 1),
    ]
    for name in order:
        cells = [f"{overhead[name][s]:.0f} ({ratios[name][s]:.2f})" for s in SCENARIOS]
        cells.append(f"{server_cpu[name]:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "baseline-single" in rounds:
        # The single node now against the single node at REF, in the same rounds.
        before = {
            s: statistics.median(
                mine[s] / base[s]
                for mine, base in zip(rounds["single"], rounds["baseline-single"])
                if base[s] > 0
            )
            for s in SCENARIOS
        }
        ratios["single/baseline-single"] = before
        lines.append("")
        lines.append(
            "single ÷ baseline-single: "
            + ", ".join(f"{s} {before[s]:.2f}" for s in SCENARIOS)
        )
    table = "\n".join(lines)
    print(table)
    summary = load_summary(runs) if runs else {}
    gunicorn_table = load_table(summary) if summary else ""
    if gunicorn_table:
        print()
        print(gunicorn_table)
    pinned = None
    if args.pin is not None:
        pinned = {"client": sorted(args.pin[0]), "servers": sorted(args.pin[1])}
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = "-quick" if args.quick else ""
    (results / f"redis-ha-{stamp}{suffix}.json").write_text(
        json.dumps(
            {
                "rounds": rounds,
                "overhead_us": overhead,
                "server_cpu_us": server_cpu,
                "ratios": ratios,
                "table": table,
                "gunicorn_runs": runs,
                "gunicorn": summary,
                "gunicorn_table": gunicorn_table,
                "args": {**vars(args), "pin": pinned},
                "load_average": [load_before, os.getloadavg()[0]],
                "seconds": time.monotonic() - started,
                "cpus": os.cpu_count(),
                "commit": subprocess.run(
                    ["git", "rev-parse", "--short=10", "HEAD"],
                    cwd=BENCH,
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
