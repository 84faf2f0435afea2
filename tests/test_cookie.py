"""The session cookie: name, value, attributes, when it is sent (SPEC §3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from flask import Flask, Response, make_response
from flask import session as flask_session
from flask.sessions import SessionInterface
from helpers import COOKIE, SID_RE, FakeClock, MakeApp, cookie_of, session_cookies

PERSISTENT_SECONDS = 400 * 24 * 3600


def the_cookie(response: Any) -> dict[str, Any]:
    """Parses our single Set-Cookie: {'value': ..., lowercased attr: value}."""
    headers = session_cookies(response)
    assert len(headers) == 1, headers
    first, *attrs = headers[0].split("; ")
    parsed: dict[str, Any] = {"value": first.split("=", 1)[1]}
    for attr in attrs:
        name, sep, value = attr.partition("=")
        parsed[name.lower()] = value if sep else True
    return parsed


def expires_epoch(cookie: dict[str, Any]) -> float:
    header = cookie["expires"]
    assert header.endswith(" GMT"), header
    return parsedate_to_datetime(header).timestamp()


@pytest.fixture
def foreign_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs the test with the process in a non-UTC local time zone (UTC-5)."""
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def add_routes(app: Flask) -> None:
    @app.route("/created")
    def created() -> str:
        flask_session["x"] = 1
        return repr(flask_session["_creation_time"])

    @app.route("/permanent")
    def permanent() -> str:
        flask_session.permanent = True
        flask_session["x"] = 1
        return "ok"

    @app.route("/pop/<key>")
    def pop(key: str) -> str:
        flask_session.pop(key, None)
        return "ok"


def test_name_and_value(app: Flask) -> None:
    """Cookie ``beaker.session.id`` with 32 lowercase hex characters."""
    client = app.test_client()
    cookie = the_cookie(client.get("/set/a/1"))
    assert SID_RE.fullmatch(cookie["value"])
    assert cookie_of(client) == cookie["value"]


def test_ids_differ_between_sessions(app: Flask) -> None:
    """Each new session gets its own id."""
    values = {the_cookie(app.test_client().get("/set/a/1"))["value"] for _ in range(20)}
    assert len(values) == 20


def test_default_attributes(app: Flask) -> None:
    """HttpOnly, Path=/, SameSite=Lax, no Secure, no Domain, no expiry by default."""
    cookie = the_cookie(app.test_client().get("/set/a/1"))
    assert cookie["httponly"] is True
    assert cookie["path"] == "/"
    assert cookie["samesite"] == "Lax"
    for absent in ("secure", "domain", "expires", "max-age", "partitioned"):
        assert absent not in cookie


def test_httponly_can_be_disabled(make_app: MakeApp) -> None:
    """SESSION_COOKIE_HTTPONLY=False removes HttpOnly."""
    cookie = the_cookie(make_app(SESSION_COOKIE_HTTPONLY=False).test_client().get("/set/a/1"))
    assert "httponly" not in cookie


def test_secure(make_app: MakeApp) -> None:
    """SESSION_COOKIE_SECURE=True adds Secure."""
    cookie = the_cookie(make_app(SESSION_COOKIE_SECURE=True).test_client().get("/set/a/1"))
    assert cookie["secure"] is True


@pytest.mark.parametrize("samesite", ["Strict", "None", "Lax"])
def test_samesite_configured(samesite: str, make_app: MakeApp) -> None:
    """SESSION_COOKIE_SAMESITE is honoured."""
    app = make_app(SESSION_COOKIE_SAMESITE=samesite, SESSION_COOKIE_SECURE=True)
    cookie = the_cookie(app.test_client().get("/set/a/1"))
    assert cookie["samesite"] == samesite


def test_path_from_session_cookie_path(make_app: MakeApp) -> None:
    """SESSION_COOKIE_PATH sets Path."""
    cookie = the_cookie(make_app(SESSION_COOKIE_PATH="/shop").test_client().get("/set/a/1"))
    assert cookie["path"] == "/shop"


