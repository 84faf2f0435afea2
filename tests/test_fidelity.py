"""Behaving as Flask, the original package and Flask-Login expect (issue 15, items 1, 4, 5
and 10): an id a view has seen survives; an empty session is empty (``SESSION_TIME_KEYS``);
permanent sessions slide; the ``session`` name clash gets a helpful error.

Real Flask apps through the test client, on the file, Redis and memory backends and in both
``SESSION_LOCKING`` modes where the backend or the mode changes the code path."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from collections.abc import Callable
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import flask
import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError
from helpers import (
    COOKIE,
    SID_RE,
    FakeClock,
    build_app,
    client_with,
    cookie_of,
    interface_of,
    is_stored,
    record_files,
    record_path,
    session_cookies,
    store_of,
)

TIME_KEYS = ("_creation_time", "_accessed_time")
BACKENDS = ["file", "redis", "memory"]
LOCKING = [pytest.param(True, id="locking"), pytest.param(False, id="non-locking")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``SESSION_*`` settings of one backend, isolated for this test."""
    config: dict[str, Any] = {"SESSION_TYPE": request.param}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        config.update(SESSION_REDIS_URL=server.url, SESSION_REDIS_PREFIX=f"t:{tmp_path.name}:")
    return config


def fidelity_app(data_dir: Path, **config: Any) -> Flask:
    """``build_app`` plus routes reading a new session's identity in various ways."""
    app = build_app(data_dir, **config)
    app.testing = True

    @app.route("/created")
    def created() -> str:
        return repr(flask_session.created)

    @app.route("/ctime")
    def ctime() -> str:
        return repr(flask_session["_creation_time"])

    @app.route("/ctime-get")
    def ctime_get() -> str:
        return repr(flask_session.get("_creation_time"))

    @app.route("/not-identity")
    def not_identity() -> str:
        # None of these is the session's identity.
        seen = [
            flask_session.is_new,
            flask_session.get("a"),
            len(flask_session),
            "_creation_time" in flask_session,
            flask_session["_accessed_time"],
            flask_session.last_accessed,
            flask_session.permanent,
        ]
        return repr(seen)

    @app.route("/id-then-pop/<key>")
    def id_then_pop(key: str) -> str:
        sid = flask_session.id
        flask_session.pop(key, None)
        return sid

    @app.route("/pop/<key>")
    def pop(key: str) -> str:
        flask_session.pop(key, None)
        return "ok"

    @app.route("/clear")
    def clear() -> str:
        flask_session.clear()
        return "cleared"

    @app.route("/id-then-delete")
    def id_then_delete() -> str:
        sid = flask_session.id
        flask_session.delete()
        return sid

    @app.route("/id-then-clear")
    def id_then_clear() -> str:
        sid = flask_session.id
        flask_session.clear()
        return sid

    @app.route("/regenerate-quietly")
    def regenerate_quietly() -> str:
        flask_session.regenerate_id()
        return "ok"

    @app.route("/mapping")
    def mapping() -> Any:
        return jsonify(
            len=len(flask_session),
            bool=bool(flask_session),
            keys=list(flask_session),
            items=[list(kv) for kv in flask_session.items()],
        )

    return app


# == item 1: an id a view has seen must survive ========================================


@pytest.mark.parametrize("locking", LOCKING)
def test_id_read_by_a_view_survives(backend: dict[str, Any], locking: bool, data_dir: Path) -> None:
    """A view that reads ``session.id`` of a new session and stores nothing: the session
    is stored and the cookie sent, so the next request has the same id."""
    app = fidelity_app(data_dir, SESSION_LOCKING=locking, **backend)
    client = app.test_client()
    response = client.get("/id")
    sid = response.text
    assert SID_RE.fullmatch(sid)
    assert len(session_cookies(response)) == 1
    assert cookie_of(client) == sid
    assert is_stored(app, sid)
    # Later requests keep it, whether they read it, only use the session, or write.
    again = client.get("/id")
    assert again.text == sid and session_cookies(again) == []
    assert client.get("/get/a").text == "None"
    assert is_stored(app, sid) and cookie_of(client) == sid
    client.get("/set/a/1")
    assert client.get("/id").text == sid and client.get("/get/a").text == "1"


