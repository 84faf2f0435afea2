"""The implementations under test: one table, shared by the runner and the apps.

Each entry says how to install the implementation into its own virtualenv and how to
wire it into a Flask app. Everything else (routes, scenarios, timing) is common code, so
the apps differ only in their session set-up.

Groups: ``file`` (the main comparison: this package's file store, the original,
Flask-Session's cachelib store, Flask's cookie), ``redis`` (this package's Redis
store against Flask-Session's Redis backend, on one ``redis-server`` that the runner
starts and names in the environment variable ``BENCH_REDIS_URL``), ``postgres`` and
``variants`` (this package's file store with one setting changed, in ``ours``' venv:
``run.py --variants`` measures what encryption, the per-user index and metrics cost,
as ratios to ``ours`` in the same run).

This module is imported both by ``run.py`` (system Python, standard library only) and by
the apps inside each virtualenv, so the set-up functions import their packages lazily.
"""

from __future__ import annotations

import hashlib
import os
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
#: Environment variable through which the runner hands its Redis server to the apps
#: (test-client workers and gunicorn alike): ``redis://127.0.0.1:PORT/0``.
REDIS_URL_ENV = "BENCH_REDIS_URL"
#: The Redis client of Flask-Session's venv (ours talks to Redis from Rust).
REDIS_CLIENT = "redis==8.1.0"
#: The session key holding the user's id in the login scenarios (Flask-Login's), and
#: ``ours_index``'s ``SESSION_USER_KEY``.
USER_KEY = "_user_id"
#: Environment variable through which the runner hands its PostgreSQL cluster to the
#: apps (``postgresql://postgres@127.0.0.1:PORT/postgres?sslmode=disable``).
POSTGRES_URL_ENV = "BENCH_POSTGRES_URL"
#: Environment variable through which ``ha_bench.py`` asks ``ours_redis`` under gunicorn
#: for ``SESSION_REDIS_WAIT_REPLICAS`` (unset: the key is not set at all, so a baseline
#: commit that predates it still starts).
REDIS_WAIT_ENV = "BENCH_REDIS_WAIT_REPLICAS"


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
    #: ``file`` (main comparison), ``redis`` (the Redis comparison), ``postgres`` (the
    #: PostgreSQL comparison, which also runs ``ours_redis``), ``variants`` (``ours``
    #: with one setting changed, only with ``run.py --variants``) or ``baseline`` (this
    #: package at an earlier commit, only with ``run.py --baseline REF``: ``baseline``
    #: next to ``ours`` or a variant, ``baseline_postgres`` next to ``ours_postgres``),
    #: or ``ceiling`` (``null``, the ideal store, served by the ceiling phase only).
    group: str = "file"
    #: The virtualenv it runs in (another implementation's name; default: its own).
    venv: str = ""

    @property
    def venv_name(self) -> str:
        return self.venv or self.name


def setup_ours(app: Flask, data_dir: str, **settings: Any) -> None:
    """This package, configured like the original (``settings``: the variants' one
    changed setting on top)."""
    from flask_beaker_session.session import Session

    app.config.update(
        SESSION_TYPE="file",
        SESSION_DATA_DIR=data_dir,
        SESSION_TIMEOUT=TIMEOUT,
        SESSION_EXPIRES=True,
        **settings,
    )
    Session(app)


def setup_ours_plain(app: Flask, data_dir: str) -> None:
    """``ours`` with records authenticated but not encrypted (issue 17's reference)."""
    setup_ours(app, data_dir, SESSION_ENCRYPT=False)


def setup_ours_index(app: Flask, data_dir: str) -> None:
    """``ours`` with the per-user index on Flask-Login's key (issue 20)."""
    setup_ours(app, data_dir, SESSION_USER_KEY=USER_KEY)


def setup_ours_metrics(app: Flask, data_dir: str) -> None:
    """``ours`` with metrics on (issue 20; no ``prometheus_client`` in the venv, so
    only the in-process counters)."""
    setup_ours(app, data_dir, SESSION_METRICS=True)


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


