"""Redis hardening (issue 14): orphaned locks (item 4), the key prefix taken literally by
``clear``/``stats``/sweep (item 7), no ERROR line per failed request during an outage
(item 7), and out-of-range settings (item 7).

Stalls are real: a dedicated ``redis-server`` of the test is stopped with SIGSTOP (its
clients' commands sit in the socket buffers and run when it gets SIGCONT), so the shared
server of the run is never stalled.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import _core
from flask_beaker_session import _log as fbs_log
from flask_beaker_session.errors import ConfigurationError
from helpers import build_app, client_with, cookie_of, store_of
from redis_server import RedisServer, data_key, lock_key, running_server, touch_key


@pytest.fixture
def stoppable(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test only (it gets SIGSTOPped)."""
    with running_server(tmp_path / "redis-stoppable") as server:
        try:
            yield server
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGCONT)


def _redis_app(tmp_path: Path, server: RedisServer, prefix: str, **config: Any) -> Flask:
    return build_app(
        tmp_path / "unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=server.url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


def _wait_until(predicate: Any, timeout: float) -> float | None:
    """Seconds until ``predicate()`` held (polled), or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


# -- item 4: orphaned locks ------------------------------------------------------------


def test_a_lock_left_by_a_timed_out_request_is_released_once_redis_answers(
    tmp_path: Path, stoppable: RedisServer
) -> None:
    """Redis stalls (SIGSTOP) longer than SESSION_REDIS_TIMEOUT while a request locks its
    session: the request gets 503; its queued ``SET NX`` runs when Redis resumes and
    leaves a lock holding that request's token. Within a few seconds of Redis answering
    the lock is gone (released by the process that knows the token) and the session is
    usable (200, data intact) — on 0aa81bb the lock lived for SESSION_REDIS_LOCK_TTL (60 s)
    and every request of the session got 503 after the lock timeout."""
    app = _redis_app(
        tmp_path, stoppable, "orphan:", SESSION_REDIS_TIMEOUT=0.3, SESSION_LOCK_TIMEOUT=2
    )
    client = app.test_client()
    assert client.get("/set/k/v").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    assert stoppable.proc is not None
    stoppable.proc.send_signal(signal.SIGSTOP)
    try:
        stalled = client_with(app, sid).get("/get/k")
    finally:
        time.sleep(0.5)
        stoppable.proc.send_signal(signal.SIGCONT)
    assert stalled.status_code == 503
    assert stalled.headers["Retry-After"] == "1"

    def lock_gone() -> bool:
        with stoppable.client() as c:
            return c("EXISTS", lock_key("orphan:", sid)) == 0

    released_after = _wait_until(lock_gone, timeout=10)
    print(f"\n[orphan lock] released {released_after} s after SIGCONT")
    assert released_after is not None and released_after < 5
    start = time.monotonic()
    again = client_with(app, sid).get("/get/k")
    assert (again.status_code, again.get_data(as_text=True)) == (200, "v")
    assert time.monotonic() - start < 1.5  # no lock wait


def test_locks_held_when_redis_crashed_are_released_after_it_restarts(tmp_path: Path) -> None:
    """Redis with AOF is SIGKILLed while 8 requests hold their sessions; their saves fail
    (503) and Redis restarts with the lock keys (replayed from the AOF). Within a few
    seconds every session is usable again from another app (another worker) — on 0aa81bb
    the lock keys of the crashed requests lived for SESSION_REDIS_LOCK_TTL."""
    sessions = 8
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_server(tmp_path / "redis-aof", extra=aof) as server:
        config = {"SESSION_REDIS_TIMEOUT": 0.5, "SESSION_LOCK_TIMEOUT": 8}
        app = _redis_app(tmp_path, server, "crash:", **config)
        entered = threading.Semaphore(0)
        resume = threading.Event()

        @app.route("/hold-then-save")
        def hold_then_save() -> str:
            from flask import session

            session["n"] = "2"
            entered.release()
            resume.wait(30)
            return "saved?"

        sids = []
        for _ in range(sessions):
            client = app.test_client()
            assert client.get("/set/n/1").status_code == 200
            sid = cookie_of(client)
            assert sid is not None
            sids.append(sid)
        statuses: list[int] = []
        threads = [
            threading.Thread(
                target=lambda sid=sid: statuses.append(
                    client_with(app, sid).get("/hold-then-save").status_code
                )
            )
            for sid in sids
        ]
        for t in threads:
            t.start()
        for _ in sids:
            assert entered.acquire(timeout=30)
        server.kill()
        resume.set()
        for t in threads:
            t.join(30)
        assert statuses == [503] * sessions
        server.start()
        with server.client() as c:
            survived = sum(c("EXISTS", lock_key("crash:", sid)) for sid in sids)
        other = _redis_app(tmp_path, server, "crash:", **config)
        start = time.monotonic()
        replies = [client_with(other, sid).get("/get/n") for sid in sids]
        waited = time.monotonic() - start
        print(
            f"\n[crash] lock keys after restart: {survived}/{sessions}; "
            f"all served in {waited:.2f} s"
        )
        assert [r.status_code for r in replies] == [200] * sessions
        assert {r.get_data(as_text=True) for r in replies} == {"1"}
        assert waited < 5


# -- item 7: the prefix is literal -----------------------------------------------------


HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("prefix", "foreign"),
    [
        ("", ["s:other-app", "s:x", "a:y", "session:1"]),
        ("app[12]:", ["app1:s:" + HEX, "app2:a:" + HEX]),
        ("tenant*", ["tenantB:s:" + HEX, "tenantB:a:" + HEX]),
        ("p?:", ["px:s:" + HEX]),
        ("back\\slash:", ["backslash:s:" + HEX]),
    ],
)
def test_clear_and_stats_touch_only_keys_under_the_literal_prefix(
    tmp_path: Path, redis_server: RedisServer, prefix: str, foreign: list[str]
) -> None:
    """Another app's keys that the prefix would match as a glob (or, for an empty prefix,
    any ``s:``/``a:`` key) survive ``clear``; ``stats`` does not count them; our own keys
    are all counted and cleared. On 0aa81bb prefix ``''`` deleted another app's keys,
    ``app[12]:`` deleted others' keys and missed its own, ``tenant*`` deleted
    ``tenantB:…``."""
    # A database of this test only (the prefixes here are not per-test).
    db = 9
    url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
    with redis_server.client(db=db) as c:
        c("FLUSHDB")
        for key in foreign:
            c("SET", key, "theirs")
    app = build_app(
        tmp_path / "unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=url,
        SESSION_REDIS_PREFIX=prefix,
    )
    sids = []
    for i in range(3):
        c2 = app.test_client()
        assert c2.get(f"/set/k/{i}").status_code == 200
        sid = cookie_of(c2)
        assert sid is not None
        sids.append(sid)
    store = store_of(app)
    now = time.time()
    stats = store.walk(now, _core.WalkMode.Stats)
    assert stats.records == 3
    swept = store.walk(now, _core.WalkMode.Sweep)
    assert swept.records == 3
    cleared = store.walk(now, _core.WalkMode.Clear)
    assert cleared.removed == 3
    with redis_server.client(db=db) as c:
        remaining = sorted(k.decode() for k in c("KEYS", "*"))
        c("FLUSHDB")
    assert remaining == sorted(foreign)
    for sid in sids:
        assert data_key(prefix, sid) not in remaining
        assert touch_key(prefix, sid) not in remaining


# -- item 7: no log flood --------------------------------------------------------------


def test_an_outage_logs_a_few_errors_with_a_count_not_one_per_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis unreachable: 300 requests get 503, but the log gets one ERROR line, then (after
    the rate limit's interval) one more saying how many were left out. On 0aa81bb: one
    ERROR line per request."""
    from redis_server import free_port

    monkeypatch.setattr(fbs_log, "OUTAGES", fbs_log.RateLimited(interval=1.0))
    monkeypatch.setattr("flask_beaker_session.responses.OUTAGES", fbs_log.OUTAGES)
    app = build_app(
        tmp_path / "unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SESSION_REDIS_CONNECT_TIMEOUT=0.2,
    )
    client = client_with(app, "ab" * 16)
    caplog.set_level(logging.ERROR, logger="flask_beaker_session")
    statuses = {client.get("/get/k").status_code for _ in range(300)}
    assert statuses == {503}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "unavailable" in errors[0].getMessage()
    time.sleep(1.1)
    assert client.get("/get/k").status_code == 503
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert "299 more" in errors[1].getMessage(), errors[1].getMessage()


