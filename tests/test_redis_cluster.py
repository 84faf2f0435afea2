"""The Redis backend on a real Redis Cluster (3 primaries + 3 replicas on loopback): every
key of a session in one hash slot, ids that change slot without ``CROSSSLOT``, ``stats``
and ``clear`` over every primary, a live resharding under load without an error, and a
primary killed with SIGKILL under gunicorn load, on one shared counter and on 1000
sessions, with and without ``SESSION_REDIS_WAIT_REPLICAS`` (requests, 503s, recovery time
and lost acknowledged updates are printed and written to ``failover.json`` in the test's
temp dir). The shared backend suite runs on the Cluster too (``test_backends.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask
from helpers import build_app, cookie_of
from redis_ha import RedisCluster, cluster_key, drive_failover, key_slot, report
from redis_server import Resp
from test_servers import _dump, _load, gunicorn

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux")


def cluster_app(cluster: RedisCluster, prefix: str, **config: object) -> Flask:
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=cluster.url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


def test_a_sessions_keys_share_one_slot_and_ids_change_slot(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """Record, lock and last-touch keys of a session are in one slot (the digest is the
    hash tag); regenerate and invalidate move the session to a new id, usually in another
    slot, and the old one is gone, without CROSSSLOT."""
    app = cluster_app(redis_cluster, prefix)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    slots = {key_slot(cluster_key(prefix, kind, sid)) for kind in "sla"}
    assert len(slots) == 1
    with redis_cluster.client() as c:
        assert c("GET", cluster_key(prefix, "s", sid)) is not None
        assert int(c("CLUSTER", "KEYSLOT", cluster_key(prefix, "s", sid))) in slots
    seen_slots = {key_slot(cluster_key(prefix, "s", sid))}
    for route in ["/regenerate", "/invalidate"] * 3:
        response = client.get(route)
        assert response.status_code == 200
        new = cookie_of(client)
        assert new is not None and new != sid
        assert client.get("/get/a").text == ("1" if route == "/regenerate" else "None")
        client.get("/set/a/1")
        with redis_cluster.client() as c:
            assert c("EXISTS", cluster_key(prefix, "s", sid)) == 0
            assert c("EXISTS", cluster_key(prefix, "s", new)) == 1
        sid = new
        seen_slots.add(key_slot(cluster_key(prefix, "s", sid)))
    assert len(seen_slots) > 1


def test_stats_and_clear_visit_every_primary(redis_cluster: RedisCluster, prefix: str) -> None:
    """Sessions spread over the three primaries; ``stats`` counts all of them and
    ``clear`` removes all of them (and nothing of another prefix)."""
    app = cluster_app(redis_cluster, prefix)
    other = cluster_app(redis_cluster, prefix + "other:")
    keep = other.test_client()
    keep.get("/set/k/v")
    for _ in range(30):
        assert app.test_client().get("/set/a/1").status_code == 200
    per_node = []
    for port in redis_cluster.live_primaries():
        with Resp(port) as c:
            per_node.append(len(c("KEYS", f"{prefix}s:*")))
    assert sum(per_node) == 30 and all(n > 0 for n in per_node), per_node
    runner = app.test_cli_runner()
    stats = runner.invoke(args=["beaker-session", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["records"] == 30
    cleared = runner.invoke(args=["beaker-session", "clear", "--yes"])
    assert cleared.exit_code == 0, cleared.output
    for port in redis_cluster.live_primaries():
        with Resp(port) as c:
            assert c("KEYS", f"{prefix}s:*") == []
    assert keep.get("/get/k").text == "v"


def _config(cluster: RedisCluster, prefix: str, wait: int) -> dict[str, str]:
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": cluster.url,
        "SESSION_REDIS_PREFIX": prefix,
        "SESSION_REDIS_CONNECT_TIMEOUT": 0.5,
        "SESSION_REDIS_TIMEOUT": 1.0,
        # A lock whose release a failover lost blocks its session this long.
        "SESSION_REDIS_LOCK_TTL": 3.0,
        "SESSION_REDIS_WAIT_REPLICAS": wait,
        "SESSION_REDIS_WAIT_TIMEOUT": 0.5,
    }
    return {"FBS_CONFIG_JSON": json.dumps(config)}


def _node_ids(cluster: RedisCluster) -> dict[int, str]:
    """Port → node id of the primaries."""
    ids = {}
    for fields in cluster.node_lines():
        if "master" in fields[2]:
            ids[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[0]
    return ids


GUNICORN = ("-w", "2", "-k", "gthread", "--threads", "4")


def test_live_resharding_under_load_has_no_errors(tmp_path: Path) -> None:
    """``redis-cli --cluster reshard`` moves 2000 slots (and their sessions' keys) from one
    primary to another while 6 clients increment 120 sessions: every request succeeds
    (ASK/TRYAGAIN during the moves are retried) and no update is lost."""
    with (
        RedisCluster(tmp_path / "cluster") as cluster,
        gunicorn(tmp_path, *GUNICORN, lock_timeout=8.0, env=_config(cluster, "rs:", 0)) as server,
    ):
        ids = _node_ids(cluster)
        source, target = sorted(ids)[:2]
        done: list[subprocess.CompletedProcess[bytes]] = []

        def reshard() -> None:
            done.append(
                subprocess.run(
                    [
                        cluster.cli,
                        "--cluster",
                        "reshard",
                        f"127.0.0.1:{source}",
                        "--cluster-from",
                        ids[source],
                        "--cluster-to",
                        ids[target],
                        "--cluster-slots",
                        "2000",
                        "--cluster-yes",
                    ],
                    capture_output=True,
                    timeout=120,
                )
            )

        numbers = drive_failover(
            server.port,
            [[None] * 20 for _ in range(6)],
            fail=reshard,
            recovered=lambda: None,
            warmup=0.5,
            settle=0.5,
        )
        assert done[0].returncode == 0, done[0].stdout[-2000:]
        with Resp(target) as c:
            owned = sum(
                end - start + 1
                for start, end, primary, *_ in c("CLUSTER", "SLOTS")
                if int(primary[1]) == target
            )
        assert owned >= 5461 + 2000 - 1
    report(tmp_path / "failover.json", "cluster-reshard", numbers.as_dict())
    assert numbers.errors == 0 and numbers.unavailable == 0, numbers
    assert numbers.lost == 0, numbers


@pytest.mark.parametrize("wait", [0, 1], ids=["no-wait", "wait-1"])
@pytest.mark.parametrize("shape", ["shared-counter", "1000-sessions"])
def test_primary_killed_under_load(tmp_path: Path, shape: str, wait: int) -> None:
    """SIGKILL of a primary under gunicorn load: its replica takes over (cluster-node-timeout
    1 s), the killed node comes back as a replica; requests answer 200 or 503 + Retry-After,
    never 500, and recover by themselves; with WAIT 1 no acknowledged update is lost."""
    with (
        RedisCluster(tmp_path / "cluster") as cluster,
        gunicorn(tmp_path, *GUNICORN, lock_timeout=8.0, env=_config(cluster, "k:", wait)) as server,
    ):
        if shape == "shared-counter":
            first = server.client()
            try:
                assert first.get("/inc").status == 200
            finally:
                first.close()
            sid = first.sid
            assert sid is not None
            slots: list[list[str | None]] = [[sid] for _ in range(6)]
            victim = cluster.primary_of(cluster_key("k:", "s", sid))
        else:
            slots = [[None] * 100 for _ in range(10)]
            victim = cluster.node_of(cluster.live_primaries()[0])

        def fail() -> None:
            victim.kill()

        def recovered() -> None:
            cluster.wait_ok(timeout=60)  # a replica took over
            cluster.replace(victim)  # a new empty node, replica of the new primary
            cluster.wait_replicas(timeout=60)

        numbers = drive_failover(server.port, slots, fail, recovered)
        assert "Traceback" not in server.log.read_text(), server.log_tail()
    name = f"cluster-sigkill-{shape}-{'wait1' if wait else 'nowait'}"
    report(tmp_path / "failover.json", name, numbers.as_dict())
    assert numbers.errors == 0, numbers
    assert numbers.recovery < 15, numbers
    if wait:
        assert numbers.lost == 0, numbers


@pytest.mark.parametrize("deployment", ["redis_cluster", "redis_sentinels"])
def test_preloaded_master_used_the_store_before_the_fork(
    request: pytest.FixtureRequest, tmp_path: Path, deployment: str
) -> None:
    """gunicorn ``--preload``: the master created and read a session on the Cluster / via
    Sentinel before forking (its pooled connections, the Sentinel watch); the workers make
    their own and lose no update of that session."""
    target = request.getfixturevalue(deployment)
    env = {
        "FBS_WARMUP_FILE": str(tmp_path / "warm.sid"),
        "FBS_CONFIG_JSON": json.dumps(
            {
                "SESSION_TYPE": "redis",
                "SESSION_REDIS_URL": target.url,
                "SESSION_REDIS_PREFIX": f"pre:{tmp_path.name}:",
            }
        ),
    }
    with gunicorn(tmp_path, "-w", "2", "--preload", env=env) as server:
        shared = (tmp_path / "warm.sid").read_text()
        tally = _load([(server, shared, ["/inc"] * 20) for _ in range(4)])
        final = _dump(server, shared)
    assert tally.errors == [] and tally.statuses == Counter({200: 80})
    assert final == {"n": 80, "warm": "yes"}
    assert len(tally.pids) >= 2, "the load never reached a second worker process"
