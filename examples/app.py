"""Demo: the original README's routes, on server-side sessions.

Run it with ``make demo`` (or ``flask --app examples/app.py run``), then open
http://127.0.0.1:5000/ and follow the links. Sessions are stored under
``examples/.sessions`` (or ``$SESSION_DATA_DIR``); the browser only holds an opaque id in
the ``beaker.session.id`` cookie.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, session
from flask_beaker_session import session as beaker_session

HERE = Path(__file__).parent


class YourObject:
    """Any picklable object can live in the session."""

    def __init__(self, name: str = "an object") -> None:
        self.name = name

    def __str__(self) -> str:
        return f"YourObject({self.name!r})"


def default_config() -> dict[str, Any]:
    """The demo's settings; the environment can override the data dir and the key."""
    return {
        "SESSION_EXPIRES": False,  # persistent cookie
        "SESSION_TIMEOUT": 3600,  # server-side idle timeout: 1 hour
        "SESSION_DATA_DIR": os.environ.get("SESSION_DATA_DIR", str(HERE / ".sessions")),
        "SECRET_KEY": os.environ.get("SECRET_KEY", "dev only: records are signed with it"),
    }


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The demo app; ``config`` overrides :func:`default_config`."""
    app = Flask(__name__)
    app.config.update(default_config())
    app.config.update(config or {})
    beaker_session.init_app(app)

    @app.route("/")
    def index() -> str:
        links = ["create", "read", "delete", "delete_all", "counter"]
        items = "".join(f'<li><a href="/{name}">/{name}</a></li>' for name in links)
        return f"<h1>flask-beaker-session demo</h1><ul>{items}</ul>"

    @app.route("/create")
    def create_session() -> str:
        session["var_1"] = "session 1"
        session["var_2"] = 5
        session["var_3"] = YourObject()
        return "created"

    @app.route("/read")
    def read_session() -> str:
        if "var_1" not in session:
            return "nothing in the session yet: visit /create"
        return f"{session['var_1']} - {session['var_2']} - {session['var_3']}"

    @app.route("/delete")
    def delete() -> Any:
        session.pop("var_1", None)
        return jsonify("var_1" in session)

    @app.route("/delete_all")
    def delete_all_session() -> str:
        session.delete()
        return "deleted"

    @app.route("/counter")
    def counter() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return f"visit number {session['visits']} of session {session.id[:8]}…"

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
