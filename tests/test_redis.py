"""The Redis backend against a real ``redis-server`` (SPEC §10): TTLs, key layout, URL
forms, several server processes sharing one Redis, cross-process locking, failures
(unreachable, silent, killed and restarted Redis), fork safety; and the memory backend's
warning under several worker processes.

The idle timeout and touch interval are exercised on the apps' fake clock (the ``clock``
fixture); where Redis's own key TTL must look older, it is set back with PEXPIRE. The
sleeps left are about real servers and threads (Redis's idle-client cron, a lock TTL
running out in Redis, a waiting thread)."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError
from helpers import COOKIE, SID_RE, TESTS_DIR, FakeClock, build_app, client_with, cookie_of
from redis_server import (
    RedisServer,
    app_server,
    child_env,
    data_key,
    free_port,
    in_ci,
    lock_key,
    run_child,
    running_server,
    touch_key,
)

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server with a password and a unix socket (short path under /tmp)."""
    sockdir = tempfile.mkdtemp(prefix="fbs-", dir="/tmp")
    sock = os.path.join(sockdir, "r.sock")
    try:
        with running_server(
            tmp_path_factory.mktemp("redis-auth"), password=PASSWORD, unixsocket=sock
        ) as server:
            yield server
    finally:
        if os.path.exists(sock):
            os.unlink(sock)
        os.rmdir(sockdir)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test only (to kill and restart)."""
    with running_server(tmp_path / "redis") as server:
        yield server


def redis_app(url: str, prefix: str, **config: Any) -> Flask:
    config.setdefault("SESSION_REDIS_CONNECT_TIMEOUT", 1.0)
    config.setdefault("SESSION_REDIS_TIMEOUT", 1.0)
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


def new_session(app: Flask, path: str = "/set/a/1") -> tuple[Any, str]:
    client = app.test_client()
    assert client.get(path).status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return client, sid


def http_get(base: str, path: str, sid: str | None = None) -> tuple[int, str, str | None]:
    """GET over real HTTP; returns (status, body, session id set by the response)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": f"{COOKIE}={sid}"} if sid else {})
        response = conn.getresponse()
        body = response.read().decode()
        cookie = response.getheader("Set-Cookie") or ""
        match = re.match(rf"{re.escape(COOKIE)}=({SID_RE.pattern});", cookie)
        return response.status, body, match.group(1) if match else None
    finally:
        conn.close()


def assert_clean_503(response: Any, *secrets: str) -> None:
    """A 503 with Retry-After and a short plain-text body revealing nothing internal."""
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    assert "redis" not in body.lower()
    for secret in ("127.0.0.1", *secrets):
        assert secret not in body
    assert "Set-Cookie" not in response.headers


# -- record, TTL, keys ---------------------------------------------------------------


def test_ttl_follows_idle_timeout(redis_server: RedisServer, prefix: str) -> None:
    """The record's TTL is SESSION_TIMEOUT; the lock is gone after the request."""
    app = redis_app(redis_server.url, prefix, SESSION_TIMEOUT=60)
    _, sid = new_session(app)
    with redis_server.client() as c:
        assert 55_000 < c("PTTL", data_key(prefix, sid)) <= 60_000
        assert c("EXISTS", lock_key(prefix, sid)) == 0


def test_ttl_capped_by_absolute_timeout(redis_server: RedisServer, prefix: str) -> None:
    """With an absolute lifetime shorter than the idle timeout, the TTL is what remains
    of the lifetime."""
    app = redis_app(redis_server.url, prefix, SESSION_TIMEOUT=100, SESSION_ABSOLUTE_TIMEOUT=10)
    _, sid = new_session(app)
    with redis_server.client() as c:
        assert 5_000 < c("PTTL", data_key(prefix, sid)) <= 10_000


def test_no_timeout_no_ttl(redis_server: RedisServer, prefix: str) -> None:
    """SESSION_TIMEOUT=None and no absolute lifetime: the key does not expire."""
    app = redis_app(redis_server.url, prefix, SESSION_TIMEOUT=None)
    client, sid = new_session(app)
    with redis_server.client() as c:
        assert c("PTTL", data_key(prefix, sid)) == -1
    assert client.get("/get/a").text == "1"


