"""Automatic sweeping is on by default (issue 15, item 3): every 600 s, by a background
thread per worker started lazily (never on a request's path), at most once per interval
across the processes sharing a data dir; off with ``None``, ``0`` or ``False``; memory
stores are swept by their own process; Redis (which expires keys itself) gets no thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import config as fbs_config
from flask_beaker_session import session as fbs
from helpers import FakeClock, client_with, cookie_of, interface_of, is_stored

SWEEPER_THREAD = "flask-beaker-session-sweeper"


def sweeper_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == SWEEPER_THREAD}


def default_app(data_dir: Path, **config: Any) -> Flask:
    """An app with the package's defaults (not ``helpers.plain_app``, which turns the
    automatic sweep off), plus a timeout and a key."""
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="k", SESSION_TIMEOUT=60)
    app.config.update(config)

    @app.route("/set/<value>")
    def set_value(value: str) -> str:
        flask_session["a"] = value
        return "ok"

    fbs.init_app(app)
    return app


def new_session(app: Flask) -> str:
    client = app.test_client()
    client.get("/set/x")
    sid = cookie_of(client)
    assert sid is not None
    return sid


def test_default_interval_is_ten_minutes() -> None:
    assert fbs_config.SESSION_SWEEP_INTERVAL == 600
    assert fbs_config.load({}).sweep_interval == 600


def test_default_app_sweeps_in_the_background(tmp_path: Path) -> None:
    """With the defaults an app has a sweeper; its thread starts at the first request, not
    at init_app (nothing runs before a pre-fork server forks), and the request does not
    sweep."""
    before = sweeper_threads()
    app = default_app(tmp_path / "d")
    sweeper = interface_of(app).sweeper
    assert sweeper is not None and sweeper.interval == 600
    assert sweeper_threads() == before
    clock = FakeClock()
    clock.install(app)
    sid = new_session(app)
    assert len(sweeper_threads() - before) == 1
    clock.advance(120)  # expired: the next sweep removes it, the request did not
    app.test_client().get("/set/y")
    assert sweeper.last_report is None
    assert len(sweeper_threads() - before) == 1  # one thread per app and process
    report = sweeper.sweep_once()
    assert report is not None and report.expired == 1
    assert not is_stored(app, sid)


def test_at_most_once_per_interval_across_apps_sharing_the_store(tmp_path: Path) -> None:
    """Two apps (as two worker processes) on one data dir: whoever sweeps first claims the
    interval (``sweep.stamp``), the other skips until it has passed."""
    data_dir = tmp_path / "d"
    first, second = default_app(data_dir), default_app(data_dir)
    clock = FakeClock()
    for app in (first, second):
        clock.install(app)
    a, b = interface_of(first).sweeper, interface_of(second).sweeper
    assert a is not None and b is not None
    assert a.sweep_once() is not None
    assert (data_dir / "sweep.stamp").is_file()
    assert b.sweep_once() is None
    assert a.sweep_once() is None
    clock.advance(599)
    assert b.sweep_once() is None
    clock.advance(2)
    sid = new_session(second)
    clock.advance(61)
    report = b.sweep_once()
    assert report is not None and report.expired == 1
    assert not is_stored(second, sid)
    assert a.sweep_once() is None


@pytest.mark.parametrize("off", [None, 0, "0", False])
def test_opt_out(tmp_path: Path, off: Any) -> None:
    """``None``, ``0`` or ``False``: no sweeper, no thread, even after requests."""
    before = sweeper_threads()
    app = default_app(tmp_path / "d", SESSION_SWEEP_INTERVAL=off)
    assert interface_of(app).config.sweep_interval is None
    assert interface_of(app).sweeper is None
    new_session(app)
    # No new thread (an earlier test's sweeper, told to stop, may end meanwhile).
    assert sweeper_threads() <= before


def test_custom_interval(tmp_path: Path) -> None:
    app = default_app(tmp_path / "d", SESSION_SWEEP_INTERVAL=3600)
    sweeper = interface_of(app).sweeper
    assert sweeper is not None and sweeper.interval == 3600


def test_memory_store_is_swept_by_its_process(tmp_path: Path) -> None:
    """A memory store is its process's own: its sweeper removes expired sessions (which
    would otherwise stay in memory until their id came back)."""
    app = default_app(tmp_path / "d", SESSION_TYPE="memory")
    clock = FakeClock()
    clock.install(app)
    sweeper = interface_of(app).sweeper
    assert sweeper is not None
    expired = new_session(app)
    clock.advance(61)
    live = new_session(app)
    report = sweeper.sweep_once()
    assert report is not None and report.expired == 1 and report.live == 1
    assert not is_stored(app, expired) and is_stored(app, live)
    assert client_with(app, live).get("/set/z").status_code == 200
    assert not (tmp_path / "d").exists()


def test_redis_gets_no_sweeper(tmp_path: Path) -> None:
    """Redis expires sessions itself (every key has a TTL): no thread, whatever the
    setting; the value is still validated."""
    for value in (None, 600, 5):
        app = default_app(tmp_path / "d", SESSION_TYPE="redis", SESSION_SWEEP_INTERVAL=value)
        assert interface_of(app).config.sweep_interval is None
        assert interface_of(app).sweeper is None
    with pytest.raises(fbs_config.ConfigurationError, match="SESSION_SWEEP_INTERVAL"):
        default_app(tmp_path / "d", SESSION_TYPE="redis", SESSION_SWEEP_INTERVAL="hourly")