@pytest.mark.parametrize("route", ["/created", "/ctime", "/ctime-get"])
def test_creation_time_read_by_a_view_survives(route: str, data_dir: Path) -> None:
    """``session.created``, ``session['_creation_time']`` and ``.get('_creation_time')``
    are the identity too: the session is stored, and keeps that creation time."""
    app = fidelity_app(data_dir)
    client = app.test_client()
    response = client.get(route)
    created = float(response.text)
    sid = cookie_of(client)
    assert sid is not None and is_stored(app, sid)
    assert [record_path(data_dir, sid)] == record_files(data_dir)
    assert float(client.get(route).text) == created


def test_request_that_never_reads_the_identity_stores_nothing(data_dir: Path) -> None:
    """Reading keys, flags, the access time or ``len`` is not reading the identity."""
    app = fidelity_app(data_dir)
    client = app.test_client()
    for route in ["/not-identity", "/get/a", "/dump", "/mapping", "/none"]:
        response = client.get(route)
        assert response.status_code == 200, route
        assert session_cookies(response) == [], route
    assert cookie_of(client) is None
    assert record_files(data_dir) == []


@pytest.mark.parametrize("locking", LOCKING)
def test_kept_empty_session_until_cleared(locking: bool, data_dir: Path) -> None:
    """A stored empty session (its id was read) is not deleted by later requests that
    neither read its id nor give it data; ``clear()`` ends it like any session."""
    app = fidelity_app(data_dir, SESSION_LOCKING=locking)
    client = app.test_client()
    sid = client.get("/id").text
    for route in ["/get/a", "/not-identity", "/set/a/1", "/id-then-pop/a"]:
        response = client.get(route)
        assert response.status_code == 200
        assert all("Max-Age=0" not in h for h in session_cookies(response)), route
        assert cookie_of(client) == sid, route
    assert record_files(data_dir) == [record_path(data_dir, sid)]
    response = client.get("/clear")
    assert ["Max-Age=0" in h for h in session_cookies(response)] == [True]
    assert cookie_of(client) is None
    assert record_files(data_dir) == []


@pytest.mark.parametrize("locking", LOCKING)
def test_emptied_session_deleted_unless_its_id_was_read(locking: bool, data_dir: Path) -> None:
    """Removing the last key deletes a session (and its cookie), except in a request that
    read its id: that id survives, empty."""
    app = fidelity_app(data_dir, SESSION_LOCKING=locking)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert client.get("/id-then-pop/a").text == sid
    assert cookie_of(client) == sid
    assert record_files(data_dir) == [record_path(data_dir, sid)]
    assert client.get("/dump").get_json() == {}

    other = app.test_client()
    other.get("/set/a/1")
    other.get("/pop/a")
    assert cookie_of(other) is None
    assert record_files(data_dir) == [record_path(data_dir, sid)]


def test_id_read_then_clear_or_delete_stores_nothing(data_dir: Path) -> None:
    """``clear()`` and ``delete()`` after reading the id: nothing is kept (a logout view
    that logs the id before ending the session does not leave an empty session)."""
    app = fidelity_app(data_dir)
    for route in ["/id-then-clear", "/id-then-delete"]:
        client = app.test_client()
        response = client.get(route)
        assert SID_RE.fullmatch(response.text)
        assert all("Max-Age=0" in h for h in session_cookies(response)), route
        assert cookie_of(client) is None
    assert record_files(data_dir) == []
    # The same on a stored session.
    client = app.test_client()
    sid = client.get("/id").text
    response = client.get("/id-then-delete")
    assert response.text == sid and cookie_of(client) is None
    assert record_files(data_dir) == []


def test_regenerate_moves_a_kept_empty_session(data_dir: Path) -> None:
    """``regenerate_id()`` on a kept empty session moves it to a new id (old one gone)."""
    app = fidelity_app(data_dir)
    client = app.test_client()
    old = client.get("/id").text
    client.get("/regenerate-quietly")
    new = cookie_of(client)
    assert new is not None and new != old
    assert record_files(data_dir) == [record_path(data_dir, new)]
    assert client.get("/id").text == new
    assert client_with(app, old).get("/get/a").text == "None"