def test_read_refreshes_ttl_without_rewriting(
    redis_server: RedisServer, prefix: str, clock: FakeClock
) -> None:
    """A read after more than timeout/10 pushes the TTL back to the full timeout and
    leaves the stored value byte-for-byte unchanged; no cookie is sent."""
    app = clock.install(redis_app(redis_server.url, prefix, SESSION_TIMEOUT=3))
    client, sid = new_session(app)
    key = data_key(prefix, sid)
    clock.advance(0.7)
    with redis_server.client() as c:
        assert c("PEXPIRE", key, 2_300) == 1  # what 0.7 s leave of Redis's TTL
        before, ttl_before = c("GET", key), c("PTTL", key)
        response = client.get("/get/a")
        after, ttl_after = c("GET", key), c("PTTL", key)
    assert response.text == "1"
    assert "Set-Cookie" not in response.headers
    assert after == before
    assert ttl_before <= 2_400
    assert ttl_after > ttl_before + 400


def test_reads_keep_session_alive(redis_server: RedisServer, prefix: str, clock: FakeClock) -> None:
    """Reads alone keep a session alive past its first TTL (sliding idle timeout); a
    touch keeps its time in its own key, which the next save removes."""
    app = clock.install(redis_app(redis_server.url, prefix, SESSION_TIMEOUT=60))
    client, sid = new_session(app)
    for _ in range(2):
        clock.advance(36)
        assert client.get("/get/a").text == "1"
    assert cookie_of(client) == sid
    assert redis_server.keys(f"{prefix}*") == sorted(
        [data_key(prefix, sid), touch_key(prefix, sid)]
    )
    assert client.get("/set/a/2").status_code == 200
    assert redis_server.keys(f"{prefix}*") == [data_key(prefix, sid)]


def test_expiry_checked_on_read(redis_server: RedisServer, prefix: str, clock: FakeClock) -> None:
    """A record whose TTL was removed still expires: the age is checked on read."""
    app = clock.install(redis_app(redis_server.url, prefix, SESSION_TIMEOUT=60))
    client, sid = new_session(app)
    key = data_key(prefix, sid)
    with redis_server.client() as c:
        assert c("PERSIST", key) == 1
        clock.advance(61)
        assert c("EXISTS", key) == 1
        assert client.get("/get/a").text == "None"
        assert c("EXISTS", key) == 0


def test_keys_hide_session_id_and_use_prefix(redis_server: RedisServer, prefix: str) -> None:
    """One key per session, under the prefix, named by the id's SHA-256 (never the id);
    another prefix is another namespace."""
    app = redis_app(redis_server.url, prefix)
    _, sid = new_session(app)
    assert redis_server.keys(f"{prefix}*") == [data_key(prefix, sid)]
    assert redis_server.keys(f"*{sid}*") == []
    assert redis_server.keys(f"*{sid[:16]}*") == []
    other = redis_app(redis_server.url, prefix + "other:")
    client = client_with(other, sid)
    assert client.get("/get/a").text == "None"
    client.get("/set/b/2")
    assert cookie_of(client) != sid


def test_tampered_record_rejected(redis_server: RedisServer, prefix: str) -> None:
    """A record with one flipped byte is refused (integrity tag) and removed."""
    app = redis_app(redis_server.url, prefix)
    client, sid = new_session(app)
    key = data_key(prefix, sid)
    with redis_server.client() as c:
        value = bytearray(c("GET", key))
        value[-1] ^= 0x01
        c("SET", key, bytes(value), "KEEPTTL")
        assert client.get("/get/a").text == "None"
        assert c("EXISTS", key) == 0