def setup_null(app: Flask, data_dir: str) -> None:
    """The least a server-side session can cost in Flask: a process-local dict of
    dicts behind Flask's ``SessionInterface`` (no store, no lock, no pickle, no I/O).

    Its ``/rw ÷ /free`` is the ceiling ratio of an ideal store: what Flask's session
    proxy, the view's own work and the ``Vary: Cookie`` header cost, with nothing
    stored. An unknown cookie value starts an empty session under that value, so the
    ids the ceiling run sends exist in every worker after its first request.
    """
    import secrets

    from flask.sessions import SecureCookieSession, SessionInterface

    sessions: dict[str, dict[str, Any]] = {}

    class NullInterface(SessionInterface):
        def open_session(self, app: Flask, request: Any) -> SecureCookieSession:
            sid = request.cookies.get("null.session.id")
            new = sid is None
            if sid is None:
                sid = secrets.token_hex(16)
            session = SecureCookieSession(sessions.setdefault(sid, {}))
            session.sid, session.new = sid, new  # type: ignore[attr-defined]
            return session

        def save_session(self, app: Flask, session: Any, response: Any) -> None:
            if session.accessed:
                response.vary.add("Cookie")
            if session.modified:
                sessions[session.sid] = dict(session)
            if session.new:
                response.set_cookie("null.session.id", session.sid, httponly=True)

    app.session_interface = NullInterface()


def redis_url() -> str:
    """The runner's Redis server (``BENCH_REDIS_URL``)."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        raise RuntimeError(f"{REDIS_URL_ENV} is not set (the runner starts Redis)")
    return url


def redis_prefix(name: str, data_dir: str) -> str:
    """A key prefix per implementation and per run (the data dir is fresh per run).

    Each phase thus starts from an empty key space, as the file stores start from an
    empty data dir; the gunicorn workers of one server share it.
    """
    run = hashlib.sha256(data_dir.encode()).hexdigest()[:8]
    return f"bench:{name}:{run}:"


def setup_ours_redis(app: Flask, data_dir: str) -> None:
    """This package's Redis store, otherwise configured like ``ours``.

    ``BENCH_REDIS_URL`` may also be a ``redis+cluster://`` or ``redis+sentinel://`` URL
    (``ha_bench.py``).
    """
    from flask_beaker_session.session import Session

    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=redis_url(),
        SESSION_REDIS_PREFIX=redis_prefix("ours", data_dir),
        SESSION_TIMEOUT=TIMEOUT,
        SESSION_EXPIRES=True,
    )
    if os.environ.get(REDIS_WAIT_ENV):
        app.config["SESSION_REDIS_WAIT_REPLICAS"] = int(os.environ[REDIS_WAIT_ENV])
    Session(app)


def setup_flask_session_redis(app: Flask, data_dir: str) -> None:
    """Flask-Session 0.8's Redis backend with a ``redis.Redis`` client."""
    from urllib.parse import urlsplit

    import redis
    from flask_session import Session

    url = urlsplit(redis_url())
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis(host=url.hostname, port=url.port),
        SESSION_KEY_PREFIX=redis_prefix("flask_session", data_dir),
        SESSION_PERMANENT=False,
        PERMANENT_SESSION_LIFETIME=TIMEOUT,
    )
    Session(app)


def postgres_url() -> str:
    """The runner's PostgreSQL cluster (``BENCH_POSTGRES_URL``)."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        raise RuntimeError(
            f"{POSTGRES_URL_ENV} is not set (the runner starts PostgreSQL)"
        )
    return url


def postgres_table(name: str, data_dir: str) -> str:
    """A table per implementation and per run (as ``redis_prefix``)."""
    run = hashlib.sha256(data_dir.encode()).hexdigest()[:8]
    return f"bench_{name}_{run}"


def _setup_postgres(app: Flask, data_dir: str, table: str, **settings: Any) -> None:
    """This package's PostgreSQL store on its own table, otherwise configured like
    ``ours``."""
    from flask_beaker_session.session import Session

    app.config.update(
        SESSION_TYPE="postgresql",
        SESSION_DATABASE_URL=postgres_url(),
        SESSION_DATABASE_TABLE=postgres_table(table, data_dir),
        SESSION_TIMEOUT=TIMEOUT,
        SESSION_EXPIRES=True,
        **settings,
    )
    Session(app)


def setup_ours_postgres(app: Flask, data_dir: str) -> None:
    """This package's PostgreSQL store, otherwise configured like ``ours``."""
    _setup_postgres(app, data_dir, "ours")


