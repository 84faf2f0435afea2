"""Real servers: gunicorn (sync workers, gthread, ``--preload``) on 127.0.0.1 running
``tests/server_app.py``, driven by several client threads over HTTP (SPEC §7).

Locking mode must lose no update of a session shared by all the clients, across worker
processes and threads; non-locking mode must keep every key that only one client changes
(same key: last writer wins). The lock is never held while a response streams, is released
by a view that raises and by a worker killed with SIGKILL, and a wait past
``SESSION_LOCK_TIMEOUT`` gives a 503 instead of hanging.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import COOKIE, TESTS_DIR

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="gunicorn tests need Linux")

#: How long a server may take to start listening and answer.
START_TIMEOUT = 30.0


@functools.lru_cache(maxsize=1)
def _gunicorn_extra_args() -> tuple[str, ...]:
    """``--no-control-socket`` where gunicorn has a control socket (>= 24): concurrent
    test servers must not share ``~/.gunicorn/gunicorn.ctl``."""
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ("--no-control-socket",) if "--no-control-socket" in out else ()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def pid(self) -> int:
        return int(self.headers["X-Worker-Pid"])

    def session_cookie(self) -> str | None:
        for value in self.headers.get_all("Set-Cookie") or []:
            match = re.match(rf"{re.escape(COOKIE)}=([^;]*)", value)
            if match:
                return match.group(1)
        return None


class Client:
    """One keep-alive HTTP connection presenting one session cookie (like a browser tab)."""

    def __init__(self, port: int, sid: str | None = None, *, keepalive: bool = True) -> None:
        self.port = port
        self.sid = sid
        self.keepalive = keepalive
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> Reply:
        headers = {"Cookie": f"{COOKIE}={self.sid}"} if self.sid else {}
        if not self.keepalive:
            headers["Connection"] = "close"
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        reply = Reply(resp.status, resp.msg, resp.read())
        new = reply.session_cookie()
        if new is not None:
            self.sid = new or None
        return reply

    def stream(self, path: str) -> http.client.HTTPResponse:
        """Starts a request and returns the response with its body still unread."""
        headers = {"Cookie": f"{COOKIE}={self.sid}"} if self.sid else {}
        self.conn.request("GET", path, headers=headers)
        return self.conn.getresponse()

    def close(self) -> None:
        self.conn.close()


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    gates: Path
    pids: set[int] = field(default_factory=set)

    def client(self, sid: str | None = None, *, keepalive: bool = True) -> Client:
        return Client(self.port, sid, keepalive=keepalive)

    def open_gate(self, name: str) -> None:
        (self.gates / name).write_text("open")

    def wait_pid_file(self, name: str) -> int:
        path = self.gates / f"{name}.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while not path.exists() or not path.read_text():
            assert time.monotonic() < deadline, f"{name} never started\n{self.log_tail()}"
            time.sleep(0.01)
        return int(path.read_text())

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@contextlib.contextmanager
def gunicorn(
    tmp_path: Path,
    *args: str,
    locking: bool = True,
    lock_timeout: float = 10.0,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Runs ``gunicorn server_app:app`` on a free port of 127.0.0.1; always stopped."""
    data_dir = tmp_path / "sessions"
    gates = tmp_path / "gates"
    gates.mkdir(exist_ok=True)
    log = tmp_path / "gunicorn.log"
    full_env = {
        **os.environ,
        "FBS_DATA_DIR": str(data_dir),
        "FBS_GATE_DIR": str(gates),
        "FBS_LOCKING": "1" if locking else "0",
        "FBS_LOCK_TIMEOUT": str(lock_timeout),
        # Lost updates are counted here, not refusals (tests/test_waiters.py sets "").
        "FBS_MAX_WAITERS": "none",
        **(env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(TESTS_DIR),
        "--graceful-timeout",
        "5",
        "--timeout",
        "60",
        *_gunicorn_extra_args(),
        *args,
        "server_app:app",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    try:
        server = Server(_wait_port(proc, log), proc, log, data_dir, gates)
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            # The server's own process group (start_new_session): master and workers.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


def _wait_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not start:\n{log.read_text()}")


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        client = server.client()
        try:
            if client.get("/pid").status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"server never answered\n{server.log_tail()}") from None
            time.sleep(0.05)
        finally:
            client.close()


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    pids: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def _drive(server: Server, sid: str | None, paths: list[str], keepalive: bool) -> Tally:
    """Sends ``paths`` in order (over one keep-alive connection, or a new connection per
    request); returns what came back."""
    tally = Tally()
    client = server.client(sid, keepalive=keepalive)
    try:
        for path in paths:
            try:
                reply = client.get(path)
            except OSError as exc:  # counted, never retried: a retry could double-count
                tally.errors.append(f"{path}: {exc!r}")
                client.close()
                client = server.client(client.sid, keepalive=keepalive)
                continue
            tally.statuses[reply.status] += 1
            tally.pids.add(reply.pid)
    finally:
        client.close()
    return tally


def _load(jobs: list[tuple[Server, str | None, list[str]]]) -> Tally:
    """Runs every job in its own client thread at once; merges the tallies. Half the
    clients keep their connection alive, the others reconnect for every request, so
    that the requests of one session reach every worker process (a threaded worker
    would otherwise serve all the kept-alive connections it accepted)."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        tallies = list(pool.map(lambda i: _drive(*jobs[i], keepalive=i % 2 == 0), range(len(jobs))))
    total = Tally()
    for t in tallies:
        total.statuses.update(t.statuses)
        total.pids |= t.pids
        total.errors += t.errors
    return total


def _sweeper_threads(server: Server, workers: int) -> set[bool]:
    """Asks ``/sweeper`` over new connections until every worker process answered;
    returns the set of their answers."""
    seen: dict[int, bool] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while len(seen) < workers and time.monotonic() < deadline:
        client = server.client(keepalive=False)
        try:
            data = json.loads(client.get("/sweeper").body)
        finally:
            client.close()
        seen[data["pid"]] = data["running"]
    assert len(seen) == workers, f"only workers {sorted(seen)} answered"
    return set(seen.values())


def _new_session(server: Server, path: str = "/inc") -> str:
    client = server.client()
    try:
        reply = client.get(path)
        assert reply.status == 200, reply.text
        assert client.sid is not None
        return client.sid
    finally:
        client.close()


def _dump(server: Server, sid: str) -> dict[str, Any]:
    client = server.client(sid)
    try:
        reply = client.get("/dump")
        assert reply.status == 200, reply.text
        data: dict[str, Any] = json.loads(reply.body)
        return data
    finally:
        client.close()


# -- locking mode: no lost update ------------------------------------------------------

SHARED_CLIENTS, SHARED_INCS = 6, 30
OWN_CLIENTS, OWN_INCS = 4, 15
#: Load rounds at most, until the load has reached two worker processes.
MAX_ROUNDS = 4

CONFIGS = {
    "sync-w2": ("-w", "2"),
    "sync-w4": ("-w", "4"),
    "gthread-w2x4": ("-w", "2", "-k", "gthread", "--threads", "4"),
    "sync-w2-preload": ("-w", "2", "--preload"),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_locking_loses_no_update(tmp_path: Path, config: str) -> None:
    """6 clients x 30 increments of one shared session plus 4 clients x 15 on their own
    sessions, spread over every worker: 0 lost updates, every request a 200. With
    ``--preload`` the shared session was created and read by the master before the fork
    (and the automatic sweeper runs every second): the workers use it normally."""
    env: dict[str, str] = {}
    if config.endswith("preload"):
        env = {"FBS_WARMUP_FILE": str(tmp_path / "warm.sid"), "FBS_SWEEP": "1"}
    with gunicorn(tmp_path, *CONFIGS[config], env=env) as server:
        if env:
            shared = (tmp_path / "warm.sid").read_text()
            start = 0
        else:
            shared = _new_session(server)
            start = 1
        own = [_new_session(server) for _ in range(OWN_CLIENTS)]
        jobs: list[tuple[Server, str | None, list[str]]] = [
            (server, shared, ["/inc"] * SHARED_INCS) for _ in range(SHARED_CLIENTS)
        ]
        jobs += [(server, sid, ["/inc"] * OWN_INCS) for sid in own]
        # The load must reach two processes to test anything across them: on a busy
        # machine one worker may accept every connection of a round, so it is repeated
        # (a few times at most) until a second worker served some of it.
        tally, rounds = Tally(), 0
        while rounds < MAX_ROUNDS and len(tally.pids) < 2:
            more = _load(jobs)
            rounds += 1
            tally.statuses.update(more.statuses)
            tally.pids |= more.pids
            tally.errors += more.errors
        final = _dump(server, shared)
        owns = [_dump(server, sid)["n"] for sid in own]
        if env:
            sweepers = _sweeper_threads(server, workers=2)
            # Some process swept the store (within about a second of starting).
            stamp = server.data_dir / "sweep.stamp"
            deadline = time.monotonic() + START_TIMEOUT
            while not stamp.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert stamp.exists(), f"nobody ever swept\n{server.log_tail()}"
    expected = start + rounds * SHARED_CLIENTS * SHARED_INCS
    lost = expected - final["n"]
    requests = rounds * (SHARED_CLIENTS * SHARED_INCS + OWN_CLIENTS * OWN_INCS)
    print(
        f"\n[{config}] requests={requests} lost_updates={lost} "
        f"workers={len(tally.pids)} rounds={rounds}"
    )
    assert tally.errors == []
    assert tally.statuses == Counter({200: requests})
    assert lost == 0
    assert owns == [1 + rounds * OWN_INCS] * OWN_CLIENTS
    assert len(tally.pids) >= 2, "the load never reached a second worker process"
    if env:
        assert final["warm"] == "yes"
        assert sweepers == {True}, "a forked worker has no sweeper thread"


# -- non-locking mode: key-level merge -------------------------------------------------

NL_CLIENTS, NL_ROUNDS = 6, 15
NL_CONFIGS = {
    "sync-w4": ("-w", "4"),
    "gthread-w2x4": ("-w", "2", "-k", "gthread", "--threads", "4"),
}


@pytest.mark.parametrize("config", list(NL_CONFIGS))
def test_nonlocking_keys_of_concurrent_requests_survive(tmp_path: Path, config: str) -> None:
    """SESSION_LOCKING=False, one session shared by 6 clients; each round a client bumps
    its own counter, appends to its own list in place and increments the shared ``n``.
    Every own key ends exact (changes of different keys are merged, nested mutation is
    saved); ``n`` never exceeds the number of increments (the same key: last writer
    wins, so some increments may be lost — counted, not required to be 0).

    A gthread worker may accept every connection of a short run by itself (its threads keep
    up with 6 clients), so the run is repeated on a fresh session, each time with every
    assertion, until the load has reached two worker processes (at most 4 runs)."""
    requests = NL_CLIENTS * NL_ROUNDS * 3
    pids: set[int] = set()
    with gunicorn(tmp_path, *NL_CONFIGS[config], locking=False) as server:
        for attempt in range(4):
            shared = _new_session(server)
            jobs: list[tuple[Server, str | None, list[str]]] = []
            for c in range(NL_CLIENTS):
                paths: list[str] = []
                for i in range(NL_ROUNDS):
                    paths += [f"/bump/k{c}", f"/append/l{c}/{i}", "/inc"]
                jobs.append((server, shared, paths))
            tally = _load(jobs)
            final = _dump(server, shared)
            same_key_lost = 1 + NL_CLIENTS * NL_ROUNDS - final["n"]
            print(
                f"\n[nonlocking {config} run {attempt + 1}] requests={requests} own-key "
                f"losses=0 expected, shared-key last-writer-wins losses={same_key_lost} "
                f"workers={len(tally.pids)}"
            )
            assert tally.errors == []
            assert tally.statuses == Counter({200: requests})
            for c in range(NL_CLIENTS):
                assert final[f"k{c}"] == NL_ROUNDS, final
                assert final[f"l{c}"] == [str(i) for i in range(NL_ROUNDS)], final
            assert 1 <= final["n"] <= 1 + NL_CLIENTS * NL_ROUNDS
            pids = tally.pids
            if len(pids) >= 2:
                break
    assert len(pids) >= 2, "no run reached a second worker process"


# -- lock behaviour --------------------------------------------------------------------


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_lock_wait_past_timeout_gives_503(tmp_path: Path) -> None:
    """Two sync workers, SESSION_LOCK_TIMEOUT=1: while one request holds the session
    (waiting on a gate), another request of it gets 503 + Retry-After: 1 with a plain
    text body and no session cookie — before the holder finishes, i.e. not a hang; the
    holder's write is kept and the rejected request changed nothing."""
    with gunicorn(tmp_path, "-w", "2", lock_timeout=1.0) as server:
        sid = _new_session(server)
        holder = server.client(sid)
        thread, result = _in_thread(lambda: holder.get("/hold/g1"))
        try:
            holder_pid = server.wait_pid_file("g1")
            reply = server.client(sid).get("/inc")
            still_holding = thread.is_alive()
        finally:
            server.open_gate("g1")
            thread.join(60)
            holder.close()
        assert reply.status == 503, reply.text
        assert reply.headers["Retry-After"] == "1"
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert reply.text.strip()
        assert reply.session_cookie() is None
        assert reply.pid != holder_pid  # really another process
        assert still_holding
        assert result["value"].status == 200
        assert _dump(server, sid) == {"n": 1, "held": 1}


@pytest.mark.parametrize("route", ["stream", "stream_lazy"])
def test_streaming_response_does_not_hold_the_lock(tmp_path: Path, route: str) -> None:
    """A response whose body streams (stream_with_context) while it waits on a gate: a
    concurrent request of the same session completes (200, its write stored) while the
    stream is still open — whether the view read the session before returning
    (``stream``) or the body first touches it (``stream_lazy``)."""
    with gunicorn(tmp_path, "-w", "2", lock_timeout=2.0) as server:
        sid = _new_session(server)
        streamer = server.client(sid)
        try:
            resp = streamer.stream(f"/{route}/g2")
            assert resp.status == 200
            first = resp.readline()
            assert first == b"n=1\n"
            other = server.client(sid).get("/inc")
            assert resp.isclosed() is False
        finally:
            server.open_gate("g2")
        rest = resp.read()
        streamer.close()
        assert other.status == 200, other.text
        assert other.text == "2"
        assert rest == b"end\n"
        assert other.pid != int(resp.headers["X-Worker-Pid"])
        assert _dump(server, sid) == {"n": 2}


def test_view_that_raises_releases_the_lock(tmp_path: Path) -> None:
    """A view raising after touching the session gives a 500; the next requests of the
    session (lock timeout 1 s, whichever worker gets them) succeed, and the failed
    request's change was not saved."""
    with gunicorn(tmp_path, "-w", "2", lock_timeout=1.0) as server:
        sid = _new_session(server)
        client = server.client(sid)
        try:
            assert client.get("/boom").status == 500
            replies = [client.get("/inc") for _ in range(4)]
        finally:
            client.close()
        assert [r.status for r in replies] == [200] * 4
        assert _dump(server, sid) == {"n": 5}


def test_worker_killed_holding_the_lock_releases_it(tmp_path: Path) -> None:
    """A worker SIGKILLed while its request holds the session: the next request of the
    session (lock timeout 2 s) succeeds with the last committed data; gunicorn replaces
    the worker."""
    with gunicorn(tmp_path, "-w", "2", lock_timeout=2.0) as server:
        sid = _new_session(server)
        holder = server.client(sid)
        thread, result = _in_thread(lambda: holder.get("/hold/g3"))
        try:
            victim = server.wait_pid_file("g3")
            os.kill(victim, signal.SIGKILL)
            thread.join(60)
        finally:
            server.open_gate("g3")
            holder.close()
        assert isinstance(result.get("error"), (OSError, http.client.HTTPException))
        replies = [server.client(sid).get("/inc") for _ in range(3)]
        assert [r.status for r in replies] == [200] * 3
        assert [r.text for r in replies] == ["2", "3", "4"]
        assert all(r.pid != victim for r in replies)
        assert _dump(server, sid) == {"n": 4}