def test_other_secret_key_rejected(redis_server: RedisServer, prefix: str) -> None:
    """A record written under another SECRET_KEY is not accepted (HMAC, as for files)."""
    writer = redis_app(redis_server.url, prefix, SECRET_KEY="one-key")
    _, sid = new_session(writer)
    reader = redis_app(redis_server.url, prefix, SECRET_KEY="other-key")
    assert client_with(reader, sid).get("/get/a").text == "None"
    rotated = redis_app(
        redis_server.url, prefix, SECRET_KEY="new", SECRET_KEY_FALLBACKS=["one-key"]
    )
    _, sid2 = new_session(writer)
    assert client_with(rotated, sid2).get("/get/a").text == "1"


# -- URL forms -------------------------------------------------------------------------


def test_db_number_selects_database(redis_server: RedisServer, prefix: str) -> None:
    """redis://host:port/3 stores in database 3, not 0."""
    app = redis_app(f"redis://127.0.0.1:{redis_server.port}/3", prefix)
    client, sid = new_session(app)
    assert redis_server.keys(f"{prefix}*", db=3) == [data_key(prefix, sid)]
    assert redis_server.keys(f"{prefix}*", db=0) == []
    assert client.get("/get/a").text == "1"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{pw}@127.0.0.1:{port}/0",
        "redis://default:{pw}@127.0.0.1:{port}/2",
        "unix://{sock}?pass={pw}&db=2",
        "redis+unix://{sock}?pass={pw}",
    ],
)
def test_password_and_unix_socket_urls(auth_server: RedisServer, prefix: str, url: str) -> None:
    """Password (with or without user name), db number and unix socket URL forms work."""
    assert auth_server.unixsocket is not None
    full = url.format(pw=PASSWORD, port=auth_server.port, sock=auth_server.unixsocket)
    app = redis_app(full, prefix)
    client, sid = new_session(app)
    assert client.get("/inc").text == "1"
    db = 2 if "db=2" in full or full.endswith("/2") else 0
    assert auth_server.keys(f"{prefix}*", db=db) == [data_key(prefix, sid)]


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_bad_password_gives_clean_503(
    auth_server: RedisServer, prefix: str, password: str | None
) -> None:
    """Missing or wrong password: a 503 that reveals neither the address nor the password."""
    auth = f":{password}@" if password else ""
    app = redis_app(f"redis://{auth}127.0.0.1:{auth_server.port}/0", prefix)
    client = app.test_client()
    response = client.get("/set/a/1")
    assert_clean_503(response, str(auth_server.port), *([password] if password else []))
    assert client.get("/none").text == "none"


@pytest.mark.parametrize(
    "key, value",
    [
        ("SESSION_REDIS_URL", "http://127.0.0.1:6379/0"),
        ("SESSION_REDIS_URL", ""),
        ("SESSION_REDIS_URL", 6379),
        ("SESSION_REDIS_URL", "redis://127.0.0.1:notaport/0"),
        ("SESSION_REDIS_URL", "redis://127.0.0.1:6379/notadb"),
        ("SESSION_REDIS_URL", "redis://127.0.0.1:99999/0"),
        ("SESSION_REDIS_URL", "redis://"),
        ("SESSION_REDIS_URL", "unix://"),
        ("SESSION_REDIS_URL", "unix:///tmp/r.sock?db=x"),
        ("SESSION_REDIS_PREFIX", None),
        ("SESSION_REDIS_CONNECT_TIMEOUT", 0),
        ("SESSION_REDIS_TIMEOUT", -1),
        ("SESSION_REDIS_LOCK_TTL", "soon"),
    ],
)
def test_bad_redis_settings_rejected_at_init(key: str, value: Any) -> None:
    """Unusable Redis settings raise ConfigurationError naming the key, at init_app."""
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="redis", **{key: value}, SECRET_KEY="k")
    with pytest.raises(ConfigurationError, match=key):
        fbs.init_app(app)


@pytest.mark.parametrize(
    "url",
    ["redis://:{pw}@127.0.0.1:notaport/0", "http://user:{pw}@127.0.0.1:6379/0"],
)
def test_bad_url_error_hides_password(url: str) -> None:
    """The ConfigurationError for a bad URL does not repeat the password in it."""
    app = Flask(__name__)
    app.config.update(
        SESSION_TYPE="redis", SESSION_REDIS_URL=url.format(pw=PASSWORD), SECRET_KEY="k"
    )
    with pytest.raises(ConfigurationError, match="SESSION_REDIS_URL") as info:
        fbs.init_app(app)
    assert PASSWORD not in str(info.value)


