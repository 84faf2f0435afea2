"""``SESSION_MAX_SIZE`` (issue 14, item 7c): a session whose pickled data exceeds it is not
stored; the save raises :class:`SessionTooLargeError` naming the session's size and the
limit, the request fails, and the stored session is unchanged."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import config as fbs_config
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError, SessionTooLargeError
from helpers import build_app, cookie_of, record_path


def big_app(data_dir: Path, **config: Any) -> Flask:
    app = build_app(data_dir, **config)

    @app.route("/big/<int:size>")
    def big(size: int) -> str:
        flask_session["blob"] = os.urandom(size)
        return "ok"

    return app


def test_default_is_documented_and_generous() -> None:
    assert fbs_config.SESSION_MAX_SIZE == 4 << 20
    assert fbs_config.load({}).max_size == 4 << 20


@pytest.mark.parametrize("backend", ["file", "memory"])
@pytest.mark.parametrize("locking", [True, False])
def test_oversize_save_fails_clearly_and_keeps_the_stored_session(
    backend: str, locking: bool, data_dir: Path
) -> None:
    app = big_app(data_dir, SESSION_TYPE=backend, SESSION_LOCKING=locking, SESSION_MAX_SIZE=100_000)
    app.testing = True
    client = app.test_client()
    assert client.get("/set/k/before").status_code == 200
    assert client.get("/big/50000").status_code == 200  # under the limit: stored
    with pytest.raises(SessionTooLargeError) as info:
        client.get("/big/200000")
    message = str(info.value)
    assert "SESSION_MAX_SIZE (100000 bytes)" in message and "unchanged" in message
    assert info.value.limit == 100_000 and 200_000 < info.value.size < 201_000
    assert str(info.value.size) in message
    # The stored session is the previous version; the session still works.
    assert client.get("/get/k").get_data(as_text=True) == "before"
    assert client.get("/set/k/after").status_code == 200
    assert client.get("/get/k").get_data(as_text=True) == "after"


def test_oversize_new_session_is_not_created(data_dir: Path) -> None:
    app = big_app(data_dir, SESSION_MAX_SIZE=10_000)
    response = app.test_client().get("/big/20000")
    assert response.status_code == 500  # not TESTING: Flask's 500, logged by Flask
    assert not (data_dir / "fbs1").exists()


def test_app_can_handle_the_error(data_dir: Path) -> None:
    """The error reaches the app's 500 handler as ``original_exception``."""
    app = big_app(data_dir, SESSION_MAX_SIZE=10_000)

    @app.errorhandler(500)
    def too_big(e: Any) -> Any:
        original = getattr(e, "original_exception", None)
        if isinstance(original, SessionTooLargeError):
            return f"too big: {original.size} > {original.limit}", 413
        return "error", 500

    response = app.test_client().get("/big/20000")
    assert response.status_code == 413
    assert response.get_data(as_text=True).endswith("> 10000")


def test_lowering_the_limit_reads_bigger_records_as_no_session(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored record larger than the limit is not loaded at all (that bound is what
    makes a planted huge file cheap): it reads as no session and is removed."""
    client = big_app(data_dir).test_client()
    client.get("/big/50000")
    sid = cookie_of(client)
    assert sid is not None
    small = big_app(data_dir, SESSION_MAX_SIZE=10_000)
    with caplog.at_level(logging.WARNING, logger="flask_beaker_session"):
        assert small.test_client().get("/get/blob").status_code == 200
        from helpers import client_with

        assert client_with(small, sid).get("/get/k").get_data(as_text=True) == "None"
    assert not record_path(data_dir, sid).exists()


@pytest.mark.parametrize("value", [0, -1, "abc", True, 1.5, 2**32, None])
def test_bad_values_are_rejected_at_init(value: Any) -> None:
    app = Flask(__name__)
    app.config.update(SESSION_MAX_SIZE=value)
    with pytest.raises(ConfigurationError, match="SESSION_MAX_SIZE"):
        fbs.init_app(app)


@pytest.mark.parametrize("value", ["2048", 2048.0, 2**32 - 1])
def test_good_values_are_accepted(value: Any) -> None:
    assert fbs_config.load({"SESSION_MAX_SIZE": value}).max_size == int(value)
