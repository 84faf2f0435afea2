"""Redis Sentinel and Cluster against the single node, in one run.

See ``docs/redis-ha.md``.

    .venv/bin/python bench/ha_bench.py [--rounds 5] [--requests 300] [--baseline REF]

Starts, on loopback, a primary + replica + 3 Sentinels and a Cluster of 3 primaries +
3 replicas (``tests/redis_ha.py``, hence the development venv: ``make test`` makes
it), then times the micro scenarios of ``ha_worker.py`` (Flask test client) in the
``ours`` bench venv (a release build of the working tree, ``envs.py``) on:

* ``single``: the Sentinel set's primary through its plain ``redis://`` URL (the same
  server the Sentinel configuration reaches, so only the way of finding it differs);
* ``sentinel`` and ``cluster``: the ``redis+sentinel://`` and ``redis+cluster://`` URLs;
* ``sentinel-wait1`` and ``cluster-wait1``: the same with
  ``SESSION_REDIS_WAIT_REPLICAS=1``;
* with ``--baseline REF``, ``baseline-single``: this package at REF (its bench venv) on
  the same single node, to show the single-node backend did not get slower.

Rounds are interleaved (each round starts with the next configuration); overhead = the
scenario's median minus the session-free route's, in the same process; the table gives
the median over rounds and the ratio to ``single``. Results go to ``bench/results/``.
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

import envs  # noqa: E402

SCENARIOS = ("ro", "rw", "new")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--baseline", help="also measure this package at REF (single node)"
    )
    args = parser.parse_args()
    names = ["ours"]
    if args.baseline:
        os.environ[envs.BASELINE_ENV] = args.baseline
        names.append("baseline")
    pythons = envs.ensure_all(names)
    work = Path(tempfile.mkdtemp(prefix="bench-redis-ha-"))
    with (
        RedisSentinels(work / "sentinel") as sentinels,
        RedisCluster(work / "cluster") as cluster,
    ):
        configs = {
            "single": (pythons["ours"], config(sentinels.current_primary().url)),
            "sentinel": (pythons["ours"], config(sentinels.url)),
            "cluster": (pythons["ours"], config(cluster.url)),
            "sentinel-wait1": (pythons["ours"], config(sentinels.url, 1)),
            "cluster-wait1": (pythons["ours"], config(cluster.url, 1)),
        }
        if args.baseline:
            configs["baseline-single"] = (pythons["baseline"], configs["single"][1])
        order = list(configs)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in order}
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                python, cfg = configs[name]
                timed = measure(python, cfg, args.requests)
                rounds[name].append({s: timed[s] - timed["free"] for s in SCENARIOS})
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    overhead = {
        name: {s: statistics.median(x[s] for x in runs) / 1000 for s in SCENARIOS}
        for name, runs in rounds.items()
    }
    lines = [
        "| configuration | "
        + " | ".join(f"{s} µs (x single)" for s in SCENARIOS)
        + " |",
        "|---|" + "---|" * len(SCENARIOS),
    ]
    for name in order:
        cells = [
            f"{overhead[name][s]:.0f} ({overhead[name][s] / overhead['single'][s]:.2f})"
            for s in SCENARIOS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"redis-ha-{stamp}.json").write_text(
        json.dumps(
            {
                "rounds": rounds,
                "overhead_us": overhead,
                "table": table,
                "args": vars(args),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
