"""The benchmark app: the same routes for every implementation.

Only the session set-up differs (``impls.IMPLS[name].setup``). Gunicorn loads it with
``--chdir bench 'apps:create_app("ours", "/path/to/data")'``.
"""

from __future__ import annotations

import os

from flask import Flask, session

from impls import IMPLS, SECRET_KEY, USER_KEY


def create_app(impl: str, data_dir: str) -> Flask:
    """A Flask app with the benchmark routes and ``impl``'s session set-up."""
    app = Flask(__name__)
    app.secret_key = SECRET_KEY
    IMPLS[impl].setup(app, data_dir)
    add_routes(app)
    return app


def add_routes(app: Flask) -> None:
    @app.get("/free")
    def free() -> str:
        """Session-free route: the baseline every overhead is measured against."""
        return "ok"

    @app.get("/rw")
    def read_write() -> str:
        """Read-write counter."""
        n = session.get("n", 0) + 1
        session["n"] = n
        return str(n)

    @app.get("/ro")
    def read_only() -> str:
        """Reads one small key (-1 when the session has none)."""
        return str(session.get("n", -1))

    @app.get("/blob")
    def blob() -> str:
        """Issue 17's 1 MB row: reads the blob's length and increments the counter."""
        n = session.get("n", 0) + 1
        session["n"] = n
        return f"{len(session.get('blob', b''))} {n}"

    @app.get("/login")
    def login() -> str:
        """What Flask-Login's ``login_user()`` does to the session: sets the user's id
        (``ours_index`` then adds an index entry)."""
        session[USER_KEY] = "bench-user"
        return "in"

    @app.get("/logout")
    def logout() -> str:
        """Flask-Login's ``logout_user()``: removes the user's id, keeps the rest."""
        session.pop(USER_KEY, None)
        return "out"

    @app.get("/setup/<int:size>")
    def setup(size: int) -> str:
        """Starts a session holding a counter and ``size`` random bytes."""
        session["n"] = 0
        if size:
            session["blob"] = os.urandom(size)
        return "ok"
