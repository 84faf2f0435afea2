"""The issue 20 examples end to end, through the test client, on the file and memory stores
and a real ``redis-server``: ``examples/devices_app.py`` (a user's devices, log out
everywhere else, revocation on password change) and ``examples/backchannel_logout_app.py``
(an OpenID Connect back-channel logout validated with Authlib's ``joserfc``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _examples import load_example
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@pytest.fixture(params=["file", "memory", "redis"])
def store(request: pytest.FixtureRequest, data_dir: Path, prefix: str) -> dict[str, Any]:
    """The settings of one store (the examples' ``create_app(config)``)."""
    config: dict[str, Any] = {"SESSION_TYPE": request.param, "SESSION_DATA_DIR": str(data_dir)}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        config.update(SESSION_REDIS_URL=server.url, SESSION_REDIS_PREFIX=prefix)
    return config


@pytest.fixture
def devices(store: dict[str, Any], data_dir: Path) -> Flask:
    module = load_example("devices_app", data_dir)
    app: Flask = module.create_app(store)
    return app


def device(app: Flask, agent: str, user: str = "alice", password: str = "wonderland") -> Any:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    response = client.post("/login", data={"username": user, "password": password})
    assert response.status_code == 302
    return client


def signed_in(client: FlaskClient) -> bool:
    return b'id="whoami"' in client.get("/").data


def test_devices_page_lists_each_login(devices: Flask) -> None:
    phone = device(devices, "Phone/1.0")
    laptop = device(devices, "Laptop/2.0")
    page = laptop.get("/").data.decode()
    assert "Phone/1.0" in page and "Laptop/2.0" in page
    assert page.count('class="device"') == 2
    assert "(this device)" in page
    assert signed_in(phone)


def test_log_out_one_device_then_everywhere_else(devices: Flask) -> None:
    phone = device(devices, "Phone/1.0")
    tablet = device(devices, "Tablet/1.0")
    laptop = device(devices, "Laptop/2.0")
    bob = device(devices, "Bob/1.0", "bob", "builder")
    page = laptop.get("/").data.decode()
    start = page.index("Phone/1.0")
    handle = page[page.rindex('data-handle="', 0, start) + 13 :][:32]
    assert laptop.post(f"/devices/{handle}/logout").status_code == 302
    assert not signed_in(phone)
    assert signed_in(tablet)
    laptop.post("/devices/logout-elsewhere")
    assert not signed_in(tablet)
    assert signed_in(laptop) and signed_in(bob)
    assert laptop.get("/").data.decode().count('class="device"') == 1


def test_password_change_logs_out_the_other_sessions(devices: Flask) -> None:
    thief = device(devices, "Thief/1.0")
    owner = device(devices, "Owner/1.0")
    assert owner.post("/password", data={"password": "a-new-passphrase"}).status_code == 302
    assert not signed_in(thief)
    assert signed_in(owner)
    assert (
        thief.post("/login", data={"username": "alice", "password": "wonderland"}).status_code
        == 403
    )


# -- OpenID Connect back-channel logout --------------------------------------------------

ISSUER, CLIENT = "https://idp.example", "example-client"


@pytest.fixture
def idp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp1", "use": "sig"})


@pytest.fixture
def rp(store: dict[str, Any], data_dir: Path, idp_key: RSAKey) -> Flask:
    module = load_example("backchannel_logout_app", data_dir)
    app: Flask = module.create_app(store, KeySet([idp_key]))

    @app.get("/test-login/<sub>/<sid>")
    def test_login(sub: str, sid: str) -> str:
        # The end of the code flow: claims of an ID token Authlib has validated.
        app.config["login_with_id_token"]({"sub": sub, "sid": sid})
        return "in"

    return app


def logout_token(key: RSAKey, **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": CLIENT,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": "idp1"}, body, key)


def rp_login(app: Flask, sub: str, sid: str) -> FlaskClient:
    client = app.test_client()
    assert client.get(f"/test-login/{sub}/{sid}").status_code == 200
    return client


def test_backchannel_logout_by_sid_ends_that_idp_sessions_logins(
    rp: Flask, idp_key: RSAKey
) -> None:
    a1 = rp_login(rp, "alice", "idp-s1")
    a2 = rp_login(rp, "alice", "idp-s2")
    idp = rp.test_client()
    response = idp.post(
        "/backchannel-logout",
        data={"logout_token": logout_token(idp_key, sub="alice", sid="idp-s1")},
    )
    assert response.status_code == 200 and response.get_json() == {"revoked": 1}
    assert response.headers["Cache-Control"] == "no-store"
    assert a1.get("/whoami").data == b"None"
    assert a2.get("/whoami").data == b"alice"


def test_backchannel_logout_by_sub_ends_every_session(rp: Flask, idp_key: RSAKey) -> None:
    a1, a2 = rp_login(rp, "alice", "s1"), rp_login(rp, "alice", "s2")
    bob = rp_login(rp, "bob", "s3")
    response = rp.test_client().post(
        "/backchannel-logout", data={"logout_token": logout_token(idp_key, sub="alice")}
    )
    assert response.get_json() == {"revoked": 2}
    assert [c.get("/whoami").data for c in (a1, a2, bob)] == [b"None", b"None", b"bob"]


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "alice", "iss": "https://evil.example"},
        {"sub": "alice", "aud": "another-client"},
        {"sub": "alice", "events": {"other": {}}},
        {"sub": "alice", "nonce": "n"},
        {"sub": None, "sid": "s1"},
        {"sub": "alice", "jti": None},
    ],
)
def test_invalid_logout_tokens_are_refused(rp: Flask, idp_key: RSAKey, claims: Any) -> None:
    alice = rp_login(rp, "alice", "s1")
    response = rp.test_client().post(
        "/backchannel-logout", data={"logout_token": logout_token(idp_key, **claims)}
    )
    assert response.status_code == 400
    assert alice.get("/whoami").data == b"alice"


def test_a_token_signed_by_another_key_is_refused(rp: Flask) -> None:
    alice = rp_login(rp, "alice", "s1")
    forger = RSAKey.generate_key(2048, parameters={"kid": "idp1"})
    for token in (logout_token(forger, sub="alice"), "not-a-jwt", ""):
        response = rp.test_client().post("/backchannel-logout", data={"logout_token": token})
        assert response.status_code == 400
    assert alice.get("/whoami").data == b"alice"
