"""Real highly-available Redis deployments for the tests, on free loopback ports in temp
dirs: a Cluster of 3 primaries + 3 replicas (``redis-server --cluster-enabled yes`` and
``redis-cli --cluster create``), and 1 primary + 1 replica watched by 3 Sentinels
(``redis-server --sentinel``). Every process is one the fixture started, and is stopped by
its PID (``RedisServer.stop`` / ``kill``). Timeouts are small (``cluster-node-timeout``,
``down-after-milliseconds``) so that failovers take a second or two.

Also here: a key-routing RESP client for the Cluster (follows ``MOVED``/``ASK``), the key
names of a session on a Cluster (hash-tagged), and the load runner of the failover tests
(many threads of HTTP clients against a gunicorn server, counting answers, 503s, 500s and
the longest stretch without a successful answer).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import require_posix
from redis_server import RedisServer, Resp, RespError, free_port, in_ci

#: Milliseconds without an answer before a Cluster node / a Sentinel calls a server down.
NODE_TIMEOUT_MS = 1000


def _binary(name: str) -> str:
    require_posix(f"{name} (SIGKILL, SIGSTOP)")
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is not installed (CI installs it with apt-get)")
        pytest.skip(f"{name} is not installed")
    return path


def cluster_port() -> int:
    """A free port for a Cluster node: at most 55535, with its bus port (+10000) free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def cluster_key(prefix: str, kind: str, sid: str) -> str:
    """A session's key on a Cluster: the digest is the hash tag (``kind``: s, l or a)."""
    return f"{prefix}{kind}:{{{hashlib.sha256(sid.encode()).hexdigest()}}}"


