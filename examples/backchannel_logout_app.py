"""Example: OpenID Connect back-channel logout ending a user's sessions at once.

When a user logs out at the identity provider (or an administrator ends their IdP session),
the IdP POSTs a signed *logout token* to each relying party's back-channel logout URL
(OpenID Connect Back-Channel Logout 1.0). This app validates it with Authlib's JOSE
library (``joserfc``: signature against the IdP's keys, ``iss``, ``aud``, ``iat``, the
back-channel ``events`` claim, no ``nonce``) and revokes the sessions it names:

* by ``sub`` (the user): every session of the user, found through the per-user index
  (``SESSION_USER_KEY = "_user_id"``, where login stores the ``sub``);
* by ``sid`` too, when the token carries one: only the sessions that logged in through that
  IdP session. Login keeps the ID token's ``sid`` in the session, and the metadata hook
  (``Session.user_metadata``) copies it into the index entry.

``login_with_id_token`` stands for the end of an Authorization Code flow (Authlib's
``oauth.<idp>.authorize_access_token()`` gives the validated ID token claims). A logout
token without ``sub`` is refused (400): the index is keyed by user.

Run it with ``flask --app examples/backchannel_logout_app.py run``; the IdP's keys come
from ``IDP_JWKS`` (a JWKS JSON document), its issuer from ``IDP_ISSUER``, this client's id
from ``CLIENT_ID``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request, session
from flask_beaker_session import Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.wrappers import Response

HERE = Path(__file__).parent

#: The ``events`` member a logout token must have (Back-Channel Logout 1.0 §2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: How far in the past or future a logout token's ``iat`` may be (seconds).
MAX_AGE = 120


def create_app(config: Mapping[str, Any] | None = None, keys: KeySet | None = None) -> Flask:
    """The app; ``config`` overrides the defaults, ``keys`` are the IdP's signing keys
    (default: the JWKS in ``IDP_JWKS``)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "backchannel-example-secret"),
        SESSION_DATA_DIR=os.environ.get("SESSION_DATA_DIR", str(HERE / ".sessions")),
        SESSION_USER_KEY="_user_id",
        IDP_ISSUER=os.environ.get("IDP_ISSUER", "https://idp.example"),
        CLIENT_ID=os.environ.get("CLIENT_ID", "example-client"),
    )
    app.config.update(config or {})
    if keys is None:
        jwks = os.environ.get("IDP_JWKS")
        # Without keys every logout token is refused (400).
        keys = KeySet.import_key_set(json.loads(jwks)) if jwks else KeySet([])
    idp_keys = keys
    sessions = Session(app)

    @sessions.user_metadata
    def idp_session(data: Mapping[str, Any]) -> dict[str, str]:
        # Kept in the index entry, so that a logout by `sid` finds the right sessions.
        return {"sid": str(data["oidc_sid"])} if "oidc_sid" in data else {}

    def login_with_id_token(claims: Mapping[str, Any]) -> None:
        """What the OIDC callback does once Authlib validated the ID token."""
        session.regenerate_id()  # type: ignore[attr-defined]
        session["_user_id"] = str(claims["sub"])
        if "sid" in claims:
            session["oidc_sid"] = str(claims["sid"])

    app.config["login_with_id_token"] = login_with_id_token

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("_user_id"))

    @app.post("/backchannel-logout")
    def backchannel_logout() -> Response:
        token = request.form.get("logout_token", "")
        try:
            claims = validate_logout_token(token, idp_keys, app.config)
        except (JoseError, ValueError) as exc:
            return _reply({"error": "invalid_request", "error_description": str(exc)}, 400)
        sub, sid = str(claims["sub"]), claims.get("sid")
        if sid is None:
            count = sessions.revoke_user_sessions(sub)
        else:
            count = sum(
                sessions.revoke_session(sub, s.handle)
                for s in sessions.user_sessions(sub)
                if s.metadata.get("sid") == sid
            )
        return _reply({"revoked": count}, 200)

    return app


def validate_logout_token(token: str, keys: KeySet, config: Mapping[str, Any]) -> Any:
    """The claims of a valid logout token; ``JoseError`` or ``ValueError`` otherwise."""
    decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    registry = jwt.JWTClaimsRegistry(
        now=None,
        leeway=MAX_AGE,
        iss={"essential": True, "value": config["IDP_ISSUER"]},
        aud={"essential": True, "value": config["CLIENT_ID"]},
        iat={"essential": True},
        jti={"essential": True},
    )
    registry.validate(decoded.claims)
    claims = decoded.claims
    events = claims.get("events")
    if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
        raise ValueError("not a logout token: events lacks the back-channel logout event")
    if "nonce" in claims:
        raise ValueError("a logout token must not have a nonce")
    if not isinstance(claims.get("sub"), str):
        raise ValueError("this relying party needs the sub claim")
    return claims


def _reply(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


app = create_app()