def test_init_does_not_connect() -> None:
    """init_app opens no connection: an app for an absent Redis initialises fine (pre-fork
    servers), and only requests that use the session fail."""
    app = redis_app(f"redis://127.0.0.1:{free_port()}/0", "t:")
    client = app.test_client()
    assert client.get("/none").status_code == 200
    assert client.get("/get/a").text == "None"  # no cookie: nothing to read
    assert_clean_503(client.get("/set/a/1"))


# -- several processes -------------------------------------------------------------------


def test_two_server_processes_share_sessions(redis_server: RedisServer, prefix: str) -> None:
    """A user moving between two app servers (separate processes) keeps the session."""
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": redis_server.url,
        "SESSION_REDIS_PREFIX": prefix,
    }
    with app_server(config) as a, app_server(config) as b:
        assert http_get(a, "/pid")[1] != http_get(b, "/pid")[1]
        status, body, sid = http_get(a, "/inc")
        assert (status, body) == (200, "1") and sid is not None
        for n in range(2, 12):
            status, body, new_sid = http_get(b if n % 2 else a, "/inc", sid)
            assert (status, body) == (200, str(n))
            assert new_sid in (None, sid)
        assert http_get(b, "/get/n", sid)[1] == "11"


def test_processes_lose_no_update(redis_server: RedisServer, prefix: str, tmp_path: Path) -> None:
    """4 processes x 25 read-modify-write requests on one session: every one counts."""
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": redis_server.url,
        "SESSION_REDIS_PREFIX": prefix,
    }
    app = redis_app(redis_server.url, prefix)
    client, sid = new_session(app, "/inc")
    outs = [tmp_path / f"out{i}.json" for i in range(4)]
    procs = [run_child("increment_worker", json.dumps(config), sid, "25", str(out)) for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
    for out in outs:
        assert json.loads(out.read_text()) == [200] * 25
    assert client.get("/get/n").text == "101"


def _connected_clients(server: RedisServer) -> int:
    """Connections Redis has open, not counting the one asking."""
    with server.client() as c:
        info = c("INFO", "clients").decode()
    return int(re.search(r"connected_clients:(\d+)", info).group(1)) - 1  # type: ignore[union-attr]


def test_fork_after_init(redis_server: RedisServer, prefix: str) -> None:
    """An app initialised (and already talking to Redis) before fork works in parent and
    child at the same time: the child opens its own connection instead of reusing the
    parent's (a shared socket would interleave replies)."""
    app = redis_app(redis_server.url, prefix)
    parent, parent_sid = new_session(app, "/inc")
    child, child_sid = new_session(app, "/inc")
    before = _connected_clients(redis_server)  # includes this app's pooled connection
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.close(read_end)
            first = child.get("/inc").text
            opened = _connected_clients(redis_server) - before
            os.write(write_end, json.dumps([first, opened]).encode())
            os.close(write_end)
            got = [child.get("/inc").text for _ in range(40)]
            code = 0 if got == [str(n) for n in range(3, 43)] else 2
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        first, opened = json.loads(pipe.read() or "[null, null]")
    got = [parent.get("/inc").text for _ in range(40)]
    _, status = os.waitpid(pid, 0)
    assert (first, opened) == ("2", 1)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == [str(n) for n in range(2, 42)]
    assert client_with(app, child_sid).get("/get/n").text == "42"
    assert client_with(app, parent_sid).get("/get/n").text == "41"


# -- locks -------------------------------------------------------------------------------


def test_foreign_lock_makes_request_wait_then_503(redis_server: RedisServer, prefix: str) -> None:
    """A lock held by another owner makes the request wait SESSION_LOCK_TIMEOUT, then 503;
    the waiter never deletes a lock it does not own."""
    app = redis_app(redis_server.url, prefix, SESSION_LOCK_TIMEOUT=0.4)
    client, sid = new_session(app)
    with redis_server.client() as c:
        assert c("SET", lock_key(prefix, sid), "someone-else", "PX", 30_000) == "OK"
        started = time.monotonic()
        response = client.get("/get/a")
        waited = time.monotonic() - started
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert waited >= 0.4
        assert c("GET", lock_key(prefix, sid)) == b"someone-else"
        c("DEL", lock_key(prefix, sid))
    assert client.get("/get/a").text == "1"


def test_lock_of_killed_worker_expires(redis_server: RedisServer, prefix: str) -> None:
    """A worker killed while holding a session's lock blocks it for SESSION_REDIS_LOCK_TTL
    at most; its unsaved request changes nothing."""
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": redis_server.url,
        "SESSION_REDIS_PREFIX": prefix,
        "SESSION_REDIS_LOCK_TTL": 2,
    }
    app = redis_app(redis_server.url, prefix, SESSION_LOCK_TIMEOUT=0.2)
    _, sid = new_session(app, "/inc")
    proc = run_child("hold_lock", json.dumps(config), sid)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with redis_server.client() as c:
            assert 0 < c("PTTL", lock_key(prefix, sid)) <= 2_000
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert client_with(app, sid).get("/get/n").status_code == 503
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    patient = redis_app(redis_server.url, prefix, SESSION_LOCK_TIMEOUT=10)
    assert client_with(patient, sid).get("/inc").text == "2"