def cluster_data_key(prefix: str, sid: str) -> str:
    """The record's key of session ``sid`` on a Cluster."""
    return cluster_key(prefix, "s", sid)


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RespError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class ClusterResp:
    """A RESP client for a Cluster: each command goes to the node of its key (the second
    argument), following ``MOVED`` and ``ASK``."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self.conns: dict[int, Resp] = {}

    def _conn(self, port: int) -> Resp:
        if port not in self.conns:
            self.conns[port] = Resp(port)
        return self.conns[port]

    def __call__(self, *args: str | bytes | int) -> Any:
        port = self.cluster.live_primaries()[0]
        asking = False
        for _ in range(10):
            conn = self._conn(port)
            if asking:
                conn("ASKING")
            try:
                return conn(*args)
            except RespError as exc:
                words = str(exc).split()
                if words[0] in ("MOVED", "ASK"):
                    port, asking = int(words[2].rsplit(":", 1)[1]), words[0] == "ASK"
                    continue
                raise
        raise RuntimeError("too many redirections")

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def __enter__(self) -> ClusterResp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisCluster:
    """3 primaries + 3 replicas on 127.0.0.1, each a ``RedisServer`` in its own dir."""

    def __init__(self, workdir: Path, nodes: int = 6) -> None:
        self.cli = _binary("redis-cli")
        self.workdir = workdir
        self.nodes = [
            RedisServer(
                workdir / f"node{i}",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A replica takes over however long it was cut off (the tests kill
                    # primaries that were just written to).
                    "--cluster-replica-validity-factor",
                    "0",
                    # Replicas sync at once (the default waits 5 s for more replicas).
                    "--repl-diskless-sync-delay",
                    "0",
                ],
                pick_port=cluster_port,
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()
        self.wait_replicas()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and sees 3 live primaries."""

        def ok() -> bool:
            for node in self.live_nodes():
                with node.client(timeout=1.0) as c:
                    if "cluster_state:ok" not in c("CLUSTER", "INFO").decode():
                        return False
            return len(self.live_primaries()) == 3

        _wait(ok, "the cluster to be ok", timeout)

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def node_lines(self) -> list[list[str]]:
        """``CLUSTER NODES``, split, as a live node sees it."""
        for node in self.live_nodes():
            try:
                with node.client(timeout=1.0) as c:
                    text = c("CLUSTER", "NODES").decode()
                return [line.split() for line in text.splitlines() if line.strip()]
            except (OSError, RespError):
                continue
        raise RuntimeError("no live cluster node")

    def live_primaries(self) -> list[int]:
        """Ports of the primaries that are not failed."""
        ports = []
        for fields in self.node_lines():
            flags = fields[2].split(",")
            if "master" in flags and "fail" not in flags and "fail?" not in flags:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                if any(n.port == port for n in self.live_nodes()):
                    ports.append(port)
        return sorted(ports)

    def node_of(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def primary_of(self, key: str) -> RedisServer:
        """The node serving ``key`` now (its slot's primary)."""
        with Resp(self.live_primaries()[0]) as c:
            slot = int(c("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in c("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node_of(int(primary[1]))
        raise RuntimeError(f"no node serves {key!r}")

    def client(self, db: int = 0, timeout: float = 5.0) -> ClusterResp:
        """A key-routing client (``db`` must be 0: a Cluster has one database)."""
        assert db == 0
        return ClusterResp(self)

    def replace(self, dead: RedisServer) -> None:
        """Brings ``dead`` back as a new, empty node (its old identity forgotten) and makes
        it a replica of the primary that now serves its former slots, as an operator
        replacing a failed host would: a node that came back with its old ``nodes.conf``
        and none of its data would claim its slots until told otherwise."""
        old_id = None
        conf = dead.workdir / "nodes.conf"
        for line in conf.read_text().splitlines():
            if "myself" in line:
                old_id = line.split()[0]
        conf.unlink()
        live = self.live_nodes()
        for node in live:
            with node.client(timeout=1.0) as c:
                if old_id:
                    with suppress(RespError):  # a node that already forgot it
                        c("CLUSTER", "FORGET", old_id)
        primaries = self.live_primaries()
        orphaned = [p for p in primaries if not self._has_replica(p)]
        ids = {int(f[1].split("@")[0].rsplit(":", 1)[1]): f[0] for f in self.node_lines()}
        target = ids[orphaned[0] if orphaned else primaries[0]]
        dead.start()
        with dead.client() as c:
            c("CLUSTER", "MEET", "127.0.0.1", str(live[0].port))

        def joined() -> bool:
            with dead.client(timeout=1.0) as c:
                return len(c("CLUSTER", "NODES").decode().splitlines()) == len(self.nodes)

        _wait(joined, "the new node to join")

        def replicate() -> bool:
            with dead.client(timeout=1.0) as c:
                c("CLUSTER", "REPLICATE", target)
            return True

        _wait(replicate, "the new node to accept its primary")

    def _has_replica(self, port: int) -> bool:
        with Resp(port, timeout=1.0) as c:
            return "connected_slaves:0" not in c("INFO", "replication").decode()

    def wait_replicas(self, timeout: float = 30.0) -> None:
        """Until every primary has a replica in sync (after a failed node came back)."""

        def synced() -> bool:
            for port in self.live_primaries():
                with Resp(port, timeout=1.0) as c:
                    info = c("INFO", "replication").decode()
                if "connected_slaves:1" not in info or "state=online" not in info:
                    return False
            return True

        _wait(synced, "every primary to have a replica", timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisSentinels:
    """A primary, its replica, and 3 Sentinels watching them (service ``mymaster``)."""

    SERVICE = "mymaster"

    def __init__(self, workdir: Path, sentinel_password: str | None = None) -> None:
        self.sentinel_binary = _binary("redis-sentinel")
        #: The Sentinels' own ``requirepass`` (the data nodes have none).
        self.sentinel_password = sentinel_password
        self.workdir = workdir
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(workdir / "a", extra=fast_sync)
        self.replica = RedisServer(workdir / "b", extra=fast_sync)
        self.sentinels: list[RedisServer] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> RedisSentinels:
        self.primary.start()
        self.replica.extra += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        _wait(self._replica_synced, "the replica to sync")
        for i in range(3):
            sentinel = RedisServer(self.workdir / f"sentinel{i}", password=self.sentinel_password)
            conf = sentinel.workdir / "sentinel.conf"
            auth = (
                f"requirepass {self.sentinel_password}\n"
                f"sentinel sentinel-pass {self.sentinel_password}\n"
                if self.sentinel_password
                else ""
            )
            conf.write_text(
                auth + f"port {sentinel.port}\n"
                "bind 127.0.0.1\n"
                f"dir {sentinel.workdir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            # RedisServer starts `redis-server <args>`: a Sentinel is the same binary
            # with a config file and --sentinel.
            sentinel.args = lambda conf=conf: [  # type: ignore[method-assign]
                self.sentinel_binary,
                str(conf),
            ]
            sentinel.start()
            self.sentinels.append(sentinel)
        _wait(lambda: self.primary_port() == self.primary.port, "the sentinels")
        _wait(self._sentinels_know_each_other, "the sentinels to see each other")
        return self

    def _replica_synced(self) -> bool:
        with self.replica.client(timeout=1.0) as c:
            return "master_link_status:up" in c("INFO", "replication").decode()

    def _sentinels_know_each_other(self) -> bool:
        for s in self.sentinels:
            with s.client(timeout=1.0) as c:
                info = dict(zip(*[iter(c("SENTINEL", "MASTER", self.SERVICE))] * 2))
                if int(info[b"num-other-sentinels"]) < 2 or int(info[b"num-slaves"]) < 1:
                    return False
        return True

    def primary_port(self) -> int:
        """The port of the primary the Sentinels name now."""
        for s in self.sentinels:
            try:
                with s.client(timeout=1.0) as c:  # authenticated if they need it
                    _host, port = c("SENTINEL", "get-master-addr-by-name", self.SERVICE)
                    return int(port)
            except (OSError, RespError):
                continue
        raise RuntimeError("no sentinel answers")

    def current_primary(self) -> RedisServer:
        port = self.primary_port()
        return self.primary if self.primary.port == port else self.replica

    def client(self, db: int = 0, timeout: float = 5.0) -> Resp:
        """A connection to the current primary."""
        return Resp(self.primary_port(), db=db, timeout=timeout)

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until the current primary has a replica in sync again (after a failover)."""

        def synced() -> bool:
            with self.client(timeout=1.0) as c:
                info = c("INFO", "replication").decode()
            return "connected_slaves:1" in info and "state=online" in info

        _wait(synced, "a replica in sync", timeout)

    def stop(self) -> None:
        for server in [*self.sentinels, self.primary, self.replica]:
            server.stop()

    def __enter__(self) -> RedisSentinels:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(deployment: Any) -> Iterator[Any]:
    try:
        yield deployment.start()
    finally:
        deployment.stop()


# -- load ----------------------------------------------------------------------------


def key_slot(key: str) -> int:
    """Redis Cluster's hash slot of ``key`` (CRC16/XMODEM of its hash tag, mod 16384)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    crc = 0
    for byte in raw:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


@dataclass
class Load:
    """What the load's clients saw."""

    statuses: dict[int, int] = field(default_factory=dict)
    #: Per session (cookie): the counter values acknowledged (200) answers showed.
    acked: dict[str, list[int]] = field(default_factory=dict)
    #: (monotonic time, cookie, status) of every answer.
    timeline: list[tuple[float, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, cookie: str, status: int, value: int | None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.timeline.append((time.monotonic(), cookie, status))
            if status == 200 and value is not None:
                self.acked.setdefault(cookie, []).append(value)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def count(self, since: float, status: int) -> int:
        return sum(1 for t, _, s in self.timeline if t >= since and s == status)


def _get(conn: http.client.HTTPConnection, path: str, cookie: str | None) -> tuple[int, str, str]:
    headers = {"Cookie": f"beaker.session.id={cookie}"} if cookie else {}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode()
    return response.status, body, response.getheader("Set-Cookie") or ""


def run_load(
    port: int, slots: list[list[str | None]], stop: threading.Event, load: Load
) -> list[threading.Thread]:
    """One thread per list of ``slots``, each incrementing (``/inc``) the counters of its
    sessions in turn until ``stop``; a ``None`` slot starts a new session on its first
    request and keeps its cookie."""

    def worker(mine: list[str | None]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = 0
        while not stop.is_set():
            cookie = mine[i % len(mine)]
            try:
                status, body, set_cookie = _get(conn, "/inc", cookie)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.01)
                continue
            if cookie is None and "beaker.session.id=" in set_cookie:
                cookie = set_cookie.split("beaker.session.id=", 1)[1].split(";", 1)[0]
                mine[i % len(mine)] = cookie
            if cookie is not None:
                value = int(body) if status == 200 else None
                load.record(cookie, status, value)
            if status == 503:
                time.sleep(0.02)
            i += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(m,), daemon=True) for m in slots]
    for t in threads:
        t.start()
    return threads


def final_values(port: int, cookies: list[str]) -> dict[str, int]:
    """Each session's counter as stored now (``/dump``; 0 for a session that is gone),
    retried while the store answers 503."""
    out: dict[str, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for cookie in cookies:
        for _ in range(600):
            status, body, _ = _get(conn, "/dump", cookie)
            if status == 200:
                out[cookie] = int(json.loads(body).get("n", 0))
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"/dump never answered 200 (last {status}: {body})")
    conn.close()
    return out


@dataclass
class Failover:
    """The numbers of one failover under load (printed and kept in a JSON report)."""

    requests: int
    ok: int
    unavailable: int
    errors: int
    #: Seconds a session went without a successful answer after the failure, at most: from
    #: the failure to its first success, or between two successes (requests blocked while
    #: the pool rode out the failover count, as do 503s).
    recovery: float
    #: Acknowledged increments missing from the counters' final values.
    lost: int
    sessions: int
    statuses: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def drive_failover(
    port: int,
    slots: list[list[str | None]],
    fail: Callable[[], None],
    recovered: Callable[[], None],
    *,
    warmup: float = 1.0,
    settle: float = 1.5,
) -> Failover:
    """Runs the load; once every session exists and ``warmup`` seconds have passed, calls
    ``fail`` (kill a primary, fail over), then ``recovered`` (blocks until the deployment
    is whole again), lets the load run ``settle`` more seconds, and counts."""
    load = Load()
    stop = threading.Event()
    named = {c for m in slots for c in m if c is not None}
    wanted = len(named) + sum(c is None for m in slots for c in m)
    threads = run_load(port, slots, stop, load)
    try:
        deadline = time.monotonic() + 120
        while len(load.acked) < wanted or load.answered == 0:
            assert time.monotonic() < deadline, f"load never reached {wanted} sessions"
            time.sleep(0.05)
        time.sleep(warmup)
        failed_at = time.monotonic()
        fail()
        recovered()
        time.sleep(settle)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    successes: dict[str, list[float]] = {}
    for t, cookie, status in load.timeline:
        if status == 200 and t >= failed_at:
            successes.setdefault(cookie, []).append(t)
    recovery = max(
        (max(b - a for a, b in zip([failed_at, *times], times)) for times in successes.values()),
        default=float("inf"),
    )
    finals = final_values(port, list(load.acked))
    # Without loss every acknowledged value of a counter is distinct and the final value is
    # at least the highest: a value acknowledged twice was lost once (the counter went back
    # and counted it again), and one above the final value was lost at the end.
    lost = sum(
        len(values) - len(set(values)) + max(0, max(values) - finals[c])
        for c, values in load.acked.items()
    )
    statuses = {str(k): v for k, v in sorted(load.statuses.items())}
    return Failover(
        requests=load.answered,
        ok=load.statuses.get(200, 0),
        unavailable=load.statuses.get(503, 0),
        errors=sum(v for k, v in load.statuses.items() if k not in (200, 503)),
        recovery=round(recovery, 2),
        lost=lost,
        sessions=len(load.acked),
        statuses=statuses,
    )


def report(path: Path, name: str, numbers: dict[str, Any]) -> None:
    """Adds ``numbers`` under ``name`` to the JSON report ``path`` and prints them."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = numbers
    path.write_text(json.dumps(data, indent=2))
    print(f"\n{name}: {json.dumps(numbers)}")