# -- item 7: settings out of range -----------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSION_LOCK_TIMEOUT", 1e19),
        ("SESSION_EXPIRES", 1e12),
        ("SESSION_TIMEOUT", 1e300),
        ("SESSION_ABSOLUTE_TIMEOUT", 1e300),
        ("SESSION_REDIS_LOCK_TTL", 2**64 / 1000),
        ("SESSION_REDIS_TIMEOUT", 1e19),
        ("SESSION_REDIS_CONNECT_TIMEOUT", 1e19),
        ("SESSION_SWEEP_INTERVAL", 1e300),
        ("SESSION_MAX_WAITERS", -1),
        ("SESSION_MAX_WAITERS", 10**6),
        ("SESSION_MAX_WAITERS", 1.5),
    ],
)
def test_values_that_would_break_requests_fail_at_init_app(
    tmp_path: Path, redis_server: RedisServer, key: str, value: Any
) -> None:
    """Each value that made every request fail on 0aa81bb (a panic, a 500, a 503 on every
    save, a lock TTL wrapped to ~384 ms) is a ConfigurationError at init_app naming the key
    and the accepted range."""
    with pytest.raises(ConfigurationError, match=key) as info:
        build_app(
            tmp_path / "d", SESSION_TYPE="redis", SESSION_REDIS_URL=redis_server.url, **{key: value}
        )
    assert "at most" in str(info.value) or "from 0 to" in str(info.value)


