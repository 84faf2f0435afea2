"""Flask-WTF's CSRF protection with this package, as with Flask's cookie session (issue 15
item 7): the CSRF token's secret lives in the session; a form posted back with the token
passes, one without it, with another session's token or after logout is refused.

Each test runs on Flask's cookie session (the baseline) and on the file and Redis backends
in both locking modes (``backend`` of ``ext_support``).
"""

from __future__ import annotations

import re

from ext_support import SessionBackend, backend_fixture  # noqa: F401 (fixture)
from flask import Flask, render_template_string, session
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect, generate_csrf
from wtforms import StringField

TOKEN_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class NoteForm(FlaskForm):
    note = StringField("note")


def wtf_app(backend: SessionBackend) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="wtf-secret", TESTING=True, WTF_CSRF_ENABLED=True)
    CSRFProtect(app)

    @app.route("/form", methods=["GET", "POST"])
    def form() -> str:
        f = NoteForm()
        if f.validate_on_submit():
            session["note"] = f.note.data
            return "saved " + str(f.note.data)
        return render_template_string("<form method=post>{{ form.csrf_token }}</form>", form=f)

    @app.route("/api", methods=["POST"])
    def api() -> str:  # protected by CSRFProtect: token in the X-CSRFToken header
        return "api ok"

    @app.route("/token")
    def token() -> str:
        return generate_csrf()

    @app.route("/note")
    def note() -> str:
        return str(session.get("note"))

    @app.route("/logout")
    def logout() -> str:
        session.clear()
        return "out"

    return backend.install(app)


def form_token(client) -> str:  # type: ignore[no-untyped-def]
    page = client.get("/form").get_data(as_text=True)
    match = TOKEN_RE.search(page)
    assert match, page
    return match.group(1)


def test_form_with_token_passes(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    client = app.test_client()
    token = form_token(client)
    assert backend.session_cookie(client, app) is not None
    with client.session_transaction() as sess:
        assert "csrf_token" in sess
    response = client.post("/form", data={"csrf_token": token, "note": "hi"})
    assert response.get_data(as_text=True) == "saved hi"
    assert client.get("/note").get_data(as_text=True) == "hi"
    # The token stays valid for further forms of the same session.
    response = client.post("/form", data={"csrf_token": token, "note": "again"})
    assert response.get_data(as_text=True) == "saved again"


def test_a_new_token_per_page_keeps_the_same_secret(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    client = app.test_client()
    first = form_token(client)
    with client.session_transaction() as sess:
        secret = sess["csrf_token"]
    second = form_token(client)
    with client.session_transaction() as sess:
        assert sess["csrf_token"] == secret
    for token in (first, second):
        assert client.post("/form", data={"csrf_token": token, "note": "x"}).status_code == 200


def test_form_without_token_is_refused(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    client = app.test_client()
    form_token(client)
    assert client.post("/form", data={"note": "hi"}).status_code == 400
    assert client.post("/api").status_code == 400
    assert client.get("/note").get_data(as_text=True) == "None"


def test_token_of_another_session_is_refused(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    attacker, victim = app.test_client(), app.test_client()
    stolen = form_token(attacker)
    form_token(victim)
    assert victim.post("/form", data={"csrf_token": stolen, "note": "x"}).status_code == 400
    # Without any session (a forged cross-site post), no token validates.
    fresh = app.test_client()
    assert fresh.post("/form", data={"csrf_token": stolen, "note": "x"}).status_code == 400


def test_token_dies_with_the_session(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    client = app.test_client()
    token = form_token(client)
    client.get("/logout")
    assert client.post("/form", data={"csrf_token": token, "note": "x"}).status_code == 400


def test_header_token_for_ajax(backend: SessionBackend) -> None:
    app = wtf_app(backend)
    client = app.test_client()
    token = client.get("/token").get_data(as_text=True)
    assert client.post("/api", headers={"X-CSRFToken": token}).get_data() == b"api ok"
