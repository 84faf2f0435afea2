"""Shared fixtures: a factory for real Flask apps using the extension on a temp data dir."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session import session as fbs

TESTS_DIR = Path(__file__).parent
FIXTURES = TESTS_DIR / "fixtures"
# ``legacy_objects`` (classes pickled into the legacy fixtures) must be importable.
sys.path.insert(0, str(TESTS_DIR))

COOKIE = "beaker.session.id"
LEGACY = FIXTURES / "legacy"
#: What ``tests/fixtures/legacy`` holds: per Beaker version, each session's id, path and data.
MANIFEST: dict[str, Any] = json.loads((LEGACY / "manifest.json").read_text())

#: The ``make_app`` fixture's type: ``make_app(**config) -> Flask``.
MakeApp = Callable[..., Flask]


def plain_app(data_dir: Path | str, **config: Any) -> Flask:
    """A Flask app with a few routes used across the tests, before the extension is set up.

    Routes: ``/set/<key>/<value>``, ``/get/<key>``, ``/inc`` (counter ``n``), ``/dump``
    (JSON of the user keys), ``/none`` (never touches the session), ``/delete``,
    ``/regenerate``, ``/invalidate``, ``/id``.
    """
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="test-secret")
    app.config.update(config)

    @app.route("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        flask_session[key] = value
        return "ok"

    @app.route("/get/<key>")
    def get_value(key: str) -> str:
        return str(flask_session.get(key))

    @app.route("/inc")
    def inc() -> str:
        flask_session["n"] = flask_session.get("n", 0) + 1
        return str(flask_session["n"])

    @app.route("/dump")
    def dump() -> Any:
        return jsonify({k: v for k, v in flask_session.items() if not k.startswith("_")})

    @app.route("/none")
    def none() -> str:
        return "none"

    @app.route("/delete")
    def delete() -> str:
        flask_session.delete()
        return "deleted"

    @app.route("/regenerate")
    def regenerate() -> str:
        flask_session.regenerate_id()
        return flask_session.id

    @app.route("/invalidate")
    def invalidate() -> str:
        flask_session.invalidate()
        return flask_session.id

    @app.route("/id")
    def sid() -> str:
        return flask_session.id

    return app


def build_app(data_dir: Path | str, **config: Any) -> Flask:
    """``plain_app`` with the extension set up (``init_app``)."""
    app = plain_app(data_dir, **config)
    fbs.init_app(app)
    return app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def make_app(data_dir: Path) -> MakeApp:
    def factory(**config: Any) -> Flask:
        config.setdefault("SESSION_DATA_DIR", str(data_dir))
        return build_app(**{"data_dir": config.pop("SESSION_DATA_DIR")}, **config)

    return factory


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


def record_files(data_dir: Path) -> list[Path]:
    """Our record files under a data dir (not temp files, not legacy files)."""
    root = data_dir / "fbs1"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def record_path(data_dir: Path, sid: str) -> Path:
    """Where the record of ``sid`` lives (the core computes the layout)."""
    return Path(_core.record_path(data_dir, sid))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def cookie_of(client: Any) -> str | None:
    c = client.get_cookie(COOKIE)
    return None if c is None else c.value


__all__ = [
    "COOKIE",
    "FIXTURES",
    "all_files",
    "build_app",
    "cookie_of",
    "os",
    "record_files",
]
