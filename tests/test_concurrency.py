"""Concurrency: the per-session lock serialises requests of one session (threads of one
app and separate processes with their own apps), distinct sessions never mix, readers
never see half-written values, and the lock is always released (exceptions) or bounded
(timeouts)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from helpers import (
    COOKIE,
    SID_RE,
    add_versioned_routes,
    build_app,
    check_versioned,
    client_with,
    cookie_of,
    counter_app,
    create_sessions_worker,
    increment_worker,
    record_files,
    versioned_value,
)

SPAWN = multiprocessing.get_context("spawn")


def _new_counter_session(app: Flask) -> str:
    client = app.test_client()
    assert client.get("/init").status_code == 200
    sid = cookie_of(client)
    assert sid is not None and SID_RE.fullmatch(sid)
    return sid


def _run_threads(targets: list[Any]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
        assert not t.is_alive(), "worker thread hung"
    if errors:
        raise errors[0]


def _collect(results: Any, procs: list[Any], n: int) -> list[Any]:
    out = [results.get(timeout=90) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    return out


def test_threads_same_session_lose_no_update(data_dir: Path) -> None:
    """8 threads x 25 read-sleep-write increments of one session: final n is exactly 200
    and every increment saw a distinct previous value."""
    threads, per_thread = 8, 25
    app = counter_app(data_dir)
    sid = _new_counter_session(app)
    seen: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def worker(i: int) -> Any:
        def run() -> None:
            client = client_with(app, sid)
            start.wait(timeout=30)
            for _ in range(per_thread):
                resp = client.get("/slowinc")
                assert resp.status_code == 200, resp.status_code
                seen[i].append(int(resp.get_data(as_text=True)))

        return run

    _run_threads([worker(i) for i in range(threads)])
    total = threads * per_thread
    final = int(client_with(app, sid).get("/getn").get_data(as_text=True))
    lost = total - final
    print(f"threads: {lost} lost updates out of {total}")
    assert lost == 0
    assert sorted(v for vs in seen for v in vs) == list(range(1, total + 1))


def test_processes_same_session_lose_no_update(data_dir: Path) -> None:
    """4 spawned processes, each with its own app on the same dir, x 25 increments of
    one session: final n is exactly 100 and no two increments saw the same value."""
    procs_n, per_proc = 4, 25
    sid = _new_counter_session(counter_app(data_dir))
    barrier = SPAWN.Barrier(procs_n)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=increment_worker,
            args=(str(data_dir), sid, per_proc, barrier, results, i),
        )
        for i in range(procs_n)
    ]
    for p in procs:
        p.start()
    out = _collect(results, procs, procs_n)
    statuses = [s for _, ss, _ in out for s in ss]
    assert statuses == [200] * (procs_n * per_proc)
    total = procs_n * per_proc
    final = int(client_with(counter_app(data_dir), sid).get("/getn").get_data(as_text=True))
    lost = total - final
    print(f"processes: {lost} lost updates out of {total}")
    assert lost == 0
    assert sorted(v for _, _, vs in out for v in vs) == list(range(1, total + 1))


def _assert_sessions_hold_own_data(
    data_dir: Path, created: list[tuple[str | None, str, int]], expected: int
) -> None:
    assert len(created) == expected
    assert all(status == 200 for _, _, status in created)
    ids = [sid for sid, _, _ in created]
    assert all(sid is not None and SID_RE.fullmatch(sid) for sid in ids)
    assert len(set(ids)) == expected, "duplicate session ids"
    assert len(record_files(data_dir)) == expected
    reader = build_app(data_dir)
    for sid, token, _ in created:
        assert sid is not None
        resp = client_with(reader, sid).get("/dump")
        assert resp.get_json() == {"owner": token}


def test_threads_create_distinct_sessions(data_dir: Path) -> None:
    """8 threads x 20 new sessions at once: unique ids, each holds only its own data."""
    threads, per_thread = 8, 20
    app = build_app(data_dir)
    created: list[tuple[str | None, str, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(i: int) -> Any:
        def run() -> None:
            start.wait(timeout=30)
            for j in range(per_thread):
                client = app.test_client()
                token = f"t{i}-{j}"
                resp = client.get(f"/set/owner/{token}")
                with lock:
                    created.append((cookie_of(client), token, resp.status_code))

        return run

    _run_threads([worker(i) for i in range(threads)])
    _assert_sessions_hold_own_data(data_dir, created, threads * per_thread)


def test_processes_create_distinct_sessions(data_dir: Path) -> None:
    """4 spawned processes x 15 new sessions at once: unique ids, none lost or mixed."""
    procs_n, per_proc = 4, 15
    barrier = SPAWN.Barrier(procs_n)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=create_sessions_worker,
            args=(str(data_dir), per_proc, barrier, results, i),
        )
        for i in range(procs_n)
    ]
    for p in procs:
        p.start()
    out = _collect(results, procs, procs_n)
    created = [c for _, cs in out for c in cs]
    _assert_sessions_hold_own_data(data_dir, created, procs_n * per_proc)


def test_readers_never_see_partial_values(data_dir: Path) -> None:
    """2 writers storing 200 KB versioned values + 4 readers of the same session: every
    read finds a complete value whose content matches its version tag."""
    app = add_versioned_routes(build_app(data_dir))
    size = 200 * 1024
    first = app.test_client()
    assert first.get(f"/vput/w0/0/{size}").status_code == 200
    sid = cookie_of(first)
    assert sid is not None
    deadline = time.monotonic() + 2.0
    reads: list[int] = []
    writes: list[int] = []
    bad: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> Any:
        def run() -> None:
            client = client_with(app, sid)
            for v in range(1, 200):
                if time.monotonic() > deadline:
                    break
                resp = client.get(f"/vput/w{w}/{v}/{size}")
                assert resp.status_code == 200
                with lock:
                    writes.append(v)

        return run

    def reader() -> None:
        client = client_with(app, sid)
        for _ in range(400):
            if time.monotonic() > deadline:
                break
            resp = client.get("/vcheck")
            assert resp.status_code == 200
            info = resp.get_json()
            with lock:
                reads.append(1)
                if not info["found"] or info["error"] is not None:
                    bad.append(repr(info))

    _run_threads([writer(0), writer(1), reader, reader, reader, reader])
    print(f"readers during writes: {len(reads)} reads, {len(writes)} writes")
    assert len(writes) > 0 and len(reads) > 0
    assert bad == []
    # The final stored value is still one complete version.
    assert client_with(app, sid).get("/vcheck").get_json()["error"] is None


def _boom_app(data_dir: Path, propagate: bool) -> Flask:
    app = build_app(data_dir, PROPAGATE_EXCEPTIONS=propagate, SESSION_LOCK_TIMEOUT=1)

    @app.route("/boom")
    def boom() -> str:
        flask_session["half"] = "done"
        raise RuntimeError("view failed after touching the session")

    return app


@pytest.mark.parametrize("propagate", [True, False])
def test_lock_released_when_view_raises(data_dir: Path, propagate: bool) -> None:
    """A view that raises after touching the session releases its lock: the next
    request of the session (another thread, lock timeout 1 s) succeeds; nothing
    half-done is saved."""
    app = _boom_app(data_dir, propagate)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    if propagate:
        with pytest.raises(RuntimeError, match="view failed"):
            client.get("/boom")
    else:
        assert client.get("/boom").status_code == 500
    result: dict[str, Any] = {}

    def later() -> None:
        resp = client_with(app, sid).get("/dump")
        result["status"] = resp.status_code
        result["data"] = resp.get_json(silent=True)

    _run_threads([later])
    assert result["status"] == 200
    assert result["data"] == {"a": "1"}
    # Also from the same thread.
    assert client_with(app, sid).get("/set/b/2").status_code == 200


def _holder_app(data_dir: Path, **config: Any) -> tuple[Flask, threading.Event, threading.Event]:
    app = build_app(data_dir, **config)
    started, release = threading.Event(), threading.Event()

    @app.route("/hold")
    def hold() -> str:
        flask_session.get("a")
        started.set()
        release.wait(30)
        flask_session["held"] = "yes"
        return "held"

    return app, started, release


def test_lock_timeout_gives_503_then_session_works(data_dir: Path) -> None:
    """While one request holds the session, another waits at most SESSION_LOCK_TIMEOUT
    and gets 503 + Retry-After: 1 (plain text); afterwards the session holds the first
    request's write and the rejected request changed nothing."""
    app, started, release = _holder_app(data_dir, SESSION_LOCK_TIMEOUT=0.3)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    holder_status: list[int] = []

    def holder() -> None:
        holder_status.append(client_with(app, sid).get("/hold").status_code)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert started.wait(10)
        resp = client_with(app, sid).get("/set/blocked/1")
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "1"
        assert resp.mimetype == "text/plain"
        assert resp.get_data(as_text=True).strip()
        assert COOKIE not in resp.headers.get("Set-Cookie", "")
    finally:
        release.set()
        t.join(30)
    assert holder_status == [200]
    resp = client_with(app, sid).get("/dump")
    assert resp.status_code == 200
    assert resp.get_json() == {"a": "1", "held": "yes"}