def test_path_from_application_root(make_app: MakeApp) -> None:
    """Without SESSION_COOKIE_PATH, APPLICATION_ROOT sets Path."""
    cookie = the_cookie(make_app(APPLICATION_ROOT="/app").test_client().get("/set/a/1"))
    assert cookie["path"] == "/app"


def test_domain_only_when_configured(make_app: MakeApp) -> None:
    """SESSION_COOKIE_DOMAIN adds Domain."""
    app = make_app(SESSION_COOKIE_DOMAIN="example.com")
    cookie = the_cookie(app.test_client().get("/set/a/1"))
    assert cookie["domain"].lstrip(".") == "example.com"


@pytest.mark.skipif(
    not hasattr(SessionInterface, "get_cookie_partitioned"),
    reason="Flask has no SESSION_COOKIE_PARTITIONED",
)
def test_partitioned(make_app: MakeApp) -> None:
    """SESSION_COOKIE_PARTITIONED adds Partitioned (and therefore Secure)."""
    app = make_app(SESSION_COOKIE_PARTITIONED=True)
    cookie = the_cookie(app.test_client().get("/set/a/1"))
    assert cookie["partitioned"] is True
    assert cookie["secure"] is True


def test_flask_default_cookie_name_does_not_rename(make_app: MakeApp) -> None:
    """Flask's SESSION_COOKIE_NAME ('session' by default) does not rename our cookie."""
    app = make_app(SESSION_COOKIE_NAME="session")
    response = app.test_client().get("/set/a/1")
    names = [h.split("=", 1)[0] for h in response.headers.getlist("Set-Cookie")]
    assert names == [COOKIE]


def test_vary_cookie_when_used_absent_when_not(app: Flask) -> None:
    """``Vary: Cookie`` on responses that used the session, only on those."""
    client = app.test_client()
    assert "Cookie" not in client.get("/none").vary
    assert "Cookie" in client.get("/get/a").vary
    assert "Cookie" in client.get("/set/a/1").vary
    assert "Cookie" in client.get("/get/a").vary
    assert "Cookie" not in client.get("/none").vary


def test_vary_joins_the_views_own_vary_header(make_app: MakeApp) -> None:
    """A view's own Vary header keeps its values and gains ``Cookie`` once (in any case
    of the header's name or of ``cookie``); no second Vary header is added."""
    app = make_app()

    @app.get("/vary/<value>")
    def vary(value: str) -> Response:
        flask_session["a"] = "1"
        response = make_response("ok")
        if value != "none":
            response.headers["vary"] = value
        return response

    client = app.test_client()
    cases = {
        "none": "Cookie",
        "Accept-Encoding": "Accept-Encoding, Cookie",
        "cookie": "cookie",
        "Accept, COOKIE": "Accept, COOKIE",
    }
    for value, expected in cases.items():
        response = client.get(f"/vary/{value}")
        assert response.headers.getlist("Vary") == [expected], value


def test_no_set_cookie_on_later_requests(app: Flask) -> None:
    """A browser-session cookie is sent once: reads and writes later send none."""
    client = app.test_client()
    assert len(session_cookies(client.get("/set/a/1"))) == 1
    for url in ["/get/a", "/set/a/2", "/set/b/3", "/inc", "/dump", "/none"]:
        assert session_cookies(client.get(url)) == [], url
    assert client.get("/get/a").text == "2"


def test_no_set_cookie_for_reading_an_empty_session(app: Flask) -> None:
    """A view that only reads an empty session sends no cookie."""
    client = app.test_client()
    for url in ["/get/a", "/dump"]:
        assert session_cookies(client.get(url)) == [], url
    assert cookie_of(client) is None


def test_persistent_cookie_400_days_utc(make_app: MakeApp, foreign_tz: None) -> None:
    """SESSION_EXPIRES=False: Expires ~400 days ahead, in UTC (not local time)."""
    client = make_app(SESSION_EXPIRES=False).test_client()
    before = time.time()
    cookie = the_cookie(client.get("/set/a/1"))
    after = time.time()
    expires = expires_epoch(cookie)
    assert before + PERSISTENT_SECONDS - 2 <= expires <= after + PERSISTENT_SECONDS + 2


