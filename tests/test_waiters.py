"""A bound on how many requests wait for one session (issue 14, item 6).

One client holding its session (a slow request) and firing many more requests at it used to
tie up every worker until the lock timeout: the requests of every other user queued behind.
``SESSION_MAX_WAITERS`` bounds the waiters of one session (per process, and across
processes for the file backend); a request beyond the bound gets a 503 with
``Retry-After`` at once. Measured under real gunicorn (sync and gthread): one request
holds a session for 8 s while 50 concurrent requests hit the same session, and an
unrelated user's request is timed. On 0aa81bb it waited 7.1 s (sync) / 2.5 s (gthread).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from helpers import client_with, cookie_of
from test_servers import Server, _new_session, gunicorn

HOLD = 8.0
CROWD = 50
#: What the issue demands of the unrelated user's wait with the defaults (seconds), plus a
#: margin for a loaded 2-core machine; the real numbers are printed.
UNRELATED_LIMIT = 1.0
MARGIN = 0.5


@dataclass
class Outcome:
    unrelated_wait: float
    unrelated_status: int
    crowd: Counter[int]
    retry_after: set[str]
    fastest_refusal: float | None


def crowd_scenario(server: Server, hold: float = HOLD, crowd: int = CROWD) -> Outcome:
    """One request holds a session for ``hold`` s; ``crowd`` concurrent requests hit the
    same session; then an unrelated user's request (its own session) is timed."""
    busy = _new_session(server)
    unrelated = _new_session(server)
    holder = server.client(busy)
    held = threading.Thread(target=lambda: holder.get("/hold/crowd"))
    held.start()
    server.wait_pid_file("crowd")
    gate = threading.Timer(hold, lambda: server.open_gate("crowd"))
    gate.start()
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    refusals: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        client = server.client(busy, keepalive=False)
        start = time.monotonic()
        try:
            reply = client.get("/inc")
        finally:
            client.close()
        with lock:
            statuses[reply.status] += 1
            if reply.status == 503:
                retry_after.add(reply.headers.get("Retry-After", ""))
                refusals.append(time.monotonic() - start)

    try:
        with ThreadPoolExecutor(max_workers=crowd) as pool:
            futures = [pool.submit(one) for _ in range(crowd)]
            time.sleep(0.5)  # the crowd is in: queued in workers or in the listen backlog
            client = server.client(unrelated, keepalive=False)
            start = time.monotonic()
            reply = client.get("/inc")
            waited = time.monotonic() - start
            client.close()
            for f in futures:
                f.result(timeout=60)
    finally:
        gate.cancel()
        server.open_gate("crowd")
        held.join(60)
        holder.close()
    return Outcome(waited, reply.status, statuses, retry_after, min(refusals, default=None))


CONFIGS = {
    "sync-w4": ("-w", "4"),
    "gthread-w2x4": ("-w", "2", "-k", "gthread", "--threads", "4"),
}


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn tests need Linux")
@pytest.mark.posix_only(reason="gunicorn (fcntl, fork)")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_an_unrelated_user_is_served_while_one_session_is_mobbed(
    tmp_path: Path, config: str
) -> None:
    """With the default bound, the unrelated user's request answers in under a second
    (plus a margin for a loaded machine) while one session is held for 8 s and 50
    requests wait for it; the requests beyond the bound get 503 + Retry-After at once,
    those within it are served when the holder is done."""
    with gunicorn(tmp_path, *CONFIGS[config], env={"FBS_MAX_WAITERS": ""}) as server:
        out = crowd_scenario(server)
    print(
        f"\n[{config} default bound] unrelated wait {out.unrelated_wait:.3f} s "
        f"(status {out.unrelated_status}); crowd {dict(out.crowd)}; "
        f"fastest 503 {out.fastest_refusal}"
    )
    assert out.unrelated_status == 200
    assert out.unrelated_wait < UNRELATED_LIMIT + MARGIN
    assert out.crowd[503] >= CROWD // 2
    assert out.crowd[200] >= 1  # waiters within the bound were served after the holder
    assert set(out.crowd) <= {200, 503}
    assert out.retry_after == {"1"}


# -- in one process (every backend) ------------------------------------------------------


def _holding_app(make_app: Any, **config: Any) -> tuple[Flask, threading.Event, threading.Event]:
    app = make_app(**config)
    entered, release = threading.Event(), threading.Event()

    @app.route("/hold")
    def hold() -> str:
        flask_session["held"] = True
        entered.set()
        release.wait(30)
        return "held"

    return app, entered, release


@pytest.mark.parametrize("backend", ["file", "memory", "redis"])
def test_threads_beyond_the_bound_get_503_at_once(
    make_app: Any, backend: str, request: pytest.FixtureRequest
) -> None:
    """SESSION_MAX_WAITERS=2: while a request holds the session, 10 more threads ask for
    it; 2 wait (and are served once it is released), 8 get 503 + Retry-After: 1 at once
    (well before the 10 s lock timeout)."""
    config: dict[str, Any] = {"SESSION_TYPE": backend, "SESSION_MAX_WAITERS": 2}
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        config.update(
            SESSION_REDIS_URL=server.url, SESSION_REDIS_PREFIX=request.getfixturevalue("prefix")
        )
    app, entered, release = _holding_app(make_app, **config)
    first = app.test_client()
    assert first.get("/set/k/v").status_code == 200
    sid = cookie_of(first)
    assert sid is not None
    holder = threading.Thread(target=lambda: client_with(app, sid).get("/hold"))
    holder.start()
    assert entered.wait(30)
    results: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()

    def ask() -> None:
        start = time.monotonic()
        reply = client_with(app, sid).get("/get/k")
        with lock:
            results.append(
                (reply.status_code, reply.headers.get("Retry-After"), time.monotonic() - start)
            )

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(results) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = [r for r in results if r[0] == 503]
    release.set()
    holder.join(30)
    for t in threads:
        t.join(30)
    statuses = Counter(r[0] for r in results)
    print(f"\n[{backend}] {dict(statuses)}; slowest refusal {max(r[2] for r in refused):.3f} s")
    assert statuses == Counter({200: 2, 503: 8})
    assert len(refused) == 8 and all(r[1] == "1" for r in refused)
    assert max(r[2] for r in refused) < 5  # at once, not after the 10 s lock timeout


def test_no_bound_keeps_every_waiter(make_app: Any) -> None:
    """SESSION_MAX_WAITERS=None: every waiter waits and is served (the old behaviour)."""
    app, entered, release = _holding_app(make_app, SESSION_MAX_WAITERS=None)
    first = app.test_client()
    assert first.get("/set/k/v").status_code == 200
    sid = cookie_of(first)
    assert sid is not None
    holder = threading.Thread(target=lambda: client_with(app, sid).get("/hold"))
    holder.start()
    assert entered.wait(30)
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: statuses.append(client_with(app, sid).get("/get/k").status_code)
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    release.set()
    holder.join(30)
    for t in threads:
        t.join(30)
    assert statuses == [200] * 6