def test_the_largest_accepted_values_work(
    tmp_path: Path, redis_server: RedisServer, prefix: str
) -> None:
    """At the top of each range, requests work: a session is stored, read back and has
    a TTL Redis accepted; the lock TTL is what was asked, not wrapped."""
    app = build_app(
        tmp_path / "d",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=redis_server.url,
        SESSION_REDIS_PREFIX=prefix,
        SESSION_LOCK_TIMEOUT=86_400,
        SESSION_EXPIRES=100 * 365 * 86_400,
        SESSION_TIMEOUT=100 * 365 * 86_400,
        SESSION_ABSOLUTE_TIMEOUT=100 * 365 * 86_400,
        SESSION_REDIS_LOCK_TTL=86_400,
        SESSION_MAX_WAITERS=1000,
    )
    client = app.test_client()
    assert client.get("/set/k/v").status_code == 200
    assert client.get("/get/k").get_data(as_text=True) == "v"
    sid = cookie_of(client)
    assert sid is not None
    with redis_server.client() as c:
        assert c("PTTL", data_key(prefix, sid)) > 86_400_000


def test_the_core_saturates_instead_of_panicking(redis_server: RedisServer, prefix: str) -> None:
    """Below the Python checks, the native store takes the values that panicked or wrapped
    (lock timeout 1e19 s, lock TTL 2**64/1000 s, idle timeout 1e300 s) and works: no
    ``PanicException`` (a BaseException that escapes Flask's handlers) can come out."""
    backend = _core.RedisBackend(url=redis_server.url, prefix=prefix, lock_ttl=2**64 / 1000)
    store = _core.Store(
        _core.StoreConfig(backend=backend, keys=[b"k"], idle_timeout=1e300, lock_timeout=1e19)
    )
    sid = store.new_id()
    now = time.time()
    store.create(sid, b"payload", now, now)
    status, handle = store.open(sid, now)
    assert status == _core.OpenStatus.Found and handle is not None
    with redis_server.client() as c:
        ttl = c("PTTL", lock_key(prefix, sid))
    assert ttl > 86_400_000  # not wrapped to ~384 ms
    handle.save(b"new", now)
    status, handle = store.open(sid, now)
    assert handle is not None and handle.payload == b"new"
    handle.release()
