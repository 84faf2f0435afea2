"""Configuration keys: accepted and rejected values, validated at init_app (SPEC §2)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError
from helpers import COOKIE, MakeApp, build_app, cookie_of, record_files


def set_cookie_header(response: Any) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            return str(header)
    return None


def assert_works(app: Flask, data_dir: Path) -> None:
    """A write then a read of the session succeed and leave one record."""
    client = app.test_client()
    assert client.get("/set/k/v").status_code == 200
    assert client.get("/get/k").text == "v"
    assert len(record_files(data_dir)) == 1


ACCEPTED: list[tuple[str, Any]] = [
    ("SESSION_TYPE", "file"),
    ("SESSION_TYPE", None),
    ("SESSION_EXPIRES", True),
    ("SESSION_EXPIRES", False),
    ("SESSION_EXPIRES", "true"),
    ("SESSION_EXPIRES", "false"),
    ("SESSION_EXPIRES", "False"),
    ("SESSION_EXPIRES", 3600),
    ("SESSION_EXPIRES", 1),
    ("SESSION_TIMEOUT", 1800),
    ("SESSION_TIMEOUT", 0.5),
    ("SESSION_TIMEOUT", "60"),
    ("SESSION_TIMEOUT", "2.5"),
    ("SESSION_TIMEOUT", None),
    ("SESSION_TESTING", True),
    ("SESSION_TESTING", False),
    ("SESSION_LOCK_TIMEOUT", 10),
    ("SESSION_LOCK_TIMEOUT", 0.25),
    ("SESSION_LOCK_TIMEOUT", "5"),
    ("SESSION_READ_LEGACY", True),
    ("SESSION_READ_LEGACY", False),
    ("SESSION_ABSOLUTE_TIMEOUT", None),
    ("SESSION_ABSOLUTE_TIMEOUT", 86400),
    ("SESSION_ABSOLUTE_TIMEOUT", "3600"),
    ("SESSION_SWEEP_INTERVAL", None),
    ("SESSION_SWEEP_INTERVAL", 0),
    ("SESSION_SWEEP_INTERVAL", False),
]

REJECTED: list[tuple[str, Any]] = [
    # 'redis' and 'memory' (SPEC §10) are tested below: they are being added.
    ("SESSION_TYPE", "bogus"),
    ("SESSION_TYPE", "FILES"),
    ("SESSION_TYPE", ""),
    ("SESSION_TYPE", 1),
    ("SESSION_EXPIRES", 0),
    ("SESSION_EXPIRES", -5),
    ("SESSION_EXPIRES", "maybe"),
    ("SESSION_EXPIRES", None),
    ("SESSION_EXPIRES", []),
    ("SESSION_TIMEOUT", 0),
    ("SESSION_TIMEOUT", -1),
    ("SESSION_TIMEOUT", "soon"),
    ("SESSION_TIMEOUT", ""),
    ("SESSION_TIMEOUT", True),
    ("SESSION_TIMEOUT", False),
    ("SESSION_TIMEOUT", float("nan")),
    ("SESSION_TIMEOUT", float("inf")),
    ("SESSION_TIMEOUT", [1]),
    ("SESSION_DATA_DIR", ""),
    ("SESSION_DATA_DIR", None),
    ("SESSION_DATA_DIR", 123),
    ("SESSION_DATA_DIR", ["/tmp"]),
    ("SESSION_LOCK_TIMEOUT", 0),
    ("SESSION_LOCK_TIMEOUT", -1),
    ("SESSION_LOCK_TIMEOUT", None),
    ("SESSION_LOCK_TIMEOUT", "never"),
    ("SESSION_LOCK_TIMEOUT", True),
    ("SESSION_READ_LEGACY", "maybe"),
    ("SESSION_READ_LEGACY", None),
    ("SESSION_READ_LEGACY", 2),
    ("SESSION_READ_LEGACY", []),
    ("SESSION_ABSOLUTE_TIMEOUT", 0),
    ("SESSION_ABSOLUTE_TIMEOUT", -10),
    ("SESSION_ABSOLUTE_TIMEOUT", "forever"),
    ("SESSION_ABSOLUTE_TIMEOUT", True),
    ("SESSION_SWEEP_INTERVAL", -1),
    ("SESSION_SWEEP_INTERVAL", "hourly"),
    ("SESSION_SWEEP_INTERVAL", True),
]


@pytest.mark.parametrize(("key", "value"), ACCEPTED, ids=lambda v: repr(v))
def test_accepted_values(key: str, value: Any, tmp_path: Path) -> None:
    """Each accepted value passes init_app and sessions work with it."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir, **{key: value})
    assert_works(app, data_dir)


