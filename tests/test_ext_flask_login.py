"""Flask-Login with this package, as with Flask's cookie session (issue 15 item 7).

Each test drives a real app through the test client on Flask's cookie session (the
baseline) and on this package's file and Redis backends in both locking modes
(``backend`` of ``ext_support``): login, ``remember=True``, the default
``session_protection="basic"`` and ``"strong"`` (which deletes the session's keys).
"""

from __future__ import annotations

from typing import Any

import pytest
from ext_support import SessionBackend, backend_fixture  # noqa: F401 (fixture)
from flask import Flask, session
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    fresh_login_required,
    login_required,
    login_user,
    logout_user,
)


class User(UserMixin):
    def __init__(self, uid: str) -> None:
        self.id = uid


def login_app(backend: SessionBackend, protection: str | None = "basic") -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="login-secret", TESTING=True)
    manager = LoginManager(app)
    manager.session_protection = protection

    @manager.user_loader
    def load_user(uid: str) -> User | None:
        return User(uid) if uid in ("alice", "bob") else None

    @app.route("/login/<uid>")
    def login(uid: str) -> str:
        login_user(User(uid), remember=False)
        return "in"

    @app.route("/login-remember/<uid>")
    def login_remember(uid: str) -> str:
        login_user(User(uid), remember=True)
        return "in"

    @app.route("/logout")
    def logout() -> str:
        logout_user()
        return "out"

    @app.route("/me")
    @login_required
    def me() -> str:
        return str(current_user.id)

    @app.route("/fresh")
    @fresh_login_required
    def fresh() -> str:
        return "fresh " + str(current_user.id)

    @app.route("/whoami")
    def whoami() -> str:
        # An anonymous page that reads current_user (as every base template does).
        return "anon" if current_user.is_anonymous else str(current_user.id)

    @app.route("/keys")
    def keys() -> Any:
        return sorted(k for k in session if not k.startswith("_") or k in ("_user_id", "_fresh"))

    return backend.install(app)


def test_login_and_logout(backend: SessionBackend) -> None:
    app = login_app(backend)
    client = app.test_client()
    assert client.get("/me").status_code == 401
    assert client.get("/login/alice").status_code == 200
    assert backend.session_cookie(client, app) is not None
    assert client.get("/me").get_data(as_text=True) == "alice"
    assert client.get("/fresh").get_data(as_text=True) == "fresh alice"
    with client.session_transaction() as sess:
        assert sess["_user_id"] == "alice"
        assert sess["_fresh"] is True
    assert client.get("/logout").status_code == 200
    assert client.get("/me").status_code == 401
    assert client.get("/whoami").get_data(as_text=True) == "anon"


def test_users_are_kept_apart(backend: SessionBackend) -> None:
    app = login_app(backend)
    alice, bob = app.test_client(), app.test_client()
    alice.get("/login/alice")
    bob.get("/login/bob")
    assert alice.get("/me").get_data(as_text=True) == "alice"
    assert bob.get("/me").get_data(as_text=True) == "bob"
    bob.get("/logout")
    assert alice.get("/me").get_data(as_text=True) == "alice"
    assert bob.get("/me").status_code == 401


def test_remember_me_after_the_session_cookie_is_gone(backend: SessionBackend) -> None:
    app = login_app(backend)
    client = app.test_client()
    client.get("/login-remember/alice")
    assert client.get_cookie("remember_token") is not None
    backend.drop_session_cookie(client, app)  # browser restart
    response = client.get("/me")
    assert response.get_data(as_text=True) == "alice"
    # Restored from the remember cookie: logged in, but not fresh.
    assert client.get("/fresh").status_code == 401
    # ... and in a session again, which outlives the remember cookie.
    assert backend.session_cookie(client, app) is not None
    client.delete_cookie("remember_token")
    assert client.get("/me").get_data(as_text=True) == "alice"


def test_remember_me_is_cleared_at_logout(backend: SessionBackend) -> None:
    app = login_app(backend)
    client = app.test_client()
    client.get("/login-remember/alice")
    client.get("/logout")
    assert client.get_cookie("remember_token") is None
    backend.drop_session_cookie(client, app)
    assert client.get("/me").status_code == 401


def test_basic_protection_marks_a_stolen_session_not_fresh(
    backend: SessionBackend,
) -> None:
    app = login_app(backend, "basic")
    client = app.test_client()
    client.get("/login/alice", headers={"User-Agent": "browser-1"})
    assert client.get("/fresh", headers={"User-Agent": "browser-1"}).status_code == 200
    # Same cookie, another client identifier: still logged in, no longer fresh.
    assert client.get("/me", headers={"User-Agent": "browser-2"}).get_data() == b"alice"
    assert client.get("/fresh", headers={"User-Agent": "browser-2"}).status_code == 401


def test_strong_protection_logs_a_stolen_session_out(backend: SessionBackend) -> None:
    app = login_app(backend, "strong")
    client = app.test_client()
    client.get("/login-remember/alice", headers={"User-Agent": "browser-1"})
    assert client.get("/me", headers={"User-Agent": "browser-1"}).get_data() == b"alice"
    # Strong protection deletes the session's login keys and clears the remember cookie.
    assert client.get("/me", headers={"User-Agent": "browser-2"}).status_code == 401
    assert client.get_cookie("remember_token") is None
    assert client.get("/me", headers={"User-Agent": "browser-1"}).status_code == 401
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


def test_strong_protection_keeps_a_remembered_user(backend: SessionBackend) -> None:
    """A user who comes back with only a valid remember cookie (the session cookie gone:
    browser restart, idle timeout) is logged in again, not logged out."""
    app = login_app(backend, "strong")
    client = app.test_client()
    client.get("/login-remember/alice")
    backend.drop_session_cookie(client, app)
    assert client.get("/me").get_data(as_text=True) == "alice"
    assert client.get_cookie("remember_token") is not None


@pytest.mark.parametrize("protection", ["basic", "strong"])
def test_anonymous_visits_store_nothing(backend: SessionBackend, protection: str) -> None:
    """Reading current_user on an anonymous request sends no session cookie (bots, health
    checks), whatever the protection mode."""
    app = login_app(backend, protection)
    client = app.test_client()
    response = client.get("/whoami")
    assert response.get_data(as_text=True) == "anon"
    assert not backend.sets_session_cookie(response, app)
    assert backend.session_cookie(client, app) is None


def test_login_keys_survive_other_session_use(backend: SessionBackend) -> None:
    app = login_app(backend)

    @app.route("/cart/<item>")
    def cart(item: str) -> str:
        session.setdefault("cart", []).append(item)
        session.modified = True
        return ",".join(session["cart"])

    client = app.test_client()
    client.get("/login/alice")
    client.get("/cart/a")
    assert client.get("/cart/b").get_data(as_text=True) == "a,b"
    assert client.get("/me").get_data(as_text=True) == "alice"
    client.get("/logout")
    assert client.get("/me").status_code == 401