def test_expired_lock_refuses_stale_save(redis_server: RedisServer, prefix: str) -> None:
    """A request that held its session beyond SESSION_REDIS_LOCK_TTL, after which another
    owner took the lock, cannot overwrite the data (503) nor release the other's lock."""
    app = redis_app(redis_server.url, prefix, SESSION_REDIS_LOCK_TTL=0.3)

    @app.route("/slowset")
    def slowset() -> str:
        flask_session.get("a")
        lock = lock_key(prefix, flask_session.id)
        with redis_server.client() as c:
            deadline = time.monotonic() + 10
            while c("EXISTS", lock) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c("SET", lock, "other-owner", "PX", 30_000, "NX") == "OK"
        flask_session["a"] = "stale"
        return "ok"

    client, sid = new_session(app)
    lock, key = lock_key(prefix, sid), data_key(prefix, sid)
    with redis_server.client() as c:
        before = c("GET", key)
        response = client.get("/slowset")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert c("GET", key) == before
        assert c("GET", lock) == b"other-owner"
        c("DEL", lock)
    assert client.get("/get/a").text == "1"


def test_lock_released_at_teardown_after_error(redis_server: RedisServer, prefix: str) -> None:
    """A view that fails after loading the session leaves no lock behind in Redis, with
    or without PROPAGATE_EXCEPTIONS."""
    for propagate in (False, True):
        app = redis_app(redis_server.url, prefix, PROPAGATE_EXCEPTIONS=propagate)

        @app.route("/boom")
        def boom() -> str:
            flask_session["a"] = "lost"
            raise RuntimeError("boom")

        client, sid = new_session(app)
        if propagate:
            with pytest.raises(RuntimeError):
                client.get("/boom")
        else:
            assert client.get("/boom").status_code == 500
        with redis_server.client() as c:
            assert c("EXISTS", lock_key(prefix, sid)) == 0
        assert client.get("/get/a").text == "1"


def test_waiting_for_redis_lock_releases_gil(redis_server: RedisServer, prefix: str) -> None:
    """While one thread waits for a Redis-held session lock, other threads run requests
    (the wait and the I/O happen with the GIL released)."""
    app = redis_app(redis_server.url, prefix, SESSION_LOCK_TIMEOUT=2)
    blocked, sid = new_session(app)
    free, _ = new_session(app)
    result: dict[str, int] = {}
    with redis_server.client() as c:
        c("SET", lock_key(prefix, sid), "someone-else", "PX", 30_000)
        waiter = threading.Thread(
            target=lambda: result.update(status=blocked.get("/get/a").status_code)
        )
        waiter.start()
        time.sleep(0.2)
        done = [free.get("/inc").text for _ in range(5)]
        still_waiting = waiter.is_alive()
        waiter.join()
        c("DEL", lock_key(prefix, sid))
    assert done == ["1", "2", "3", "4", "5"]
    assert still_waiting
    assert result["status"] == 503


