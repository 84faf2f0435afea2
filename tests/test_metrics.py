"""``SESSION_METRICS``: what the session layer counts, read back through
:func:`flask_beaker_session.metrics.snapshot` in process and scraped from a real gunicorn
with 4 workers (``prometheus_client``'s multiprocess mode), against a known workload.

The metrics are process-wide (as ``prometheus_client``'s registry is), so the in-process
tests compare snapshots taken before and after their workload.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from flask_beaker_session import metrics as fbs_metrics
from flask_beaker_session.errors import ConfigurationError
from flask_beaker_session.sweeper import AutoSweeper
from helpers import TESTS_DIR, FakeClock, build_app, client_with, cookie_of
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_servers import _in_thread, _new_session, gunicorn

UNKNOWN = "0123456789abcdef0123456789abcdef"


def _app(data_dir: Path, **config: Any) -> Flask:
    app = build_app(data_dir, SESSION_METRICS=True, **config)

    @app.route("/read")
    def read() -> str:
        return str(session.get("n"))

    @app.route("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    return app


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``after - before`` for counters (labelled or not) and histogram counts."""
    out: dict[str, Any] = {}
    for name, value in after.items():
        old = before[name]
        if isinstance(value, dict) and "count" in value:
            out[name] = value["count"] - old.get("count", 0)
        elif isinstance(value, dict):
            out[name] = {k: v - old.get(k, 0) for k, v in value.items() if v - old.get(k, 0)}
        else:
            out[name] = value - old
    return out


def test_off_by_default_and_nothing_counted(data_dir: Path) -> None:
    app = build_app(data_dir)
    assert app.session_interface.state.metrics is None  # type: ignore[attr-defined]
    before = fbs_metrics.snapshot()
    client = app.test_client()
    client.get("/inc")
    client.get("/inc")
    assert _delta(before, fbs_metrics.snapshot())["saves"] == {}