def test_session_transaction_reading_the_id(data_dir: Path) -> None:
    """``session_transaction()`` on a fresh client that reads the id: that id is the
    cookie and the session the next request sees."""
    app = fidelity_app(data_dir)
    client = app.test_client()
    with client.session_transaction() as sess:
        sid = sess.id
    assert cookie_of(client) == sid
    assert client.get("/id").text == sid


# == item 4: an empty session is empty =================================================


def test_untouched_session_is_empty(data_dir: Path) -> None:
    """Default (``SESSION_TIME_KEYS = False``): the mapping holds only the user's data,
    while ``[]``, ``get`` and ``in`` still answer for the time keys."""
    app = fidelity_app(data_dir)
    seen: dict[str, Any] = {}

    @app.route("/probe")
    def probe() -> Any:
        s = flask_session
        seen.update(
            len=len(s),
            bool=bool(s),
            list=list(s),
            keys=list(s.keys()),
            items=list(s.items()),
            values=list(s.values()),
            eq=s == {},
            ne=s != {},
            dict=dict(s),
            unpack={**s},
            copy=s.copy(),
            repr=repr(s),
            reversed=list(reversed(s)),
            in_created="_creation_time" in s,
            in_accessed="_accessed_time" in s,
            get_accessed=s.get("_accessed_time"),
            item_accessed=s["_accessed_time"],
            last=s.last_accessed,
        )
        return jsonify(s._get_current_object())  # (jsonify cannot take the proxy)

    client = app.test_client()
    response = client.get("/probe")
    assert response.get_json() == {}
    assert seen["len"] == 0 and seen["bool"] is False
    assert seen["list"] == seen["keys"] == seen["items"] == seen["values"] == []
    assert seen["reversed"] == []
    assert seen["eq"] is True and seen["ne"] is False
    assert seen["dict"] == seen["unpack"] == seen["copy"] == {}
    assert type(seen["copy"]) is dict
    assert seen["repr"] == "<BeakerSession {}>"
    assert seen["in_created"] is True and seen["in_accessed"] is True
    assert isinstance(seen["get_accessed"], float)
    assert seen["item_accessed"] == seen["get_accessed"]
    assert seen["last"] is None
    # Nothing was stored: the identity was not read.
    assert session_cookies(response) == [] and record_files(data_dir) == []


def test_time_keys_answer_but_are_not_keys(data_dir: Path, clock: FakeClock) -> None:
    """With data: only the user's keys are listed, counted, compared and serialised; the
    creation time survives across requests (``created``, ``['_creation_time']``)."""
    app = clock.install(fidelity_app(data_dir))
    seen: list[dict[str, Any]] = []

    @app.route("/probe")
    def probe() -> Any:
        s = flask_session
        s.setdefault("n", 0)
        s["n"] += 1
        seen.append(
            {
                "len": len(s),
                "keys": list(s),
                "items": dict(s.items()),
                "eq": s == {"n": s["n"]},
                "created": s.created,
                "ctime": s["_creation_time"],
                "get_ctime": s.get("_creation_time"),
                "get_missing": s.get("missing", 7),
                "accessed": s["_accessed_time"],
                "last": s.last_accessed,
            }
        )
        return jsonify(s._get_current_object())

    client = app.test_client()
    start = clock()
    assert client.get("/probe").get_json() == {"n": 1}
    clock.advance(5)
    assert client.get("/probe").get_json() == {"n": 2}
    first, second = seen
    for s in seen:
        assert s["len"] == 1 and s["keys"] == ["n"] and s["eq"] is True
        assert s["items"] == {"n": s["items"]["n"]}
        assert s["created"] == s["ctime"] == s["get_ctime"] == start
        assert s["get_missing"] == 7
    assert first["accessed"] == start and first["last"] is None
    assert second["accessed"] == start + 5 and start <= second["last"] < start + 5


def test_time_keys_cannot_be_removed_but_creation_time_can_be_set(data_dir: Path) -> None:
    """``del``/``pop`` of a time key is a missing key (it is not in the mapping); setting
    ``_creation_time`` changes the session's creation time, as in the original."""
    app = fidelity_app(data_dir)

    @app.route("/edit")
    def edit() -> Any:
        s = flask_session
        with pytest.raises(KeyError):
            del s["_accessed_time"]
        assert s.pop("_creation_time", "absent") == "absent"
        s["_creation_time"] = 1000.0
        s["a"] = 1
        return jsonify(keys=list(s), created=s.created)

    client = app.test_client()
    assert client.get("/edit").get_json() == {"keys": ["a"], "created": 1000.0}
    assert client.get("/created").text == "1000.0"