def test_requests_not_touching_session_never_block(data_dir: Path) -> None:
    """A request that never touches the session is served while another request holds
    that session (no lock wait, no cookie)."""
    app, started, release = _holder_app(data_dir, SESSION_LOCK_TIMEOUT=5)

    @app.route("/plain")
    def plain() -> Any:
        return jsonify(ok=True)

    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    t = threading.Thread(target=lambda: client_with(app, sid).get("/hold"))
    t.start()
    try:
        assert started.wait(10)
        for path in ("/none", "/plain") * 5:
            resp = client_with(app, sid).get(path)
            assert resp.status_code == 200
            assert "Set-Cookie" not in resp.headers
            # The holder is still inside its request: we were not queued behind it.
            assert t.is_alive()
    finally:
        release.set()
        t.join(30)
    assert client_with(app, sid).get("/dump").get_json() == {"a": "1", "held": "yes"}


def test_versioned_helper_detects_damage() -> None:
    """The consistency check used above does flag torn or mislabelled values."""
    good = versioned_value("x", 3, 1000)
    assert check_versioned(good) is None
    torn = dict(good, blob=good["blob"][:500] + bytes(500))
    assert check_versioned(torn) is not None
    relabelled = dict(good, v=4)
    assert check_versioned(relabelled) is not None
    assert check_versioned(None) is not None