# -- failures ----------------------------------------------------------------------------


def test_unreachable_redis_gives_503_quickly() -> None:
    """Nothing listening: 503 with a plain body, no traceback, no address; at once."""
    port = free_port()
    app = redis_app(f"redis://127.0.0.1:{port}/0", "t:", SESSION_REDIS_CONNECT_TIMEOUT=1)
    client = app.test_client()
    started = time.monotonic()
    response = client.get("/set/a/1")
    assert time.monotonic() - started < 3.0
    assert_clean_503(response, str(port))


def test_silent_redis_gives_503_within_timeouts() -> None:
    """A peer that accepts connections but never answers (hung Redis, black-holed
    proxy): the request returns 503 within a few timeouts instead of hanging."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads
        port = silent.getsockname()[1]
        app = redis_app(
            f"redis://127.0.0.1:{port}/0",
            "t:",
            SESSION_REDIS_CONNECT_TIMEOUT=0.5,
            SESSION_REDIS_TIMEOUT=0.5,
        )
        for path in ("/set/a/1", "/get/a"):
            # With a cookie, so that even the read needs Redis.
            client = client_with(app, "0123456789abcdef0123456789abcdef")
            started = time.monotonic()
            response = client.get(path)
            assert time.monotonic() - started < 0.5 * 3
            assert_clean_503(response, str(port))


def test_rediss_to_plain_server_gives_503(redis_server: RedisServer) -> None:
    """rediss:// (TLS) to a server that does not speak TLS: a clean 503, no hang."""
    app = redis_app(f"rediss://127.0.0.1:{redis_server.port}/0", "t:")
    started = time.monotonic()
    response = app.test_client().get("/set/a/1")
    assert time.monotonic() - started < 3.0
    assert_clean_503(response, str(redis_server.port))


# -- TLS (rediss://) -------------------------------------------------------------------


class TlsSetup:
    """A private CA (trustme), a server certificate for 127.0.0.1 and a client
    certificate signed by it, another CA that signed nothing here, and two TLS servers:
    one that verifies client certificates only when given, one that requires them."""

    def __init__(self, workdir: Path) -> None:
        import trustme

        self.dir = workdir
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        trustme.CA().cert_pem.write_to_path(str(workdir / "other-ca.pem"))
        server = ca.issue_cert("127.0.0.1")
        server.private_key_pem.write_to_path(str(workdir / "server.key"))
        server.cert_chain_pems[0].write_to_path(str(workdir / "server.pem"))
        client = ca.issue_cert("client.example")
        client.private_key_pem.write_to_path(str(workdir / "client.key"))
        client.cert_chain_pems[0].write_to_path(str(workdir / "client.pem"))
        self.ports: dict[str, int] = {}

    def server_args(self, auth_clients: str) -> list[str]:
        port = free_port()
        self.ports[auth_clients] = port
        return [
            *("--tls-port", str(port), "--tls-auth-clients", auth_clients),
            *("--tls-cert-file", str(self.dir / "server.pem")),
            *("--tls-key-file", str(self.dir / "server.key")),
            *("--tls-ca-cert-file", str(self.dir / "ca.pem")),
        ]

    def url(self, auth_clients: str) -> str:
        return f"rediss://127.0.0.1:{self.ports[auth_clients]}/0"

    def files(self, *names: str) -> dict[str, str]:
        keys = {
            "ca": "SESSION_REDIS_TLS_CA_CERTS",
            "other-ca": "SESSION_REDIS_TLS_CA_CERTS",
            "client": "SESSION_REDIS_TLS_CERTFILE",
            "client-key": "SESSION_REDIS_TLS_KEYFILE",
        }
        paths = {
            "ca": "ca.pem",
            "other-ca": "other-ca.pem",
            "client": "client.pem",
            "client-key": "client.key",
        }
        return {keys[n]: str(self.dir / paths[n]) for n in names}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSetup]:
    setup = TlsSetup(tmp_path_factory.mktemp("tls"))
    optional = running_server(setup.dir / "optional", extra=setup.server_args("optional"))
    required = running_server(setup.dir / "required", extra=setup.server_args("yes"))
    with optional, required:
        yield setup