def test_time_keys_true_gives_the_original_mapping(data_dir: Path) -> None:
    """``SESSION_TIME_KEYS = True``: both time keys listed first and counted, in
    ``jsonify(session)`` too; a read that returns the creation time stores the session."""
    app = fidelity_app(data_dir, SESSION_TIME_KEYS=True)

    @app.route("/quiet")
    def quiet() -> str:
        return repr((len(flask_session), bool(flask_session), list(flask_session)))

    client = app.test_client()
    mapping = client.get("/mapping").get_json()
    assert mapping["len"] == 2 and mapping["bool"] is True
    assert mapping["keys"] == list(TIME_KEYS)
    assert [k for k, _ in mapping["items"]] == list(TIME_KEYS)
    # items() returned the creation time: that session was kept.
    assert cookie_of(client) is not None
    client.get("/set/a/1")
    mapping = client.get("/mapping").get_json()
    assert mapping["len"] == 3 and mapping["keys"] == [*TIME_KEYS, "a"]

    # Only keys, length or truth read: nothing stored.
    other = app.test_client()
    assert other.get("/quiet").text == f"(2, True, {list(TIME_KEYS)!r})"
    assert cookie_of(other) is None


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("yes", True), ("off", False)]
)
def test_time_keys_setting_accepted(value: Any, expected: bool, data_dir: Path) -> None:
    app = fidelity_app(data_dir, SESSION_TIME_KEYS=value)
    assert app.test_client().get("/mapping").get_json()["len"] == (2 if expected else 0)


@pytest.mark.parametrize("value", ["bogus", 2, None])
def test_time_keys_setting_rejected(value: Any, data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_TIME_KEYS"):
        fidelity_app(data_dir, SESSION_TIME_KEYS=value)


def test_time_keys_default_is_false() -> None:
    from flask_beaker_session import config

    assert config.SESSION_TIME_KEYS is False


def test_stored_payload_holds_only_user_data(data_dir: Path) -> None:
    """Both settings store the same thing: the user's keys (times in the header)."""
    for time_keys in (False, True):
        app = fidelity_app(data_dir / str(time_keys), SESSION_TIME_KEYS=time_keys)
        client = app.test_client()
        client.get("/set/a/1")
        sid = str(cookie_of(client))
        other = fidelity_app(data_dir / str(time_keys), SESSION_TIME_KEYS=not time_keys)
        assert client_with(other, sid).get("/dump").get_json() == {"a": "1"}


# -- Flask-Login ------------------------------------------------------------------------

flask_login = pytest.importorskip("flask_login")


def login_app(data_dir: Path, protection: str, **config: Any) -> Flask:
    app = fidelity_app(data_dir, **config)
    manager = flask_login.LoginManager(app)
    manager.session_protection = protection

    class User(flask_login.UserMixin):  # type: ignore[misc]
        def __init__(self, uid: str) -> None:
            self.id = uid

    @manager.user_loader
    def load(uid: str) -> Any:
        return User(uid) if uid == "ann" else None

    @app.route("/login")
    def login() -> str:
        flask_login.login_user(User("ann"), remember=True)
        return "in"

    @app.route("/whoami")
    def whoami() -> str:
        user = flask_login.current_user
        return str(user.id) if user.is_authenticated else "anonymous"

    return app


@pytest.mark.parametrize("protection", ["basic", "strong"])
def test_flask_login_anonymous_requests_store_nothing(protection: str, data_dir: Path) -> None:
    """Anonymous requests that read ``current_user`` create no session and no cookie."""
    app = login_app(data_dir, protection)
    client = app.test_client()
    for _ in range(3):
        response = client.get("/whoami")
        assert response.text == "anonymous"
        assert response.headers.getlist("Set-Cookie") == []
    assert record_files(data_dir) == []


def test_flask_login_strong_remember_me_after_session_expired(
    data_dir: Path, clock: FakeClock
) -> None:
    """``session_protection = 'strong'``: a user back with only a valid remember-me
    cookie (the session expired) is logged in again, not logged out."""
    app = clock.install(login_app(data_dir, "strong", SESSION_TIMEOUT=60))
    client = app.test_client()
    assert client.get("/login").text == "in"
    assert client.get_cookie("remember_token") is not None
    clock.advance(120)  # the server-side session is gone
    response = client.get("/whoami")
    assert response.text == "ann"
    assert client.get_cookie("remember_token") is not None
    # (The request after that logs the user out, as with Flask's own cookie session:
    # Flask-Login's remember-me login does not set the session's '_id'.)


# == item 5: permanent sessions slide ==================================================


def clock_of(app: Flask) -> Callable[[], float]:
    return interface_of(app).clock


def _expires(response: Any) -> float:
    [header] = session_cookies(response)
    attrs = dict(
        part.split("=", 1) if "=" in part else (part, "") for part in header.split("; ")[1:]
    )
    return parsedate_to_datetime(attrs["Expires"]).timestamp()


def permanent_app(data_dir: Path, clock: FakeClock, **config: Any) -> Flask:
    config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(minutes=30))
    config.setdefault("SESSION_TIMEOUT", 10**6)
    app = clock.install(fidelity_app(data_dir, **config))

    @app.route("/make-permanent")
    def make_permanent() -> str:
        flask_session.permanent = True
        flask_session["user"] = "ann"
        return "ok"

    return app