def test_persistent_cookie_refreshed_on_write_not_on_plain_read(
    make_app: MakeApp,
) -> None:
    """A persistent cookie is re-sent when the session is written, not on reads."""
    client = make_app(SESSION_EXPIRES=False, SESSION_TIMEOUT=10**6).test_client()
    first = the_cookie(client.get("/set/a/1"))
    assert session_cookies(client.get("/get/a")) == []
    again = the_cookie(client.get("/set/a/2"))
    assert again["value"] == first["value"]
    assert "expires" in again


def test_persistent_cookie_refreshed_when_touched(make_app: MakeApp, clock: FakeClock) -> None:
    """A read that refreshes the idle timeout also re-sends the persistent cookie."""
    client = clock.install(make_app(SESSION_EXPIRES=False, SESSION_TIMEOUT=100)).test_client()
    first = the_cookie(client.get("/set/a/1"))
    clock.advance(11)  # more than timeout/10: this read touches the record
    response = client.get("/get/a")
    assert response.text == "1"
    again = the_cookie(response)
    assert again["value"] == first["value"]
    assert expires_epoch(again) >= expires_epoch(first)


def test_expires_seconds_from_creation(make_app: MakeApp, foreign_tz: None) -> None:
    """SESSION_EXPIRES=N: the cookie expires N seconds after the session's creation."""
    app = make_app(SESSION_EXPIRES=3600)
    add_routes(app)
    response = app.test_client().get("/created")
    created = float(response.text)
    assert abs(expires_epoch(the_cookie(response)) - (created + 3600)) <= 1.5


def test_permanent_uses_permanent_session_lifetime(make_app: MakeApp) -> None:
    """``session.permanent = True`` gives Expires = now + PERMANENT_SESSION_LIFETIME."""
    app = make_app(PERMANENT_SESSION_LIFETIME=timedelta(days=3))
    add_routes(app)
    client = app.test_client()
    before = time.time()
    cookie = the_cookie(client.get("/permanent"))
    after = time.time()
    lifetime = 3 * 24 * 3600
    assert before + lifetime - 2 <= expires_epoch(cookie) <= after + lifetime + 2
    # The flag persists with the session.
    assert client.get("/get/_permanent").text == "True"


def _assert_deletion(cookie: dict[str, Any], **expected: Any) -> None:
    assert cookie["value"] == ""
    assert cookie.get("max-age") == "0" or expires_epoch(cookie) <= 0
    for name, value in expected.items():
        assert cookie.get(name) == value, name


def test_delete_cookie_has_same_attributes(make_app: MakeApp) -> None:
    """The deletion cookie expires at once and carries Path/Domain/Secure/SameSite."""
    app = make_app(
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    client = app.test_client()
    created = the_cookie(client.get("/set/a/1", base_url="https://www.example.com"))
    deleted = the_cookie(client.get("/delete", base_url="https://www.example.com"))
    _assert_deletion(
        deleted,
        path=created["path"],
        domain=created["domain"],
        secure=True,
        samesite="Strict",
        httponly=True,
    )
    assert cookie_of(client) is None


def test_delete_cookie_on_default_attributes(app: Flask) -> None:
    """Deleting on a default app: Max-Age=0, Path=/, SameSite=Lax, HttpOnly."""
    client = app.test_client()
    client.get("/set/a/1")
    deleted = the_cookie(client.get("/delete"))
    _assert_deletion(deleted, path="/", samesite="Lax", httponly=True)
    assert "domain" not in deleted


def test_delete_without_client_cookie_sends_nothing(app: Flask) -> None:
    """``delete()`` on a session the client never had sends no deletion cookie."""
    client = app.test_client()
    assert session_cookies(client.get("/delete")) == []


def test_emptied_session_deletes_cookie(make_app: MakeApp) -> None:
    """Popping the last user key deletes the cookie."""
    app = make_app()
    add_routes(app)
    client = app.test_client()
    client.get("/set/a/1")
    _assert_deletion(the_cookie(client.get("/pop/a")), path="/")
    assert cookie_of(client) is None