@pytest.mark.parametrize(("key", "value"), REJECTED, ids=lambda v: repr(v))
def test_rejected_values_raise_at_init_naming_the_key(key: str, value: Any, tmp_path: Path) -> None:
    """A bad value raises ConfigurationError at init_app; the message names the key."""
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(tmp_path / "d"), SECRET_KEY="k")
    app.config[key] = value
    with pytest.raises(ConfigurationError) as info:
        fbs.init_app(app)
    assert key in str(info.value)
    # Nothing was installed on the app and nothing was created on disk.
    assert not isinstance(app.session_interface, fbs.BeakerSessionInterface)
    assert not (tmp_path / "d").exists()


def test_rejection_also_from_session_constructor(tmp_path: Path) -> None:
    """``Session(app)`` validates as ``init_app`` does."""
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(tmp_path / "d"), SESSION_TIMEOUT="never")
    with pytest.raises(ConfigurationError, match="SESSION_TIMEOUT"):
        fbs.Session(app)


def test_config_read_once_at_init(make_app: MakeApp, data_dir: Path) -> None:
    """``app.config`` changed after init_app is not consulted and breaks nothing."""
    app = make_app()
    app.config.update(
        SESSION_TYPE="bogus",
        SESSION_TIMEOUT="garbage",
        SESSION_EXPIRES="garbage",
        SESSION_DATA_DIR=12,
    )
    client = app.test_client()
    response = client.get("/set/a/1")
    assert response.status_code == 200
    assert client.get("/get/a").text == "1"
    assert len(record_files(data_dir)) == 1


def test_data_dir_as_pathlib_path(tmp_path: Path) -> None:
    """SESSION_DATA_DIR may be a ``pathlib.Path``."""
    data_dir = tmp_path / "as-path"
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=data_dir)

    @app.route("/set")
    def set_value() -> str:
        flask_session["a"] = 1
        return "ok"

    fbs.init_app(app)
    client = app.test_client()
    client.get("/set")
    assert len(record_files(data_dir)) == 1


def test_relative_data_dir_resolves_against_cwd_at_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative data dir is fixed at init, not re-resolved when the cwd changes."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    app = build_app("rel/sessions")
    monkeypatch.chdir(second)
    assert_works(app, first / "rel" / "sessions")
    assert not (second / "rel").exists()