def _snapshot(app: Flask, data_dir: Path, sid: str, backend: dict[str, Any]) -> Any:
    """What the store holds for ``sid``: payload and last access (and the file's bytes
    and mtime)."""
    _, handle = store_of(app).open(sid, clock_of(app)())
    assert handle is not None
    try:
        seen: tuple[Any, ...] = (bytes(handle.payload), handle.last_access)
    finally:
        handle.release()
    if backend["SESSION_TYPE"] == "file":
        path = record_path(data_dir, sid)
        seen += (path.read_bytes(), path.stat().st_mtime_ns)
    return seen


@pytest.mark.parametrize("locking", LOCKING)
def test_permanent_session_cookie_slides_on_reads(
    backend: dict[str, Any], locking: bool, data_dir: Path, clock: FakeClock
) -> None:
    """Every response of a request that used a permanent session re-sends the cookie with
    a fresh expiry; read-only requests write nothing to the store for it."""
    app = permanent_app(data_dir, clock, SESSION_LOCKING=locking, **backend)
    client = app.test_client()
    first = client.get("/make-permanent")
    sid = cookie_of(client)
    assert sid is not None
    assert _expires(first) == pytest.approx(clock() + 1800, abs=1)
    before = _snapshot(app, data_dir, sid, backend)
    for _ in range(3):
        clock.advance(5)  # (less than the touch interval: no touch is due)
        response = client.get("/get/user")
        assert response.text == "ann"
        assert _expires(response) == pytest.approx(clock() + 1800, abs=1)
        assert cookie_of(client) == sid
    assert _snapshot(app, data_dir, sid, backend) == before
    # A view that does not use the session sends nothing.
    assert session_cookies(client.get("/none")) == []


