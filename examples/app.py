"""Demo: the original README's routes, on server-side sessions.

Run it with ``make demo`` (or ``flask --app examples/app.py run``), then open
http://127.0.0.1:5000/ and follow the links. The index page says what each route does and
shows your session as the server holds it: its id, its contents, when it was created and
last used, and the file it is stored in. Sessions are stored under ``examples/.sessions``
(or ``$SESSION_DATA_DIR``); the browser only holds an opaque id in the
``beaker.session.id`` cookie.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template_string, session
from flask_beaker_session import session as beaker_session
from flask_beaker_session._core import record_path

HERE = Path(__file__).parent

#: Each route of the demo, and what it does, as the index page explains it.
ROUTES = {
    "/create": "Stores three values in your session: a string, a number and an object of "
    "a class of this app (any picklable value can be stored).",
    "/read": "Shows the three values /create stored, read back from the server.",
    "/delete": "Removes one key (var_1) from the session and answers whether it is still "
    "there (false).",
    "/delete_all": "Deletes the whole session at once: the stored file and your cookie.",
    "/counter": "Adds one to a counter kept in your session: reload it to count, or open "
    "it in another browser to get a separate count.",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flask-beaker-session demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
  p, li { line-height: 1.45; }
  dt { font-weight: 600; margin-top: .6rem; }
  code, pre { background: #f3f3f3; padding: 0 .2rem; }
  pre { padding: .5rem; white-space: pre-wrap; }
  #session-stored { word-break: break-all; }
</style>
</head>
<body>
<h1>flask-beaker-session demo</h1>
<p>Server-side sessions: your browser holds only an opaque id in the
<code>beaker.session.id</code> cookie; the data below lives on the server.</p>
<h2>Routes</h2>
<ul id="routes">
{% for path, text in routes.items() %}
  <li><a id="link{{ path.replace('/', '-') }}" href="{{ path }}">{{ path }}</a>: {{ text }}</li>
{% endfor %}
</ul>
<h2>Your session</h2>
{% if current is none %}
<p id="no-session">You have no session yet: this page only reads it, and reading stores
nothing. Visit <a href="/create">/create</a> or <a href="/counter">/counter</a> to start one.</p>
{% else %}
<dl id="session">
  <dt>Session id</dt><dd><code id="session-id">{{ current.id }}</code></dd>
  <dt>Contents</dt><dd><pre id="session-contents">{{ current.contents }}</pre></dd>
  <dt>Created</dt><dd id="session-created">{{ current.created }}</dd>
  <dt>Last accessed (the request before this one)</dt>
  <dd id="session-last-accessed">{{ current.last_accessed }}</dd>
  <dt>Stored in</dt><dd><code id="session-stored">{{ current.stored }}</code>
    <br><small id="session-backend">{{ current.backend }}</small></dd>
</dl>
{% endif %}
</body>
</html>
"""


def _when(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
    return f"{stamp} ({max(0, round(now - epoch))} s ago)"


def describe_session(app: Flask) -> dict[str, str] | None:
    """What the index page shows about the current session; None when there is none.

    A visitor without a (valid) session cookie gets None, and nothing is read that would
    store a session (reading a new session's id would keep it).
    """
    if session.is_new:
        return None
    sid = session.id
    contents = "\n".join(f"{key} = {value}" for key, value in sorted(session.items()))
    backend = app.config.get("SESSION_TYPE") or "file"
    if backend == "file":
        where = str(record_path(app.config["SESSION_DATA_DIR"], sid))
        how = (
            "file backend: the file is named by a digest of the id (no file name reveals a "
            "session id) and holds your data pickled, authenticated with SECRET_KEY"
        )
    else:
        where, how = f"the {backend} store", f"{backend} backend"
    now = time.time()
    return {
        "id": sid,
        "contents": contents or "(empty)",
        "created": _when(session.created, now),
        "last_accessed": _when(session.last_accessed, now),
        "stored": where,
        "backend": how,
    }


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
        return render_template_string(PAGE, routes=ROUTES, current=describe_session(app))

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
    from _terminal import foreground_job

    # Ctrl-C reaches this server only (not `make`), which stops and exits with status 0.
    with foreground_job():
        app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