def test_default_data_dir_is_dot_sessions_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SESSION_DATA_DIR sessions go to ``./.sessions`` of the cwd at init."""
    monkeypatch.chdir(tmp_path)
    app = Flask(__name__)

    @app.route("/set")
    def set_value() -> str:
        flask_session["a"] = 1
        return "ok"

    fbs.init_app(app)
    assert (tmp_path / ".sessions").is_dir()  # created at init_app
    app.test_client().get("/set")
    assert len(record_files(tmp_path / ".sessions")) == 1


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    """An existing regular file as data dir is refused at init, naming the key."""
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(target))
    with pytest.raises(ConfigurationError, match="SESSION_DATA_DIR"):
        fbs.init_app(app)
    assert target.read_text() == "x"


@pytest.mark.posix_only(reason="mode bits")
def test_data_dir_created_at_init_records_on_first_save(make_app: MakeApp, data_dir: Path) -> None:
    """The data dir need not exist before init_app, which creates it (0700); records
    appear with the first stored session."""
    assert not data_dir.exists()
    app = make_app()
    assert data_dir.is_dir() and (data_dir.stat().st_mode & 0o777) == 0o700
    client = app.test_client()
    client.get("/get/a")
    assert record_files(data_dir) == []
    client.get("/set/a/1")
    assert len(record_files(data_dir)) == 1


def _transcript(app: Flask) -> list[tuple[int, str, bool, str | None]]:
    """Status, body and Set-Cookie kind for a fixed sequence of requests."""
    client = app.test_client()
    out = []
    for url in [
        "/none",
        "/get/a",
        "/set/a/1",
        "/get/a",
        "/inc",
        "/inc",
        "/dump",
        "/delete",
    ]:
        response = client.get(url)
        header = set_cookie_header(response)
        kind = None if header is None else ("deleted" if "Max-Age=0" in header else "set")
        out.append((response.status_code, response.text, kind is not None, kind))
    with client.session_transaction() as sess:
        sess["t"] = "x"
    out.append((200, client.get("/get/t").text, True, None))
    return out


def test_session_testing_changes_nothing(tmp_path: Path) -> None:
    """SESSION_TESTING True or False gives the same responses (SPEC §9)."""
    plain = _transcript(build_app(tmp_path / "a"))
    on = _transcript(build_app(tmp_path / "b", SESSION_TESTING=True))
    off = _transcript(build_app(tmp_path / "c", SESSION_TESTING=False))
    assert plain == on == off
    assert plain[-1][1] == "x"


@pytest.mark.parametrize("value", ["false", "False", "FALSE", False])
def test_expires_false_string_gives_persistent_cookie(value: Any, make_app: MakeApp) -> None:
    """SESSION_EXPIRES='false' (a string, e.g. from an env file) means False."""
    client = make_app(SESSION_EXPIRES=value).test_client()
    header = set_cookie_header(client.get("/set/a/1"))
    assert header is not None
    assert "Expires=" in header


@pytest.mark.parametrize("value", ["true", "True", True])
def test_expires_true_string_gives_session_cookie(value: Any, make_app: MakeApp) -> None:
    """SESSION_EXPIRES='true' means True: no Expires/Max-Age."""
    client = make_app(SESSION_EXPIRES=value).test_client()
    header = set_cookie_header(client.get("/set/a/1"))
    assert header is not None
    assert "Expires=" not in header
    assert "Max-Age" not in header


def test_timeout_as_timedelta_or_numeric_string(make_app: MakeApp) -> None:
    """A timedelta or numeric-string timeout is accepted."""
    for value in (datetime.timedelta(minutes=5), "300"):
        app = make_app(SESSION_TIMEOUT=value)
        client = app.test_client()
        client.get("/set/a/1")
        assert client.get("/get/a").text == "1"
        assert cookie_of(client) is not None


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_planned_backends_accepted_or_rejected_at_init(backend: str, tmp_path: Path) -> None:
    """'memory'/'redis' (SPEC §10, planned): refused at init naming the key until built;
    once built, init succeeds without touching the data dir (or a server)."""
    flask_app = Flask(__name__)
    flask_app.config.update(SESSION_DATA_DIR=str(tmp_path / "d"), SESSION_TYPE=backend)
    try:
        fbs.init_app(flask_app)
    except ConfigurationError as exc:
        assert "SESSION_TYPE" in str(exc)
    else:
        assert isinstance(flask_app.session_interface, fbs.BeakerSessionInterface)
    assert not (tmp_path / "d").exists()


def test_memory_backend_keeps_no_files(tmp_path: Path) -> None:
    """SESSION_TYPE='memory' keeps sessions in the process, no files."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir, SESSION_TYPE="memory")
    client = app.test_client()
    client.get("/set/k/v")
    assert cookie_of(client) is not None
    assert client.get("/get/k").text == "v"
    assert not data_dir.exists()