def test_permanent_session_no_refresh_when_disabled(data_dir: Path, clock: FakeClock) -> None:
    """``SESSION_REFRESH_EACH_REQUEST = False``: read-only requests send no cookie."""
    app = permanent_app(data_dir, clock, SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    client.get("/make-permanent")
    clock.advance(60)
    assert session_cookies(client.get("/get/user")) == []
    assert session_cookies(client.get("/set/user/bob")) == []


def test_non_permanent_session_not_refreshed_on_reads(data_dir: Path, clock: FakeClock) -> None:
    """A browser-session cookie is not re-sent by reads (nothing to slide)."""
    app = permanent_app(data_dir, clock)
    client = app.test_client()
    client.get("/set/user/ann")
    clock.advance(60)
    assert session_cookies(client.get("/get/user")) == []


def test_permanent_empty_new_session_sends_no_cookie(data_dir: Path, clock: FakeClock) -> None:
    """``permanent = True`` alone does not store a session (as with Flask's cookie session,
    an empty session sends no cookie)."""
    app = permanent_app(data_dir, clock)

    @app.route("/only-permanent")
    def only_permanent() -> str:
        flask_session.permanent = True
        flask_session.pop("_permanent")
        return "ok"

    client = app.test_client()
    assert session_cookies(client.get("/only-permanent")) == []
    assert record_files(data_dir) == []


# == item 10: the name clash ===========================================================


def test_extension_module_used_as_a_session_says_why() -> None:
    """Item access, assignment, ``get``, ``in``… on the extension module raise a
    ``TypeError`` naming both ``session``s."""
    attempts: list[Callable[[], Any]] = [
        lambda: fbs["user"],
        lambda: fbs.__setitem__("user", "ann"),
        lambda: fbs.__delitem__("user"),
        lambda: "user" in fbs,
        lambda: fbs.get("user"),
        lambda: fbs.pop("user", None),
        lambda: fbs.setdefault("user", 1),
        lambda: fbs.keys(),
        lambda: fbs.items(),
        lambda: fbs.values(),
        lambda: fbs.update(user=1),
        lambda: fbs.clear(),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match=r"flask_beaker_session\.session module") as info:
            attempt()
        assert "from flask import session" in str(info.value)
    # Still a module, with its API.
    assert isinstance(fbs, types.ModuleType)
    assert fbs.Session is not None and callable(fbs.init_app)
    assert bool(fbs) is True


def test_name_clash_in_an_app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original README's imports in one module: the view's ``session['user'] = …``
    raises the helpful ``TypeError``; ``session.init_app(app)`` still works."""
    module = tmp_path / "clash_app.py"
    module.write_text(
        textwrap.dedent(
            f"""
            from flask import Flask
            from flask import session
            from flask_beaker_session import session

            app = Flask(__name__)
            app.config.update(SECRET_KEY="x", SESSION_DATA_DIR={str(tmp_path / "s")!r})
            session.init_app(app)

            @app.route("/")
            def index():
                session["user"] = "ann"
                return "ok"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "clash_app", raising=False)
    import clash_app  # type: ignore[import-not-found]

    app = clash_app.app
    app.testing = True
    with pytest.raises(TypeError, match="not Flask's request session"):
        app.test_client().get("/")


def test_session_module_still_imports_its_names() -> None:
    from flask_beaker_session.session import Session, init_app

    app = Flask(__name__)
    app.config["SESSION_TYPE"] = "memory"
    init_app(app)
    Session(Flask(__name__))
    assert json.loads(json.dumps({"ok": True})) == {"ok": True}
    assert flask.Flask is Flask


def test_leaving_permanent_re_sends_a_browser_session_cookie(data_dir: Path) -> None:
    """A save that makes a permanent session non-permanent (or the reverse) re-sends the
    cookie with the other kind of expiry, as Flask does for a modified session."""
    app = build_app(data_dir)

    @app.route("/permanent/<int:on>")
    def permanent(on: int) -> str:
        flask_session["x"] = on
        flask_session.permanent = bool(on)
        return "ok"

    client = app.test_client()
    assert "Expires=" in client.get("/permanent/1").headers["Set-Cookie"]
    cookie = client.get("/permanent/0").headers.get("Set-Cookie")
    assert cookie is not None and "Expires=" not in cookie
    assert "Expires=" in client.get("/permanent/1").headers["Set-Cookie"]


def test_subclass_should_set_cookie_is_asked_for_unchanged_sessions(data_dir: Path) -> None:
    """A subclass's ``should_set_cookie`` decides even for an unchanged, non-permanent
    session (which the package's own hook answers without a call)."""
    from flask_beaker_session.session_interface import BeakerSessionInterface

    asked: list[bool] = []

    class Always(BeakerSessionInterface):
        def should_set_cookie(self, app: Flask, session: Any) -> bool:
            asked.append(True)
            return True

    app = build_app(data_dir)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert client.get("/get/a").headers.getlist("Set-Cookie") == []  # the package's rule
    app.session_interface = Always(app.session_interface.config)  # type: ignore[attr-defined]
    reply = client_with(app, sid).get("/get/a")
    assert reply.text == "1" and asked
    assert any(h.startswith(f"{COOKIE}={sid}") for h in reply.headers.getlist("Set-Cookie"))
