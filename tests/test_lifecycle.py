"""Request lifecycle: laziness, when records are written, expiry, testing (§5, §9).

Time passes on the apps' fake clock (the ``clock`` fixture), never by sleeping."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flask
import pytest
from flask import Flask
from flask import session as flask_session
from helpers import (
    COOKIE,
    FakeClock,
    MakeApp,
    all_files,
    client_with,
    cookie_of,
    record_files,
    record_path,
    session_cookies,
)


def snapshot(path: Path) -> tuple[bytes, int]:
    """The record's bytes and its mtime in nanoseconds."""
    return path.read_bytes(), os.stat(path).st_mtime_ns


def add_routes(app: Flask) -> None:
    """Extra routes: pop a key, fail with a 500 or an exception after a change."""

    @app.route("/pop/<key>")
    def pop(key: str) -> str:
        flask_session.pop(key, None)
        return "ok"

    @app.route("/set-then-unset")
    def set_then_unset() -> str:
        flask_session["tmp"] = 1
        del flask_session["tmp"]
        return "ok"

    @app.route("/fail/<key>/<value>")
    def fail(key: str, value: str) -> tuple[str, int]:
        flask_session[key] = value
        return "failed", 500

    @app.route("/raise/<key>/<value>")
    def boom(key: str, value: str) -> str:
        flask_session[key] = value
        raise RuntimeError("boom")

    @app.route("/times")
    def times() -> Any:
        return {k: flask_session[k] for k in ("_creation_time", "_accessed_time")}


# -- laziness --------------------------------------------------------------------------


def test_untouched_session_costs_nothing(app: Flask, data_dir: Path) -> None:
    """A view not using the session creates nothing, sends no cookie or Vary."""
    client = app.test_client()
    response = client.get("/none")
    assert session_cookies(response) == []
    assert "Cookie" not in response.vary
    assert all_files(data_dir) == []


def test_untouched_session_with_cookie_costs_nothing(
    app: Flask, data_dir: Path, clock: FakeClock
) -> None:
    """With a valid cookie, ``/none`` changes neither bytes nor mtime of the record."""
    client = clock.install(app).test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    path = record_path(data_dir, sid)
    before = snapshot(path)
    clock.advance(1)
    for _ in range(3):
        response = client.get("/none")
        assert session_cookies(response) == []
        assert "Cookie" not in response.vary
    assert snapshot(path) == before
    assert all_files(data_dir) == [path]


@pytest.mark.parametrize("value", ["0" * 32, "not-an-id", "../../etc/passwd", "A" * 32])
def test_unknown_cookie_creates_nothing(value: str, app: Flask, data_dir: Path) -> None:
    """Lookups of unknown or malformed ids create nothing on disk and send no cookie."""
    client = client_with(app, value)
    assert client.get("/none").text == "none"
    response = client.get("/dump")
    assert response.get_json() == {}
    assert session_cookies(response) == [] or "Max-Age=0" in session_cookies(response)[0]
    assert not data_dir.exists() or all_files(data_dir) == []


def test_read_of_empty_session_creates_nothing(app: Flask, data_dir: Path) -> None:
    """A view reading an empty session stores nothing (init_app made the data dir)."""
    client = app.test_client()
    for url in ["/get/a", "/dump"]:
        response = client.get(url)
        assert session_cookies(response) == []
        assert "Cookie" in response.vary
    assert all_files(data_dir) == []


def test_session_never_given_data_is_not_stored(make_app: MakeApp, data_dir: Path) -> None:
    """A key set and removed in the same request leaves nothing stored, no cookie."""
    app = make_app()
    add_routes(app)
    client = app.test_client()
    response = client.get("/set-then-unset")
    assert session_cookies(response) == []
    assert cookie_of(client) is None
    assert record_files(data_dir) == []


# -- read-only requests and the idle timeout -------------------------------------------


def test_read_only_request_does_not_rewrite(
    make_app: MakeApp, data_dir: Path, clock: FakeClock
) -> None:
    """Reading an existing session leaves the record's bytes and mtime untouched."""
    client = clock.install(make_app(SESSION_TIMEOUT=10**6)).test_client()
    client.get("/set/a/1")
    path = record_path(data_dir, str(cookie_of(client)))
    before = snapshot(path)
    clock.advance(1)
    for url in ["/get/a", "/dump", "/id", "/get/missing"]:
        response = client.get(url)
        assert response.status_code == 200
        assert session_cookies(response) == []
    assert client.get("/get/a").text == "1"
    assert snapshot(path) == before