def test_rediss_with_a_private_ca(tls: TlsSetup, prefix: str) -> None:
    """rediss:// to a server whose certificate a private CA signed, trusted through
    SESSION_REDIS_TLS_CA_CERTS: sessions are written, read and deleted over TLS."""
    app = redis_app(tls.url("optional"), prefix, **tls.files("ca"))
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    assert client.get("/get/a").text == "1"
    assert client.get("/inc").text == "1"
    assert client.get("/inc").text == "2"
    assert client.get("/delete").status_code == 200
    assert client.get("/get/a").text == "None"


def test_rediss_client_certificate(tls: TlsSetup, prefix: str) -> None:
    """A server that requires client certificates (Redis's default): the certificate and
    key given by SESSION_REDIS_TLS_CERTFILE/KEYFILE are presented and accepted; without
    them the server refuses the handshake and the request gets a clean 503."""
    url = tls.url("yes")
    with_cert = redis_app(url, prefix, **tls.files("ca", "client", "client-key"))
    client = with_cert.test_client()
    assert client.get("/set/a/1").status_code == 200
    assert client.get("/get/a").text == "1"
    without = redis_app(url, prefix, **tls.files("ca"))
    assert_clean_503(without.test_client().get("/set/a/2"), str(tls.ports["yes"]))
    assert client.get("/get/a").text == "1"


@pytest.mark.parametrize("trust", ["public CAs", "another CA"])
def test_rediss_refuses_an_untrusted_certificate(tls: TlsSetup, prefix: str, trust: str) -> None:
    """The server's certificate is verified: trusting only the public CAs (the default)
    or another private CA, the connection is refused (a clean 503), never silently
    accepted."""
    files = tls.files("other-ca") if trust == "another CA" else {}
    app = redis_app(tls.url("optional"), prefix, **files)
    assert_clean_503(app.test_client().get("/set/a/1"), str(tls.ports["optional"]))


@pytest.mark.parametrize(
    "files, url, key",
    [
        ({"SESSION_REDIS_TLS_CA_CERTS": "missing.pem"}, "rediss", "SESSION_REDIS_TLS_CA_CERTS"),
        ({"SESSION_REDIS_TLS_CA_CERTS": "client.key"}, "rediss", "SESSION_REDIS_TLS_CA_CERTS"),
        ({"SESSION_REDIS_TLS_CA_CERTS": 42}, "rediss", "SESSION_REDIS_TLS_CA_CERTS"),
        ({"SESSION_REDIS_TLS_KEYFILE": "client.pem"}, "rediss", "SESSION_REDIS_TLS_KEYFILE"),
        ({"SESSION_REDIS_TLS_CERTFILE": "client.pem"}, "rediss", "SESSION_REDIS_TLS_KEYFILE"),
        ({"SESSION_REDIS_TLS_KEYFILE": "client.key"}, "rediss", "SESSION_REDIS_TLS_CERTFILE"),
        ({"SESSION_REDIS_TLS_CA_CERTS": "ca.pem"}, "redis", "SESSION_REDIS_TLS_CA_CERTS"),
    ],
)
def test_bad_tls_settings_rejected_at_init(
    tls: TlsSetup, files: dict[str, Any], url: str, key: str
) -> None:
    """A missing file, a file of the wrong kind, a certificate without its key (or the
    reverse), TLS files with a plain redis:// URL: ConfigurationError naming the key."""
    app = Flask(__name__)
    config = {k: str(tls.dir / v) if isinstance(v, str) else v for k, v in files.items()}
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS_URL=f"{url}://127.0.0.1:6379/0", **config)
    with pytest.raises(ConfigurationError, match=key):
        fbs.init_app(app)