def setup_ours_postgres_advisory(app: Flask, data_dir: str) -> None:
    """``ours_postgres`` with the opt-in advisory session lock (its own table)."""
    _setup_postgres(app, data_dir, "ours_adv", SESSION_DATABASE_LOCK="advisory")


def setup_baseline_postgres(app: Flask, data_dir: str) -> None:
    """``ours_postgres`` at the ``--baseline`` commit (its own table)."""
    _setup_postgres(app, data_dir, "baseline")


def setup_flask_session_sqlalchemy(app: Flask, data_dir: str) -> None:
    """Flask-Session 0.8's SQLAlchemy backend (Flask-SQLAlchemy, psycopg2) on the same
    PostgreSQL. It creates its table at ``Session(app)``: workers starting together take
    an advisory lock around it, so they do not race on the catalog."""
    import psycopg2
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    url = postgres_url()
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url.replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=postgres_table("flask_session", data_dir),
        SESSION_PERMANENT=False,
        PERMANENT_SESSION_LIFETIME=TIMEOUT,
    )
    app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    guard = psycopg2.connect(url)
    try:
        with guard.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(4242)")
        Session(app)
    finally:
        guard.close()


def _variant(name: str, label: str, setup: Callable[[Flask, str], None]) -> Impl:
    """``ours`` with other settings (``run.py --variants`` only), in ``ours``' venv."""
    return Impl(
        name=name,
        label=label,
        requirements=(),
        cookie_name="beaker.session.id",
        setup=setup,
        group="variants",
        venv="ours",
    )


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
        _variant("ours_plain", "ours, SESSION_ENCRYPT=False", setup_ours_plain),
        _variant("ours_index", "ours, SESSION_USER_KEY='_user_id'", setup_ours_index),
        _variant("ours_metrics", "ours, SESSION_METRICS=True", setup_ours_metrics),
        _variant(
            "ours_aa",
            "ours again: same settings, a second worker (the A/A spread)",
            setup_ours,
        ),
        Impl(
            name="baseline",
            label="flask-beaker-session at the --baseline commit",
            requirements=(),  # installed from `git archive <ref>`, see envs.py
            cookie_name="beaker.session.id",
            setup=setup_ours,
            group="baseline",
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
            requirements=("flask-session==0.8.0", "cachelib==0.13.0", REDIS_CLIENT),
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
        Impl(
            name="null",
            label="ideal store: a process-local dict, nothing stored",
            requirements=(),
            cookie_name="null.session.id",
            setup=setup_null,
            group="ceiling",
            venv="ours",
        ),
        Impl(
            name="ours_redis",
            label="flask-beaker-session (this), Redis",
            requirements=(),
            cookie_name="beaker.session.id",
            setup=setup_ours_redis,
            group="redis",
            venv="ours",
        ),
        Impl(
            name="flask_session_redis",
            label="Flask-Session 0.8 (Redis)",
            requirements=(),
            cookie_name="session",
            setup=setup_flask_session_redis,
            group="redis",
            venv="flask_session",
        ),
        Impl(
            name="ours_postgres",
            label="flask-beaker-session (this), PostgreSQL",
            requirements=(),
            cookie_name="beaker.session.id",
            setup=setup_ours_postgres,
            group="postgres",
            venv="ours",
        ),
        Impl(
            name="ours_postgres_advisory",
            label="flask-beaker-session (this), PostgreSQL, advisory lock",
            requirements=(),
            cookie_name="beaker.session.id",
            setup=setup_ours_postgres_advisory,
            group="postgres",
            venv="ours",
        ),
        Impl(
            name="flask_session_sqlalchemy",
            label="Flask-Session 0.8 (SQLAlchemy, PostgreSQL)",
            requirements=(
                "flask-session==0.8.0",
                "cachelib==0.13.0",
                "flask-sqlalchemy==3.1.1",
                "psycopg2-binary==2.9.10",
            ),
            cookie_name="session",
            setup=setup_flask_session_sqlalchemy,
            group="postgres",
        ),
        Impl(
            name="baseline_postgres",
            label="flask-beaker-session at the --baseline commit, PostgreSQL",
            requirements=(),
            cookie_name="beaker.session.id",
            setup=setup_baseline_postgres,
            group="baseline",
            venv="baseline",
        ),
    )
}


def impl_names(group: str) -> list[str]:
    """The implementations of one group, in table order (ours first)."""
    return [n for n, impl in IMPLS.items() if impl.group == group]
