"""Example: a user's devices, "log out everywhere else", and revocation on password change.

Run it with ``flask --app examples/devices_app.py run`` and open http://127.0.0.1:5000/.
Demo users: ``alice`` / ``wonderland`` and ``bob`` / ``builder``. Log in from two
browsers (or a private window) and open "Your devices" in either.

What it shows (``SESSION_USER_KEY = "_user_id"``, Flask-Login's key):

* Flask-Login keeps the user's id under ``_user_id``; the store indexes every session by
  it, so ``user_sessions()`` lists the user's sessions, with the browser and address they
  logged in from (``SESSION_USER_METADATA = True``: personal data, opt-in).
* Each device has a *handle* (never its session id): "Log out" next to a device revokes it
  with ``revoke_session()``; "Log out everywhere else" calls
  ``revoke_user_sessions(except_current=True)``. A revoked device's next request finds no
  session: it is logged out at once.
* Changing the password ends every other session of the user: whoever else had the old
  password is out.

``create_app(config)`` takes settings, e.g. ``{"SESSION_TYPE": "redis"}``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, abort, redirect, render_template_string, request, session, url_for
from flask_beaker_session import Session
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from werkzeug.wrappers import Response

HERE = Path(__file__).parent

#: Demo accounts. A real application keeps password *hashes* in a database.
PASSWORDS = {"alice": "wonderland", "bob": "builder"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Devices example</title></head><body>
{% if current_user.is_authenticated %}
  <p id="whoami">Signed in as {{ current_user.id }}</p>
  <h1>Your devices</h1>
  <ul>
  {% for device in devices %}
    <li class="device" data-handle="{{ device.handle }}">
      {{ device.metadata.get("user_agent") or "unknown browser" }}
      from {{ device.metadata.get("ip") or "?" }}
      {% if device.current %}<strong>(this device)</strong>{% else %}
      <form method="post" action="{{ url_for('revoke', handle=device.handle) }}"
            style="display:inline"><button>Log out</button></form>{% endif %}
    </li>
  {% endfor %}
  </ul>
  <form method="post" action="{{ url_for('elsewhere') }}">
    <button id="elsewhere">Log out everywhere else</button></form>
  <form method="post" action="{{ url_for('password') }}">
    <input name="password" type="password"><button>Change password</button></form>
  <form method="post" action="{{ url_for('logout') }}"><button>Log out</button></form>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <input name="username"> <input name="password" type="password">
    <button>Log in</button></form>
{% endif %}
</body></html>"""


class User(UserMixin):
    def __init__(self, uid: str) -> None:
        self.id = uid


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` overrides the defaults (e.g. ``SESSION_TYPE="redis"``)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "devices-example-secret"),
        SESSION_DATA_DIR=os.environ.get("SESSION_DATA_DIR", str(HERE / ".sessions")),
        SESSION_USER_KEY="_user_id",
        SESSION_USER_METADATA=True,
    )
    app.config.update(config or {})
    sessions = Session(app)
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(uid: str) -> User | None:
        return User(uid) if uid in PASSWORDS else None

    @app.get("/")
    def index() -> str:
        devices = sessions.user_sessions(current_user.id) if current_user.is_authenticated else []
        return render_template_string(PAGE, devices=devices)

    @app.post("/login")
    def login() -> Response:
        name = request.form.get("username", "")
        password = request.form.get("password", "")
        known = PASSWORDS.get(name)
        if known is None or not hmac.compare_digest(known.encode(), password.encode()):
            abort(403)
        session.regenerate_id()  # type: ignore[attr-defined]  # session-fixation defence
        login_user(User(name))
        return redirect(url_for("index"))

    @app.post("/devices/<handle>/logout")
    @login_required
    def revoke(handle: str) -> Response:
        sessions.revoke_session(current_user.id, handle)
        return redirect(url_for("index"))

    @app.post("/devices/logout-elsewhere")
    @login_required
    def elsewhere() -> Response:
        sessions.revoke_user_sessions(current_user.id, except_current=True)
        return redirect(url_for("index"))

    @app.post("/password")
    @login_required
    def password() -> Response:
        new = request.form.get("password", "")
        if len(new) < 8:
            abort(400)
        PASSWORDS[current_user.id] = new
        # Whoever else knew the old password is logged out everywhere, at once.
        sessions.revoke_user_sessions(current_user.id, except_current=True)
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Response:
        logout_user()
        return redirect(url_for("index"))

    return app


app = create_app()
