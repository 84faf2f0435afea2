"""Helpers for the Redis tests: a real ``redis-server`` the tests start, stop, kill and
restart themselves (``conftest.redis_server`` is the one shared by the run), a minimal
RESP client (redis-py is not a dependency), the Redis key layout, and the small programs
run in child processes (an HTTP server of the test app, a worker that dies holding a
session lock).

``redis-server`` is looked up on ``PATH``: when it is missing the Redis tests are skipped
on a developer machine, but fail under CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import RACE_WINDOW, TESTS_DIR, build_app, client_with, require_posix


def in_ci() -> bool:
    """Whether we run under CI (the ``CI`` variable most CI systems set)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def redis_server_binary() -> str:
    """Path of ``redis-server``; skips the test if missing, except under CI (fails), and
    on Windows."""
    require_posix("redis-server (Unix sockets, SIGKILL, SIGSTOP)")
    path = shutil.which("redis-server")
    if path is None:
        if in_ci():
            pytest.fail("redis-server is not installed (CI installs it with apt-get)")
        pytest.skip("redis-server is not installed")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data_key(prefix: str, sid: str) -> str:
    """The Redis key of a session's record (the id appears only as its SHA-256)."""
    return f"{prefix}s:{hashlib.sha256(sid.encode()).hexdigest()}"


def lock_key(prefix: str, sid: str) -> str:
    """The Redis key of a session's lock."""
    return f"{prefix}l:{hashlib.sha256(sid.encode()).hexdigest()}"


def touch_key(prefix: str, sid: str) -> str:
    """The Redis key of a touched session's last access time (deleted by the next save)."""
    return f"{prefix}a:{hashlib.sha256(sid.encode()).hexdigest()}"


class RespError(Exception):
    """An error reply from Redis."""


class Resp:
    """A tiny blocking RESP2 client: ``Resp(port=...)("SET", "k", b"v")``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        unix: str | None = None,
        password: str | None = None,
        db: int = 0,
        timeout: float = 5.0,
    ) -> None:
        if unix is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            assert port is not None
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        if password is not None:
            self("AUTH", password)
        if db:
            self("SELECT", str(db))

    def __call__(self, *args: str | bytes | int) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("connection closed by redis-server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 with no persistence, owned by the tests.

    ``kill()`` + ``start()`` brings it back on the same port (and socket), empty.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        unixsocket: str | None = None,
        extra: list[str] | None = None,
        pick_port: Callable[[], int] | None = None,
    ) -> None:
        self.binary = redis_server_binary()
        #: How a port is chosen (a Cluster node also needs port + 10000 free).
        self.pick_port = pick_port or free_port
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.unixsocket = unixsocket
        self.extra = list(extra or [])
        self.port = self.pick_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False
        self.log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unixsocket:
            args += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        return args + self.extra

    def start(self, wait: float = 10.0) -> RedisServer:
        """Starts the server (on the same port as before) and waits until PING answers."""
        for _attempt in range(3):
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
                )
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with self.client(timeout=1.0) as c:
                        if c("PING") == "PONG":
                            self.started = True
                            return self
                except (OSError, RespError):
                    time.sleep(0.02)
            self._reap()
            if not self.started:
                self.port = self.pick_port()  # someone took the port between check and use
            time.sleep(0.2)
        raise RuntimeError(f"redis-server did not start; log:\n{self.log.read_text()}")

    def client(self, db: int = 0, timeout: float = 5.0) -> Resp:
        """A RESP connection to the server (authenticated if it has a password)."""
        return Resp(self.port, password=self.password, db=db, timeout=timeout)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, its data (never persisted) is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stops the server if it runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def keys(self, pattern: str = "*", db: int = 0) -> list[str]:
        with self.client(db=db) as c:
            return sorted(k.decode() for k in c("KEYS", pattern))


@contextmanager
def running_server(workdir: Path, **kwargs: Any) -> Iterator[RedisServer]:
    """A started ``RedisServer``, stopped on exit."""
    server = RedisServer(workdir, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- programs run in child processes -------------------------------------------------


def child_env() -> dict[str, str]:
    """Environment of a child Python that imports ``helpers`` and this module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return env


def _app(config: dict[str, Any]) -> Any:
    app = build_app(config.pop("SESSION_DATA_DIR", "/nonexistent-unused"), **config)

    return add_contention_routes(app)


def add_contention_routes(app: Any) -> Any:
    """``/hold`` (takes the lock and never returns), ``/slowinc`` (a widened
    read-modify-write of ``n``) and ``/pid``: the routes of the contention tests."""
    from flask import session as flask_session

    @app.route("/hold")
    def hold() -> str:
        # Takes the session lock, says so, and never returns (the parent kills us).
        flask_session.get("n")
        print("locked", flush=True)
        time.sleep(3600)
        return "unreachable"

    @app.route("/slowinc")
    def slowinc() -> str:
        n = flask_session.get("n", 0)
        time.sleep(RACE_WINDOW)  # widen the read→write window: lost updates would show
        flask_session["n"] = n + 1
        return str(n + 1)

    @app.route("/pid")
    def pid() -> str:
        return str(os.getpid())

    return app


def serve(config_json: str) -> None:
    """Serves the test app over HTTP on a free port; prints the port, then serves forever."""
    from werkzeug.serving import make_server

    app = _app(json.loads(config_json))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


def hold_lock(config_json: str, sid: str) -> None:
    """Opens session ``sid`` through a request and blocks holding its lock."""
    app = _app(json.loads(config_json))
    client_with(app, sid).get("/hold")


def increment_worker(config_json: str, sid: str, count: str, out: str) -> None:
    """``count`` slow increments of counter ``n`` of session ``sid``; writes the statuses."""
    client = client_with(_app(json.loads(config_json)), sid)
    statuses = [client.get("/slowinc").status_code for _ in range(int(count))]
    Path(out).write_text(json.dumps(statuses))


def memory_app() -> Any:
    """A WSGI app with the memory backend (for gunicorn)."""
    return _app({"SESSION_TYPE": "memory"})


def run_child(target: str, *args: str) -> subprocess.Popen[str]:
    """Starts ``python -c 'import redis_server; redis_server.<target>(*args)'``."""
    code = f"import sys, redis_server; redis_server.{target}(*sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=TESTS_DIR,
    )


@contextmanager
def app_server(config: dict[str, Any]) -> Iterator[str]:
    """An HTTP server of the test app in a child process; yields its base URL."""
    proc = run_child("serve", json.dumps(config))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"app server did not start: {line!r}\n{err}")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