def test_redis_killed_and_restarted(own_server: RedisServer, prefix: str) -> None:
    """Redis killed mid-run: 503s while it is down, normal service once it is back on the
    same port (the sessions themselves are gone: this Redis keeps no data on disk)."""
    app = redis_app(own_server.url, prefix, SESSION_REDIS_CONNECT_TIMEOUT=0.5)
    client, sid = new_session(app)
    own_server.kill()
    for _ in range(3):
        assert_clean_503(client.get("/get/a"), str(own_server.port))
    assert client.get("/none").status_code == 200
    own_server.start()
    response = client.get("/set/b/2")
    assert response.status_code == 200
    assert client.get("/get/b").text == "2"
    assert cookie_of(client) != sid


def test_restart_while_idle_does_not_fail_requests(own_server: RedisServer, prefix: str) -> None:
    """A Redis restart while the app is idle: pooled connections are dead, yet the next
    requests succeed (a stale pooled connection is replaced, not reported as an outage)."""
    app = redis_app(own_server.url, prefix)
    sids = []
    barrier = threading.Barrier(4)

    def open_many() -> None:
        _, sid = new_session(app, "/inc")
        barrier.wait(10)
        sids.append(sid)

    threads = [threading.Thread(target=open_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    own_server.kill()
    own_server.start()
    statuses = [app.test_client().get("/set/a/1").status_code for _ in range(6)]
    assert statuses == [200] * 6


def test_connections_closed_by_redis_idle_timeout(tmp_path: Path, prefix: str) -> None:
    """Redis configured to close idle clients (``timeout 1``): pooled connections it
    closed are replaced transparently, the next requests succeed."""
    with running_server(tmp_path / "redis", extra=["--timeout", "1"]) as server:
        app = redis_app(server.url, prefix)
        client, _ = new_session(app, "/inc")
        time.sleep(2.5)  # Redis checks idle clients from its cron, ~once a second
        assert [client.get("/inc").status_code for _ in range(3)] == [200] * 3
        assert client.get("/get/n").text == "4"


def test_redis_lost_between_load_and_save(own_server: RedisServer, prefix: str) -> None:
    """Redis dies after the session was loaded: the save fails with a clean 503 (no
    Set-Cookie), and the app recovers when Redis is back."""
    app = redis_app(own_server.url, prefix, SESSION_REDIS_CONNECT_TIMEOUT=0.5)

    @app.route("/kill-then-set")
    def kill_then_set() -> str:
        flask_session.get("a")
        own_server.kill()
        flask_session["a"] = "after-kill"
        return "ok"

    client, _ = new_session(app)
    assert_clean_503(client.get("/kill-then-set"), str(own_server.port))
    own_server.start()
    fresh = app.test_client()
    assert fresh.get("/set/a/2").status_code == 200
    assert fresh.get("/get/a").text == "2"


# -- memory backend under several workers ----------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_memory_backend_warns_under_gunicorn_workers(workers: int, tmp_path: Path) -> None:
    """gunicorn -w 2 with SESSION_TYPE='memory' logs a warning (sessions are not shared
    between workers); -w 1 does not."""
    if importlib.util.find_spec("gunicorn") is None:
        if in_ci():
            pytest.fail("gunicorn (a test extra) is not installed")
        pytest.skip("gunicorn is not installed")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(TESTS_DIR),
                "redis_server:memory_app()",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=child_env(),
        )
    warning = "SESSION_TYPE='memory'"
    try:
        deadline = time.monotonic() + 30
        served = set()
        while time.monotonic() < deadline and len(served) < workers:
            try:
                served.add(http_get(f"http://127.0.0.1:{port}", "/pid")[1])
            except OSError:
                time.sleep(0.1)
            if workers > 1 and warning in log.read_text():
                break
        assert served, log.read_text()
        if workers > 1:
            while time.monotonic() < deadline and warning not in log.read_text():
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    if workers > 1:
        assert warning in text
        assert "worker" in text.split(warning, 1)[1].splitlines()[0]
    else:
        assert warning not in text