def test_write_of_same_value_does_not_rewrite(
    make_app: MakeApp, data_dir: Path, clock: FakeClock
) -> None:
    """Setting a key to the value it already has is not a change."""
    client = clock.install(make_app(SESSION_TIMEOUT=10**6)).test_client()
    client.get("/set/a/1")
    path = record_path(data_dir, str(cookie_of(client)))
    before = snapshot(path)
    clock.advance(1)
    client.get("/set/a/1")
    assert snapshot(path) == before
    client.get("/set/a/2")
    assert path.read_bytes() != before[0]


def test_read_refreshes_mtime_not_bytes(
    make_app: MakeApp, data_dir: Path, clock: FakeClock
) -> None:
    """A read after > timeout/10 touches the mtime only."""
    client = clock.install(make_app(SESSION_TIMEOUT=100)).test_client()
    client.get("/set/a/1")
    path = record_path(data_dir, str(cookie_of(client)))
    data, mtime = snapshot(path)
    clock.advance(11)
    assert client.get("/get/a").text == "1"
    new_data, new_mtime = snapshot(path)
    assert new_data == data
    assert new_mtime > mtime


def test_idle_timeout_expires(make_app: MakeApp, data_dir: Path, clock: FakeClock) -> None:
    """After SESSION_TIMEOUT idle seconds the data is gone, the old record removed."""
    client = clock.install(make_app(SESSION_TIMEOUT=60)).test_client()
    client.get("/set/a/1")
    old = str(cookie_of(client))
    old_path = record_path(data_dir, old)
    assert old_path.exists()
    clock.advance(61)
    assert client.get("/dump").get_json() == {}
    assert not old_path.exists()
    client.get("/set/b/2")
    new = cookie_of(client)
    assert new is not None and new != old
    assert record_files(data_dir) == [record_path(data_dir, new)]
    assert client.get("/dump").get_json() == {"b": "2"}


def test_idle_timeout_slides(make_app: MakeApp, clock: FakeClock) -> None:
    """Reads keep the session alive: its lifetime slides with each use."""
    client = clock.install(make_app(SESSION_TIMEOUT=60)).test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    for _ in range(4):  # 120 s in all, more than the timeout
        clock.advance(30)
        assert client.get("/get/a").text == "1"
    assert cookie_of(client) == sid


def test_no_timeout_never_expires(make_app: MakeApp, data_dir: Path, clock: FakeClock) -> None:
    """SESSION_TIMEOUT=None: a session idle longer than a timeout would allow lives."""
    unlimited = clock.install(make_app(SESSION_TIMEOUT=None)).test_client()
    unlimited.get("/set/a/1")
    sid = str(cookie_of(unlimited))
    path = record_path(data_dir, sid)
    before = snapshot(path)
    clock.advance(3600)
    assert unlimited.get("/get/a").text == "1"
    assert snapshot(path) == before  # no touch without a timeout
    # The same record under a 60 s timeout is expired: the wait above was long enough.
    limited = client_with(clock.install(make_app(SESSION_TIMEOUT=60)), sid)
    assert limited.get("/get/a").text == "None"
    assert not path.exists()


def test_absolute_timeout_ends_active_session(
    make_app: MakeApp, data_dir: Path, clock: FakeClock
) -> None:
    """SESSION_ABSOLUTE_TIMEOUT ends a session however active it is."""
    app = make_app(SESSION_TIMEOUT=600, SESSION_ABSOLUTE_TIMEOUT=120)
    client = clock.install(app).test_client()
    client.get("/set/a/1")
    path = record_path(data_dir, str(cookie_of(client)))
    clock.advance(50)
    assert client.get("/get/a").text == "1"
    clock.advance(80)
    assert client.get("/get/a").text == "None"
    assert not path.exists()


# -- emptied sessions and failed requests ----------------------------------------------


def test_emptied_session_is_deleted(make_app: MakeApp, data_dir: Path) -> None:
    """Popping the last user key removes the record and deletes the cookie."""
    app = make_app()
    add_routes(app)
    client = app.test_client()
    client.get("/set/a/1")
    client.get("/set/b/2")
    client.get("/pop/a")
    assert len(record_files(data_dir)) == 1
    response = client.get("/pop/b")
    assert record_files(data_dir) == []
    headers = session_cookies(response)
    assert len(headers) == 1 and "Max-Age=0" in headers[0]
    assert cookie_of(client) is None


