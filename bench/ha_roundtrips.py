"""Where a Cluster's extra microseconds go: Redis work per request, and one round trip's
cost, on the single node, via Sentinel and on a Cluster (``docs/redis-ha.md``).

    .venv/bin/python bench/ha_roundtrips.py [--requests 200] [--pings 2000] [--rounds 5]
        [--pin CPU[:SERVERS]]

Runs in the development venv (this package as ``make test`` installs it; counts do not
depend on the build profile) with the fixtures of ``tests/redis_ha.py``:

* **Per request** (Flask test client, the routes of ``apps``): N requests of each
  scenario between two snapshots of ``INFO stats`` (``total_reads_processed``: read
  events on client connections, i.e. round trips, a pipeline being one) and ``INFO
  commandstats``, summed over the primaries (a Cluster's three); the snapshots' own
  reads and ``INFO`` calls are subtracted.
* **One round trip** (no client library): a raw RESP ``PING``, ``GET`` and ``SET`` (300
  bytes) loop over one
  socket to the single node and to a Cluster primary, interleaved rounds, median µs per
  command. The difference is the server's (cluster mode, and six servers plus their
  cluster bus sharing the cores) and is paid once per round trip.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from ha_bench import parse_pin, pin  # noqa: E402
from redis_ha import RedisCluster, RedisSentinels  # noqa: E402
from redis_server import Resp, RespError  # noqa: E402

SCENARIOS = (("ro", "/ro", True), ("rw", "/rw", True), ("new", "/rw", False))


def snapshot(ports: list[int]) -> tuple[int, dict[str, int]]:
    """Total reads and calls per command over ``ports`` (one connection each)."""
    reads = 0
    calls: dict[str, int] = {}
    for port in ports:
        with Resp(port) as r:
            stats = r("INFO", "stats").decode()
            cmds = r("INFO", "commandstats").decode()
        for line in stats.splitlines():
            if line.startswith("total_reads_processed:"):
                reads += int(line.split(":")[1])
        for line in cmds.splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line[len("cmdstat_") :].partition(":")
                n = int(rest.split(",")[0].split("=")[1])
                calls[name] = calls.get(name, 0) + n
    return reads, calls


def per_request(url: str, ports: list[int], n: int) -> dict[str, Any]:
    """Round trips and commands per request of each scenario on one deployment."""
    from flask import Flask
    from flask_beaker_session.session import Session

    from apps import add_routes
    from impls import SECRET_KEY

    app = Flask(__name__)
    app.secret_key = SECRET_KEY
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=url,
        SESSION_REDIS_PREFIX="rt:",
        SESSION_TIMEOUT=1800,
        SESSION_EXPIRES=True,
    )
    Session(app)
    add_routes(app)
    client = app.test_client()
    client.get("/rw")
    cookie = client.get_cookie("beaker.session.id")
    assert cookie is not None
    header = {"Cookie": f"beaker.session.id={cookie.value}"}
    out: dict[str, Any] = {}
    for name, path, with_cookie in SCENARIOS:
        fresh = app.test_client(use_cookies=False)
        headers = header if with_cookie else {}
        for _ in range(20):  # warm: connections made, scripts loaded
            fresh.get(path, headers=headers)
        reads0, calls0 = snapshot(ports)
        for _ in range(n):
            assert fresh.get(path, headers=headers).status_code == 200
        reads1, calls1 = snapshot(ports)
        # Each snapshot is 2 reads per node, counted by the later snapshot's stats.
        reads = reads1 - reads0 - 2 * len(ports)
        calls = {
            k: (calls1.get(k, 0) - calls0.get(k, 0)) / n
            for k in calls1
            if k != "info" and calls1.get(k, 0) != calls0.get(k, 0)
        }
        out[name] = {"round_trips": reads / n, "commands": calls}
    return out


def rt_us(port: int, command: bytes, n: int) -> float:
    """Median µs of one command over a raw socket (send, read the reply line)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        samples = []
        for _ in range(n):
            started = time.perf_counter_ns()
            sock.sendall(command)
            line = reader.readline()
            if line.startswith(b"$") and line[1:2] != b"-":
                reader.read(int(line[1:-2]) + 2)
            samples.append(time.perf_counter_ns() - started)
        return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--pin",
        type=parse_pin,
        metavar="CPU[:SERVERS]",
        help="the raw round trips with this process on CPU and every Redis process on "
        "SERVERS (default: the same CPU), as ha_bench.py --pin",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-redis-rt-"))
    with (
        RedisSentinels(work / "sentinel") as sentinels,
        RedisCluster(work / "cluster") as cluster,
    ):
        primary = sentinels.current_primary()
        cluster_primaries = [
            int(line[1].split("@")[0].rsplit(":", 1)[1])
            for line in cluster.node_lines()
            if "master" in line[2]
        ]
        counts = {
            "single": per_request(primary.url, [primary.port], args.requests),
            "sentinel": per_request(sentinels.url, [primary.port], args.requests),
            "cluster": per_request(cluster.url, cluster_primaries, args.requests),
        }
        owner = next(port for port in cluster_primaries if _owns(port, "k"))
        with Resp(owner) as r:
            r("SET", "k", "v")
        with Resp(primary.port) as r:
            r("SET", "k", "v")
        value = b"v" * 300  # about a small session's record
        commands = {
            "PING": b"*1\r\n$4\r\nPING\r\n",
            "GET": b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            # A write, replicated to the node's replica like a session save.
            "SET": b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$300\r\n" + value + b"\r\n",
        }
        if args.pin is not None:
            pin(sentinels, cluster, *args.pin)
        latency: dict[str, dict[str, list[float]]] = {
            name: {"single": [], "cluster": []} for name in commands
        }
        for r_ in range(args.rounds):
            for name, raw in commands.items():
                pair = [("single", primary.port), ("cluster", owner)]
                for where, port in pair if r_ % 2 == 0 else pair[::-1]:
                    latency[name][where].append(rt_us(port, raw, args.pings))
    summary = {
        name: {where: statistics.median(v) for where, v in by.items()}
        for name, by in latency.items()
    }
    print("| per request: round trips / commands | ro | rw | new |")
    print("|---|---|---|---|")
    for deployment, by in counts.items():
        cells = []
        for scenario in ("ro", "rw", "new"):
            row = by[scenario]
            cmds = ", ".join(f"{k} {v:g}" for k, v in sorted(row["commands"].items()))
            cells.append(f"{row['round_trips']:.1f} ({cmds})")
        print(f"| {deployment} | " + " | ".join(cells) + " |")
    print()
    print("| one round trip, µs (median of rounds) | single node | Cluster primary |")
    print("|---|---|---|")
    for name, by in summary.items():
        print(f"| {name} | {by['single']:.1f} | {by['cluster']:.1f} |")
    results = BENCH / "results"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"redis-ha-roundtrips-{stamp}.json").write_text(
        json.dumps(
            {
                "per_request": counts,
                "round_trip_us": latency,
                "summary": summary,
                "args": {
                    **vars(args),
                    "pin": None if args.pin is None else [sorted(x) for x in args.pin],
                },
            },
            indent=2,
        )
    )


def _owns(port: int, key: str) -> bool:
    """Whether the Cluster node on ``port`` serves ``key`` (a GET is not redirected)."""
    with Resp(port) as r:
        try:
            r("GET", key)
        except RespError:  # MOVED: another node's key
            return False
    return True


if __name__ == "__main__":
    main()
