"""The implementations under test: one table, shared by the runner and the apps.

Each entry says how to install the implementation into its own virtualenv and how to
wire it into a Flask app. Everything else (routes, scenarios, timing) is common code, so
the four apps differ only in their session set-up.

This module is imported both by ``run.py`` (system Python, standard library only) and by
the apps inside each virtualenv, so the set-up functions import their packages lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from flask import Flask

#: Versions of the common stack, installed in every virtualenv (Flask is pinned to the
#: version of the development venv, see ``envs.py``).
COMMON_REQUIREMENTS = ("gunicorn==23.0.0",)
#: Idle timeout given to every server-side implementation (seconds).
TIMEOUT = 1800
#: Flask's SECRET_KEY, set in every app (a real app has one; ours then tags records).
SECRET_KEY = "bench-secret-key"


@dataclass(frozen=True)
class Impl:
    """One session implementation."""

    name: str
    label: str
    requirements: tuple[str, ...]
    cookie_name: str
    setup: Callable[[Flask, str], None]
    #: Whether the data lives on the server (False: Flask's signed cookie).
    server_side: bool = True
    #: Largest payload it can hold (the cookie session is limited to ~4 KB).
    max_payload: int = 1 << 30


def setup_ours(app: Flask, data_dir: str) -> None:
    """This package, configured like the original."""
    from flask_beaker_session.session import Session

    app.config.update(
        SESSION_TYPE="file",
        SESSION_DATA_DIR=data_dir,
        SESSION_TIMEOUT=TIMEOUT,
        SESSION_EXPIRES=True,
    )
    Session(app)


def setup_original(app: Flask, data_dir: str) -> None:
    """Beaker's file backend wired exactly as Flask-Beaker-Session 0.1.1 wires it.

    ``SessionMiddleware`` around ``app.wsgi_app`` with the original's four options,
    and a ``SessionInterface`` that hands the middleware's (lazy) session object to
    Flask and calls its ``save()`` (which only marks it dirty: the middleware
    persists it).
    """
    from beaker.middleware import SessionMiddleware
    from flask.sessions import SessionInterface

    class BeakerSessionInterface(SessionInterface):
        def open_session(self, app: Flask, request: Any) -> Any:
            return request.environ["beaker.session"]

        def save_session(self, app: Flask, session: Any, response: Any) -> None:
            session.save()

    options = {
        "session.type": "file",
        "session.cookie_expires": True,
        "session.data_dir": data_dir,
        "session.timeout": TIMEOUT,
    }
    app.wsgi_app = SessionMiddleware(app.wsgi_app, options)  # type: ignore[method-assign]
    app.session_interface = BeakerSessionInterface()


def setup_flask_session(app: Flask, data_dir: str) -> None:
    """Flask-Session 0.8, cachelib's ``FileSystemCache`` (default threshold: 500)."""
    from cachelib import FileSystemCache
    from flask_session import Session

    app.config.update(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=FileSystemCache(cache_dir=data_dir),
        SESSION_PERMANENT=False,
        PERMANENT_SESSION_LIFETIME=TIMEOUT,
    )
    Session(app)


def setup_cookie(app: Flask, data_dir: str) -> None:
    """Flask's built-in signed-cookie session: nothing to set up but SECRET_KEY."""


IMPLS: dict[str, Impl] = {
    impl.name: impl
    for impl in (
        Impl(
            name="ours",
            label="flask-beaker-session (this)",
            requirements=(),  # installed from the working tree, see envs.py
            cookie_name="beaker.session.id",
            setup=setup_ours,
        ),
        Impl(
            name="original",
            label="original (Beaker 1.14 file)",
            requirements=("beaker==1.14.1",),
            cookie_name="beaker.session.id",
            setup=setup_original,
        ),
        Impl(
            name="flask_session",
            label="Flask-Session 0.8 (cachelib)",
            requirements=("flask-session==0.8.0", "cachelib==0.13.0"),
            cookie_name="session",
            setup=setup_flask_session,
        ),
        Impl(
            name="cookie",
            label="Flask signed cookie",
            requirements=(),
            cookie_name="session",
            setup=setup_cookie,
            server_side=False,
            max_payload=2048,
        ),
    )
}