def test_5xx_response_does_not_save(make_app: MakeApp, data_dir: Path) -> None:
    """A view that changes the session then returns 500 commits nothing."""
    app = make_app()
    add_routes(app)
    client = app.test_client()
    response = client.get("/fail/a/1")
    assert response.status_code == 500
    assert session_cookies(response) == []
    assert record_files(data_dir) == []

    client.get("/set/a/1")
    path = record_path(data_dir, str(cookie_of(client)))
    before = path.read_bytes()
    assert client.get("/fail/a/2").status_code == 500
    assert client.get("/fail/b/3").status_code == 500
    assert path.read_bytes() == before
    assert client.get("/dump").get_json() == {"a": "1"}


def test_exception_does_not_save(
    make_app: MakeApp, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unhandled exception (a 500 with PROPAGATE_EXCEPTIONS=False) saves nothing."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    add_routes(app)
    # The apps share one logger (named after ``helpers``): silence it for this test only.
    monkeypatch.setattr(app.logger, "disabled", True)
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/raise/a/2")
    assert response.status_code == 500
    assert client.get("/dump").get_json() == {"a": "1"}
    fresh = app.test_client()
    assert fresh.get("/raise/x/1").status_code == 500
    assert cookie_of(fresh) is None
    assert len(record_files(data_dir)) == 1


def test_exception_propagated_releases_session(make_app: MakeApp) -> None:
    """With PROPAGATE_EXCEPTIONS the session is released: the next request proceeds."""
    app = make_app(PROPAGATE_EXCEPTIONS=True, SESSION_LOCK_TIMEOUT=1)
    add_routes(app)
    client = app.test_client()
    client.get("/set/a/1")
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/raise/a/2")
    assert client.get("/get/a").text == "1"


# -- testing helpers (§9) --------------------------------------------------------------


def test_session_transaction_on_fresh_client(app: Flask, data_dir: Path) -> None:
    """``session_transaction()`` works before any request; the data reaches the next."""
    client = app.test_client()
    with client.session_transaction() as sess:
        assert dict(sess).keys() <= {"_creation_time", "_accessed_time"}
        sess["user"] = "alice"
    assert cookie_of(client) is not None
    assert client.get("/get/user").text == "alice"
    assert len(record_files(data_dir)) == 1


def test_session_transaction_after_request(make_app: MakeApp) -> None:
    """A transaction sees and extends earlier data; the creation time is kept."""
    app = make_app()
    add_routes(app)
    client = app.test_client()
    client.get("/set/a/1")
    first = client.get("/times").get_json()
    with client.session_transaction() as sess:
        assert sess["a"] == "1"
        assert sess["_creation_time"] == first["_creation_time"]
        assert sess["_accessed_time"] >= first["_accessed_time"]
        sess["b"] = "2"
    assert client.get("/dump").get_json() == {"a": "1", "b": "2"}
    later = client.get("/times").get_json()
    assert later["_creation_time"] == first["_creation_time"]
    assert later["_accessed_time"] >= first["_accessed_time"]
    with client.session_transaction() as sess:
        assert sess["b"] == "2"


def test_session_transaction_read_only_releases(make_app: MakeApp) -> None:
    """A transaction that only reads releases the session for the next request."""
    client = make_app(SESSION_LOCK_TIMEOUT=1).test_client()
    client.get("/set/a/1")
    with client.session_transaction() as sess:
        assert sess["a"] == "1"
    assert client.get("/set/a/2").status_code == 200
    assert client.get("/get/a").text == "2"


def test_test_request_context(make_app: MakeApp, data_dir: Path) -> None:
    """``app.test_request_context()`` gives a working session with no testing flag."""
    app = make_app(SESSION_LOCK_TIMEOUT=1)
    client = app.test_client()
    client.get("/set/a/1")
    sid = str(cookie_of(client))
    headers = {"Cookie": f"{COOKIE}={sid}"}
    with app.test_request_context("/", headers=headers):
        assert flask.session["a"] == "1"
        assert flask.session.id == sid
        flask.session["scratch"] = 1
    # The lock taken above was released: a second context on the same cookie works.
    with app.test_request_context("/", headers=headers):
        assert flask.session["a"] == "1"
        assert flask.session.id == sid
    assert client.get("/get/a").text == "1"
    with app.test_request_context("/"):
        assert flask.session.get("a") is None
        flask.session["x"] = 1
        assert flask.session["x"] == 1
    assert len(record_files(data_dir)) == 1