@pytest.mark.parametrize("value", ["sometimes", 2, None])
def test_invalid_setting_names_the_key(data_dir: Path, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_METRICS"):
        build_app(data_dir, SESSION_METRICS=value)


def test_known_workload_in_process(data_dir: Path) -> None:
    """Every request of a known workload is counted once, under the right label."""
    clock = FakeClock()
    app = _app(data_dir, SESSION_TIMEOUT=600)
    clock.install(app)
    before = fbs_metrics.snapshot()

    client = app.test_client()
    client.get("/inc")  # created
    sid = cookie_of(client)
    assert sid is not None
    client.get("/inc")  # loaded, saved
    client.get("/read")  # loaded, unchanged
    clock.advance(120)  # past the touch interval (a tenth of the idle timeout, <= 60 s)
    client.get("/read")  # loaded, touched
    client.get("/none")  # the session is not used: nothing
    client_with(app, UNKNOWN).get("/read")  # missing; its cookie is expired: deleted
    client_with(app, "not-an-id").get("/read")  # invalid; deleted
    stale = app.test_client()
    stale.get("/inc")  # created
    clock.advance(601)
    stale.get("/read")  # expired (past the idle timeout); deleted
    client_with(app, sid).get("/logout")  # (sid expired too: a fresh one) expired
    delta = _delta(before, fbs_metrics.snapshot())

    assert delta["opens"] == {"loaded": 3, "missing": 1, "invalid": 1, "expired": 2}
    assert delta["saves"] == {
        "created": 2,
        "saved": 1,
        "unchanged": 1,
        "touched": 1,
        "deleted": 4,
    }
    assert delta["open_seconds"] == 7  # one observation per open
    assert delta["record_bytes"] == 3  # created and saved: the records written
    assert delta["lock_timeouts"] == delta["store_unavailable"] == 0


def test_record_sizes_are_observed(data_dir: Path) -> None:
    app = _app(data_dir)

    @app.route("/big")
    def big() -> str:
        session["blob"] = "x" * 20_000
        return "ok"

    before = fbs_metrics.snapshot()["record_bytes"]
    app.test_client().get("/big")
    after = fbs_metrics.snapshot()["record_bytes"]
    assert after["count"] == before["count"] + 1
    assert 20_000 < after["sum"] - before["sum"] < 21_000
    # Cumulative buckets: the record is above 16 KiB and within 64 KiB.
    assert after["buckets"][16384.0] == before["buckets"][16384.0]
    assert after["buckets"][65536.0] == before["buckets"][65536.0] + 1


def test_corrupt_payload_counted(data_dir: Path) -> None:
    """A whole, authenticated record whose data does not unpickle: counted, removed."""
    app = _app(data_dir)
    store = app.session_interface.store  # type: ignore[attr-defined]
    sid = store.new_id()
    store.create(sid, b"\x80\x05not a pickle", 1.0, FakeClock()())
    before = fbs_metrics.snapshot()
    assert client_with(app, sid).get("/read").status_code == 200
    delta = _delta(before, fbs_metrics.snapshot())
    assert delta["corrupt_payloads"] == 1
    assert delta["opens"] == {"loaded": 1}


def test_lock_timeout_counted(data_dir: Path) -> None:
    """A request that waited past SESSION_LOCK_TIMEOUT: one lock timeout, no save."""
    app = _app(data_dir, SESSION_LOCK_TIMEOUT=0.2)
    entered, release = threading.Event(), threading.Event()

    @app.route("/hold")
    def hold() -> str:
        session["held"] = 1
        entered.set()
        release.wait(10)
        return "held"

    client = app.test_client()
    client.get("/inc")
    sid = cookie_of(client)
    assert sid is not None
    thread, result = _in_thread(lambda: client_with(app, sid).get("/hold"))
    try:
        assert entered.wait(10)
        before = fbs_metrics.snapshot()
        reply = client_with(app, sid).get("/inc")
        delta = _delta(before, fbs_metrics.snapshot())
    finally:
        release.set()
        thread.join(10)
    assert reply.status_code == 503
    assert delta["lock_timeouts"] == 1
    assert delta["saves"] == {} and delta["opens"] == {}
    assert result["value"].status_code == 200


def test_sweeps_counted(data_dir: Path) -> None:
    clock = FakeClock()
    app = _app(data_dir, SESSION_TIMEOUT=60)
    clock.install(app)
    for _ in range(3):
        app.test_client().get("/inc")
    clock.advance(120)
    live = app.test_client()
    live.get("/inc")
    state = app.session_interface.state  # type: ignore[attr-defined]
    sweeper = AutoSweeper(state.store, 1.0, clock, state.metrics)
    before = fbs_metrics.snapshot()
    assert sweeper.sweep_once() is not None
    after = fbs_metrics.snapshot()
    delta = _delta(before, after)
    assert delta["sweeps"] == 1
    assert delta["sweep_removed"] == 3
    assert delta["sweep_seconds"] == 1
    assert after["sweep_kept"] == 1


def test_exported_to_prometheus_default_registry(data_dir: Path) -> None:
    app = _app(data_dir)
    app.test_client().get("/inc")
    text = generate_latest(REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "flask_beaker_session_opens",
        "flask_beaker_session_saves",
        "flask_beaker_session_open_seconds",
        "flask_beaker_session_record_bytes",
        "flask_beaker_session_lock_timeouts",
        "flask_beaker_session_store_unavailable",
        "flask_beaker_session_sweeps",
        "flask_beaker_session_sweep_kept",
    ):
        assert name in families, sorted(families)
    created = [
        s.value
        for s in families["flask_beaker_session_saves"].samples
        if s.name.endswith("_total") and s.labels == {"outcome": "created"}
    ]
    assert created and created[0] >= 1


# -- a real gunicorn, 4 workers, scraped ------------------------------------------------


def _scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = server.client(keepalive=False).get("/metrics")
    assert reply.status == 200, reply.text
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.mark.skipif(sys.platform != "linux", reason="gunicorn tests need Linux")
@pytest.mark.posix_only(reason="gunicorn (fcntl, fork)")
def test_gunicorn_four_workers_scraped_counts_match_the_workload(tmp_path: Path) -> None:
    """Every worker writes its totals into ``PROMETHEUS_MULTIPROC_DIR``; a scrape of any
    worker sums them: once written, the counts equal the workload's, exactly."""
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    env = {"FBS_METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    with gunicorn(tmp_path, "-w", "4", lock_timeout=1.0, env=env) as server:
        sids = [_new_session(server) for _ in range(20)]  # 20 created
        pids = set()
        for sid in sids:
            c = server.client(sid, keepalive=False)
            for _ in range(5):  # 100 loaded + saved
                reply = c.get("/inc")
                assert reply.status == 200
                pids.add(reply.pid)
            assert c.get("/dump").status == 200  # 20 loaded + unchanged
        for _ in range(10):  # 10 missing + deleted
            assert server.client(UNKNOWN, keepalive=False).get("/dump").status == 200
        # One lock timeout: a request of a session another request holds.
        holder = server.client(sids[0])
        thread, result = _in_thread(lambda: holder.get("/hold/g1"))  # 1 loaded + saved
        try:
            server.wait_pid_file("g1")
            refused = server.client(sids[0], keepalive=False).get("/inc")
        finally:
            server.open_gate("g1")
            thread.join(60)
            holder.close()
        assert refused.status == 503 and result["value"].status == 200
        # Each worker writes its totals at most FLUSH_INTERVAL after its last request:
        # scrape until the numbers stop changing.
        samples = _scrape(server)
        deadline = time.monotonic() + 10 * fbs_metrics.FLUSH_INTERVAL
        while time.monotonic() < deadline:
            time.sleep(fbs_metrics.FLUSH_INTERVAL)
            latest = _scrape(server)
            if latest == samples:
                break
            samples = latest

    assert len(pids) > 1  # the work really was spread over several workers
    p = "flask_beaker_session_"

    def value(name: str, **labels: str) -> float:
        return samples.get((p + name, tuple(sorted(labels.items()))), 0.0)

    assert value("opens_total", result="loaded") == 121
    assert value("opens_total", result="missing") == 10
    assert value("saves_total", outcome="created") == 20
    assert value("saves_total", outcome="saved") == 101
    assert value("saves_total", outcome="unchanged") == 20
    assert value("saves_total", outcome="deleted") == 10
    assert value("open_seconds_count") == 131
    assert value("record_bytes_count") == 121
    assert value("lock_timeouts_total") == 1
    assert value("store_unavailable_total") == 0


_WITHOUT_PROMETHEUS = """
import sys, json
sys.modules["prometheus_client"] = None  # as if not installed: import fails
sys.path.insert(0, {tests!r})
from helpers import build_app
from flask_beaker_session import metrics
app = build_app({data_dir!r}, SESSION_METRICS=True, SESSION_TIMEOUT=600)
client = app.test_client()
client.get("/inc"); client.get("/inc"); client.get("/dump")
snap = metrics.snapshot()
print(json.dumps({{
    "opens": {{k: v for k, v in snap["opens"].items() if v}},
    "saves": {{k: v for k, v in snap["saves"].items() if v}},
    "open_seconds": snap["open_seconds"]["count"],
    "record_bytes": snap["record_bytes"]["count"],
}}))
"""


def test_counts_in_process_without_prometheus_client(data_dir: Path) -> None:
    """Without ``prometheus_client`` the same metrics are kept in process."""
    script = _WITHOUT_PROMETHEUS.format(tests=str(TESTS_DIR), data_dir=str(data_dir))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out.splitlines()[-1]) == {
        "opens": {"loaded": 2},
        "saves": {"created": 1, "saved": 1, "unchanged": 1},
        "open_seconds": 2,
        "record_bytes": 2,
    }
