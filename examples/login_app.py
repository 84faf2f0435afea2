"""Example: log in and out with server-side sessions and flash messages.

Run it with ``flask --app examples/login_app.py run`` and open http://127.0.0.1:5000/.
Demo users: ``alice`` / ``wonderland`` and ``bob`` / ``builder``.

What it shows:

* ``session.regenerate_id()`` at login: whatever id the browser had before (perhaps one an
  attacker planted) is dead once the user is logged in (session-fixation defence); the
  data, such as pending flash messages, moves to the new id.
* ``session.delete()`` at logout: the stored record is removed at once and the cookie
  expired, so a copy of the old cookie is worthless. The "logged out" flash message set
  afterwards goes to a brand-new session, which is deleted again once it has been shown.
* Flask's ``flash()`` works unchanged: messages are ordinary session data.
* Logging out is a POST (a cross-site page cannot log users out with a link or an image);
  the cookie is ``SameSite=Lax`` and ``HttpOnly`` by default. A real application also
  protects its forms with CSRF tokens (e.g. Flask-WTF) and stores password hashes
  (``werkzeug.security``), not passwords.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    flash,
    redirect,
    render_template_string,
    request,
    session,
    url_for,
)
from flask_beaker_session import session as beaker_session
from markupsafe import Markup
from werkzeug.wrappers import Response

HERE = Path(__file__).parent

#: Demo accounts. A real application keeps password *hashes* in a database.
USERS = {"alice": "wonderland", "bob": "builder"}

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }} - login example</title></head>
<body>
<nav>
  <a id="home" href="{{ url_for('index') }}">Home</a>
  <a id="private-link" href="{{ url_for('private') }}">Private page</a>
  {% if user %}
    <span id="whoami">Signed in as {{ user }}</span>
    <form id="logout-form" method="post" action="{{ url_for('logout') }}"
          style="display:inline">
      <button id="logout" type="submit">Log out</button>
    </form>
  {% else %}
    <a id="login-link" href="{{ url_for('login') }}">Log in</a>
  {% endif %}
</nav>
{% with messages = get_flashed_messages(with_categories=true) %}
  {% if messages %}
    <ul id="flashes">
    {% for category, message in messages %}
      <li class="{{ category }}">{{ message }}</li>
    {% endfor %}
    </ul>
  {% endif %}
{% endwith %}
<h1>{{ title }}</h1>
{{ body }}
</body>
</html>
"""

LOGIN_FORM = """<form id="login-form" method="post">
  <label>User <input id="username" name="username" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password"
         autocomplete="current-password"></label>
  <input type="hidden" name="next" value="{{ next }}">
  <button id="submit" type="submit">Log in</button>
</form>
"""


def default_config() -> dict[str, Any]:
    """The example's settings; the environment can override the data dir and the key."""
    return {
        "SESSION_TIMEOUT": 1800,  # logged out after 30 idle minutes
        "SESSION_DATA_DIR": os.environ.get("SESSION_DATA_DIR", str(HERE / ".sessions-login")),
        "SECRET_KEY": os.environ.get("SECRET_KEY", "dev only: change me in production"),
    }


def _check_password(username: str, password: str) -> bool:
    expected = USERS.get(username)
    # compare_digest: the time taken does not reveal how much of the password matched.
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


def _safe_next(target: str | None) -> str | None:
    """Only local paths: never redirect to another site after login."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The login example; ``config`` overrides :func:`default_config`."""
    app = Flask(__name__)
    app.config.update(default_config())
    app.config.update(config or {})
    beaker_session.init_app(app)

    def page(title: str, body: str = "", **context: Any) -> str:
        # The body is rendered (and escaped) first, then placed in the layout as is.
        inner = Markup(render_template_string(body, **context) if body else "")
        return render_template_string(PAGE, title=title, body=inner, user=session.get("user"))

    @app.route("/")
    def index() -> str:
        user = session.get("user")
        text = f"Welcome back, {user}." if user else "You are not logged in."
        return page("Home", '<p id="status">{{ text }}</p>', text=text)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str | tuple[str, int]:
        next_url = _safe_next(request.values.get("next"))
        if request.method == "POST":
            username = request.form.get("username", "").strip()
            password = request.form.get("password", "")
            if _check_password(username, password):
                # A new id at login: an id known before (e.g. planted by an attacker)
                # is dead from now on. Data such as pending flash messages is kept.
                session.regenerate_id()
                session["user"] = username
                session["visits"] = 0
                flash(f"Logged in as {username}.", "success")
                return redirect(next_url or url_for("private"))
            flash("Wrong user name or password.", "error")
            form = page("Log in", LOGIN_FORM, next=next_url or "")
            return form, 401
        return page("Log in", LOGIN_FORM, next=next_url or "")

    @app.route("/private")
    def private() -> Response | str:
        user = session.get("user")
        if user is None:
            flash("Please log in to see that page.", "info")
            return redirect(url_for("login", next=request.path))
        session["visits"] = session.get("visits", 0) + 1
        return page(
            "Private page",
            '<p id="greeting">Hello {{ user }}!</p>'
            '<p>Private page views in this session: <span id="visits">{{ visits }}</span>'
            "</p>",
            user=user,
            visits=session["visits"],
        )

    @app.route("/logout", methods=["POST"])
    def logout() -> Response:
        # Removes the stored record now and expires the cookie: the old id is dead.
        session.delete()
        # Keys set after delete() go to a new session (here: just the message).
        flash("You are logged out.", "info")
        return redirect(url_for("index"))

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
