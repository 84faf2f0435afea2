"""Authlib's Flask OAuth client with this package, as with Flask's cookie session (issue 15
item 7): the OAuth ``state`` and the OpenID Connect ``nonce`` are kept in the session
across the redirect round trip to the provider, and checked on the way back.

The provider is a tiny OpenID Connect app of this test (discovery, authorize, token with
an RS256-signed ID token, JWKS) served by Werkzeug on 127.0.0.1: no network. Each test
runs on Flask's cookie session (the baseline) and on the file and Redis backends in both
locking modes (``backend`` of ``ext_support``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.integrations.base_client import MismatchingStateError
from authlib.integrations.flask_client import OAuth
from ext_support import SessionBackend, backend_fixture  # noqa: F401 (fixture)
from flask import Flask, jsonify, redirect, request, session
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

CLIENT_ID = "client-1"
CLIENT_SECRET = "client-secret"
REDIRECT_URI = "http://localhost/callback"


class Provider:
    """A minimal OpenID Connect provider: it approves every authorization request for
    user ``alice`` and remembers each code's nonce to put in the ID token."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.codes: dict[str, dict[str, Any]] = {}
        self.base = ""
        self.app = self._build()

    def _build(self) -> Flask:
        app = Flask("fake_provider")

        @app.route("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(
                issuer=self.base,
                authorization_endpoint=f"{self.base}/authorize",
                token_endpoint=f"{self.base}/token",
                jwks_uri=f"{self.base}/jwks",
                userinfo_endpoint=f"{self.base}/userinfo",
                response_types_supported=["code"],
                subject_types_supported=["public"],
                id_token_signing_alg_values_supported=["RS256"],
            )

        @app.route("/jwks")
        def jwks() -> Any:
            return jsonify(KeySet([self.key]).as_dict(private=False))

        @app.route("/authorize")
        def authorize() -> Any:
            args = request.args
            assert args["client_id"] == CLIENT_ID
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": args.get("nonce"), "redirect_uri": args["redirect_uri"]}
            query = urlencode({"code": code, "state": args["state"]})
            return redirect(f"{args['redirect_uri']}?{query}")

        @app.route("/token", methods=["POST"])
        def token() -> Any:
            grant = self.codes.pop(request.form["code"], None)
            if grant is None or grant["redirect_uri"] != request.form["redirect_uri"]:
                return jsonify(error="invalid_grant"), 400
            now = int(time.time())
            claims = {
                "iss": self.base,
                "sub": "alice",
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 300,
                "name": "Alice",
            }
            if grant["nonce"] is not None:
                claims["nonce"] = grant["nonce"]
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
            return jsonify(
                access_token=secrets.token_urlsafe(16),
                token_type="Bearer",
                expires_in=300,
                id_token=id_token,
            )

        return app


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = Provider()
    server = make_server("127.0.0.1", 0, p.app, threaded=True)
    p.base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield p
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def client_app(backend: SessionBackend, provider: Provider) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="authlib-secret", TESTING=True)
    oauth = OAuth(app)
    oauth.register(
        "fake",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        server_metadata_url=f"{provider.base}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile"},
    )

    @app.route("/login")
    def login() -> Any:
        return oauth.fake.authorize_redirect(REDIRECT_URI)

    @app.route("/callback")
    def callback() -> Any:
        try:
            token = oauth.fake.authorize_access_token()
        except MismatchingStateError:
            return "mismatching state", 400
        session["user"] = token["userinfo"]["sub"]
        return "welcome " + token["userinfo"]["name"]

    @app.route("/me")
    def me() -> str:
        return str(session.get("user"))

    @app.route("/oauth-keys")
    def oauth_keys() -> Any:
        return jsonify(sorted(k for k in session if k.startswith("_state_")))

    return backend.install(app)


def go_to_provider(client: Any) -> tuple[str, dict[str, str]]:
    """GET /login: the redirect to the provider, and its query."""
    response = client.get("/login")
    assert response.status_code == 302
    location = response.headers["Location"]
    return location, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def come_back(client: Any, provider: Provider, location: str) -> Any:
    """The browser follows the redirect to the provider, then back to /callback."""
    with provider.app.test_client() as browser_at_provider:
        approved = browser_at_provider.get(location.removeprefix(provider.base))
    assert approved.status_code == 302
    back = urlsplit(approved.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def test_round_trip_keeps_state_and_nonce(backend: SessionBackend, provider: Provider) -> None:
    app = client_app(backend, provider)
    client = app.test_client()
    location, query = go_to_provider(client)
    assert query["state"] and query["nonce"]
    # State and nonce wait in the session for the way back.
    assert backend.session_cookie(client, app) is not None
    assert client.get("/oauth-keys").get_json() == [f"_state_fake_{query['state']}"]
    response = come_back(client, provider, location)
    assert response.get_data(as_text=True) == "welcome Alice", response.get_data()
    assert client.get("/me").get_data(as_text=True) == "alice"
    # The state is used up.
    assert client.get("/oauth-keys").get_json() == []


def test_two_logins_in_parallel_tabs(backend: SessionBackend, provider: Provider) -> None:
    app = client_app(backend, provider)
    client = app.test_client()
    first, _ = go_to_provider(client)
    second, _ = go_to_provider(client)
    assert len(client.get("/oauth-keys").get_json()) == 2
    assert come_back(client, provider, second).get_data() == b"welcome Alice"
    assert come_back(client, provider, first).get_data() == b"welcome Alice"


def test_callback_without_the_session_is_refused(
    backend: SessionBackend, provider: Provider
) -> None:
    """A callback arriving in another browser (no session: login CSRF) fails the state
    check, and the user is not logged in."""
    app = client_app(backend, provider)
    victim = app.test_client()
    location, _ = go_to_provider(app.test_client())
    response = come_back(victim, provider, location)
    assert response.status_code == 400
    assert victim.get("/me").get_data(as_text=True) == "None"


def test_state_is_single_use(backend: SessionBackend, provider: Provider) -> None:
    app = client_app(backend, provider)
    client = app.test_client()
    location, query = go_to_provider(client)
    assert come_back(client, provider, location).status_code == 200
    replay = client.get(f"/callback?code=whatever&state={query['state']}")
    assert replay.status_code == 400
