"""Flask-Security with this package, as with Flask's cookie session (issue 15 item 7): the
login form (with its CSRF token in the session), a protected view, "remember me", logout,
and a session that outlives neither logout nor a password change.

The users live in a small in-memory datastore of this test (Flask-Security's
``UserDatastore`` API), so no database is needed. Each test runs on Flask's cookie session
(the baseline) and on the file and Redis backends in both locking modes
(``backend`` of ``ext_support``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from ext_support import SessionBackend, backend_fixture  # noqa: F401 (fixture)
from flask import Flask

# Flask-Security needs Flask >= 3: `make test` installs it (extra `test-flask3`),
# `make test-oldest` (Flask 2.3.3) does not.
pytest.importorskip("flask_security", reason="Flask-Security needs Flask >= 3")

from flask_security import (
    RoleMixin,
    Security,
    UserDatastore,
    UserMixin,
    auth_required,
    current_user,
    hash_password,
)

TOKEN_RE = re.compile(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"')
PASSWORD = "correct horse battery staple"


class Role(RoleMixin):
    def __init__(self, name: str, **kwargs: Any) -> None:
        self.name = name
        self.permissions: list[str] = []
        self.__dict__.update(kwargs)


class User(UserMixin):
    # The columns Flask-Security looks for on the class.
    fs_uniquifier: str | None = None
    email: str | None = None
    password: str | None = None
    active = True

    def __init__(self, **kwargs: Any) -> None:
        self.id = uuid.uuid4().hex
        self.roles: list[Role] = []
        self.confirmed_at = None
        self.__dict__.update(kwargs)


class MemoryDatastore(UserDatastore):
    """Flask-Security's user datastore, kept in two lists."""

    def __init__(self) -> None:
        super().__init__(User, Role)
        self.users: list[User] = []
        self.roles: list[Role] = []

    def put(self, model: Any) -> Any:
        store = self.users if isinstance(model, User) else self.roles
        if model not in store:
            store.append(model)
        return model

    def delete(self, model: Any) -> None:
        (self.users if isinstance(model, User) else self.roles).remove(model)

    def commit(self) -> None:
        pass

    def reload(self, model: Any) -> Any:
        return model

    def find_user(self, case_insensitive: bool = False, **kwargs: Any) -> Any:
        for user in self.users:
            if all(
                (str(getattr(user, k, "")).lower() == str(v).lower())
                if case_insensitive
                else getattr(user, k, None) == v
                for k, v in kwargs.items()
            ):
                return user
        return None

    def find_role(self, role: str) -> Any:
        return next((r for r in self.roles if r.name == role), None)


def security_app(backend: SessionBackend) -> tuple[Flask, MemoryDatastore]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="security-secret",
        SECURITY_PASSWORD_SALT="salt",
        SECURITY_PASSWORD_HASH="pbkdf2_sha512",
        SECURITY_LOGOUT_METHODS=["GET", "POST"],
        TESTING=True,
    )
    datastore = MemoryDatastore()
    Security(app, datastore)

    @app.route("/private")
    @auth_required("session")
    def private() -> str:
        return "hello " + current_user.email

    with app.app_context():
        datastore.create_user(email="alice@example.com", password=hash_password(PASSWORD))
    return backend.install(app), datastore


def csrf_token(client: Any) -> str:
    page = client.get("/login").get_data(as_text=True)
    match = TOKEN_RE.search(page)
    assert match, page
    return match.group(1)


def log_in(client: Any, *, remember: bool = False, password: str = PASSWORD) -> Any:
    data = {"email": "alice@example.com", "password": password, "csrf_token": csrf_token(client)}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data)


def test_login_protected_view_logout(backend: SessionBackend) -> None:
    app, _ = security_app(backend)
    client = app.test_client()
    assert client.get("/private").status_code == 302  # to the login page
    response = log_in(client)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert backend.session_cookie(client, app) is not None
    assert client.get("/private").get_data(as_text=True) == "hello alice@example.com"
    with client.session_transaction() as sess:
        assert "_user_id" in sess
    assert client.get("/logout").status_code == 302
    assert client.get("/private").status_code == 302


def test_wrong_password_and_missing_csrf_are_refused(backend: SessionBackend) -> None:
    app, _ = security_app(backend)
    client = app.test_client()
    assert log_in(client, password="wrong").status_code == 200  # the form again
    assert client.get("/private").status_code == 302
    response = client.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code in (200, 400)
    assert client.get("/private").status_code == 302


def test_remember_me(backend: SessionBackend) -> None:
    app, _ = security_app(backend)
    client = app.test_client()
    log_in(client, remember=True)
    assert client.get_cookie("remember_token") is not None
    backend.drop_session_cookie(client, app)  # browser restart
    assert client.get("/private").get_data(as_text=True) == "hello alice@example.com"
    client.get("/logout")
    backend.drop_session_cookie(client, app)
    assert client.get("/private").status_code == 302


def test_changed_uniquifier_logs_sessions_out(backend: SessionBackend) -> None:
    """Changing the user's fs_uniquifier (what a password change does) ends the sessions
    that hold the old one."""
    app, datastore = security_app(backend)
    client = app.test_client()
    log_in(client)
    assert client.get("/private").status_code == 200
    with app.app_context():
        datastore.set_uniquifier(datastore.users[0])
    assert client.get("/private").status_code == 302
