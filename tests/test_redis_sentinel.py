"""The Redis backend behind real Sentinels (1 primary + 1 replica + 3 Sentinels on
loopback): the ``SESSION_REDIS_URL`` forms and their checks at ``init_app``, sessions kept
when a single node is put under Sentinel (same key names), and failovers under gunicorn
load, ``SENTINEL FAILOVER`` and SIGKILL of the primary, with and without
``SESSION_REDIS_WAIT_REPLICAS`` (requests, 503s, recovery time and lost acknowledged
updates are printed and written to ``failover.json`` in the test's temp dir). The shared
backend suite runs behind Sentinel too (``test_backends.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from flask_beaker_session.errors import ConfigurationError
from helpers import build_app, client_with, cookie_of
from redis_ha import RedisSentinels, drive_failover, report
from redis_server import data_key
from test_servers import gunicorn

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux")


def redis_app(url: str, prefix: str, **config: object) -> Flask:
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


@pytest.mark.parametrize(
    ("config", "key", "says"),
    [
        ({"SESSION_REDIS_URL": "redis+sentinel://h1:26379"}, "SESSION_REDIS_URL", "service"),
        ({"SESSION_REDIS_URL": "redis+sentinel://h1:26379/m/x"}, "SESSION_REDIS_URL", "db"),
        ({"SESSION_REDIS_URL": "redis+sentinel://h1:0/m"}, "SESSION_REDIS_URL", "port"),
        ({"SESSION_REDIS_URL": "redis+cluster://h1:7000/2"}, "SESSION_REDIS_URL", "database 0"),
        ({"SESSION_REDIS_URL": "redis+cluster://h1,,h2"}, "SESSION_REDIS_URL", "empty host"),
        ({"SESSION_REDIS_URL": "redis+sentinal://h/m"}, "SESSION_REDIS_URL", "redis+sentinel"),
        (
            {"SESSION_REDIS_URL": "redis://h:1/0", "SESSION_REDIS_SENTINEL_PASSWORD": "pw"},
            "SESSION_REDIS_SENTINEL_PASSWORD",
            "redis+sentinel",
        ),
        (
            {"SESSION_REDIS_URL": "redis+cluster://h:1", "SESSION_REDIS_PREFIX": "{app}:"},
            "SESSION_REDIS_PREFIX",
            "hash tag",
        ),
        ({"SESSION_REDIS_WAIT_REPLICAS": -1}, "SESSION_REDIS_WAIT_REPLICAS", "whole number"),
        ({"SESSION_REDIS_WAIT_REPLICAS": "one"}, "SESSION_REDIS_WAIT_REPLICAS", "whole number"),
        ({"SESSION_REDIS_WAIT_TIMEOUT": 0}, "SESSION_REDIS_WAIT_TIMEOUT", "positive"),
    ],
)
def test_bad_ha_settings_fail_at_init_app(config: dict[str, object], key: str, says: str) -> None:
    """Each bad setting is a ConfigurationError at init_app naming the key and what is
    accepted; nothing connects."""
    settings = {"SESSION_REDIS_URL": "redis+sentinel://127.0.0.1:9/m", **config}
    with pytest.raises(ConfigurationError) as caught:
        build_app("/nonexistent-unused", SESSION_TYPE="redis", **settings)
    assert key in str(caught.value)
    assert says in str(caught.value)


def test_good_ha_urls_build_without_connecting() -> None:
    """The accepted forms (several hosts, default ports, IPv6, TLS, passwords, a Sentinel
    password) pass init_app with nothing listening: connections are made on first use."""
    for url, extra in [
        ("redis+sentinel://:pw@127.0.0.1:9,127.0.0.1:10/mymaster/3", {}),
        ("rediss+sentinel://[::1]:9/mymaster", {"SESSION_REDIS_SENTINEL_PASSWORD": "s p@ss"}),
        ("redis+cluster://127.0.0.1:9,127.0.0.1", {"SESSION_REDIS_WAIT_REPLICAS": 1}),
        ("rediss+cluster://user:pw@127.0.0.1:9/0", {"SESSION_REDIS_WAIT_TIMEOUT": 0.2}),
    ]:
        app = redis_app(url, "p:", **extra)
        assert app.session_interface is not None


def test_a_single_nodes_sessions_survive_the_move_under_sentinel(
    redis_sentinels: RedisSentinels, prefix: str
) -> None:
    """Key names are those of 0.2 behind Sentinel: a session written through the primary's
    plain URL loads through the Sentinel URL, and the other way round."""
    primary = redis_sentinels.current_primary()
    before = redis_app(primary.url, prefix)
    client = before.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    with redis_sentinels.client() as c:
        assert c("EXISTS", data_key(prefix, sid)) == 1
    after = redis_app(redis_sentinels.url, prefix)
    moved = client_with(after, sid)
    assert moved.get("/get/a").text == "1"
    moved.get("/set/b/2")
    assert client_with(before, sid).get("/dump").get_json() == {"a": "1", "b": "2"}


def test_sentinels_with_their_own_password(tmp_path: Path) -> None:
    """Sentinels that require a password (``requirepass`` in sentinel.conf) are reached with
    SESSION_REDIS_SENTINEL_PASSWORD; without it, requests get 503, never 500."""
    with RedisSentinels(tmp_path / "s", sentinel_password="s3nt:n@l") as sentinels:
        app = redis_app(
            sentinels.url, "pw:", SESSION_REDIS_SENTINEL_PASSWORD="s3nt:n@l", SESSION_LOCK_TIMEOUT=1
        )
        client = app.test_client()
        assert [client.get("/inc").text for _ in range(3)] == ["1", "2", "3"]
        refused = redis_app(sentinels.url, "pw:", SESSION_LOCK_TIMEOUT=1).test_client()
        response = refused.get("/inc")
        assert response.status_code == 503
        assert "Retry-After" in response.headers


def _config(sentinels: RedisSentinels, wait: int) -> dict[str, str]:
    config = {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": sentinels.url,
        "SESSION_REDIS_PREFIX": "k:",
        "SESSION_REDIS_CONNECT_TIMEOUT": 0.5,
        "SESSION_REDIS_TIMEOUT": 1.0,
        # A lock whose release a failover lost blocks its session this long.
        "SESSION_REDIS_LOCK_TTL": 3.0,
        "SESSION_REDIS_WAIT_REPLICAS": wait,
        "SESSION_REDIS_WAIT_TIMEOUT": 0.5,
    }
    return {"FBS_CONFIG_JSON": json.dumps(config)}


GUNICORN = ("-w", "2", "-k", "gthread", "--threads", "4")


@pytest.mark.parametrize("wait", [0, 1], ids=["no-wait", "wait-1"])
@pytest.mark.parametrize(
    ("how", "shape"),
    [
        ("sentinel-failover", "shared-counter"),
        ("sigkill", "shared-counter"),
        ("sigkill", "200-sessions"),
    ],
)
def test_failover_under_load(tmp_path: Path, how: str, shape: str, wait: int) -> None:
    """The primary goes away under gunicorn load, by ``SENTINEL FAILOVER`` or SIGKILL (then
    it comes back, empty, as the new primary's replica): requests answer
    200 or 503, never 500, recover by themselves, and with WAIT 1 no acknowledged update is
    lost."""
    with (
        RedisSentinels(tmp_path / "sentinel") as sentinels,
        gunicorn(tmp_path, *GUNICORN, lock_timeout=8.0, env=_config(sentinels, wait)) as server,
    ):
        if shape == "shared-counter":
            first = server.client()
            try:
                assert first.get("/inc").status == 200
            finally:
                first.close()
            slots: list[list[str | None]] = [[first.sid] for _ in range(6)]
        else:
            slots = [[None] * 20 for _ in range(10)]
        old = sentinels.current_primary()

        def fail() -> None:
            if how == "sigkill":
                old.kill()
            else:
                with sentinels.sentinels[0].client() as c:
                    c("SENTINEL", "FAILOVER", sentinels.SERVICE)

        def recovered() -> None:
            deadline = time.monotonic() + 60
            while sentinels.primary_port() == old.port:
                assert time.monotonic() < deadline, "no failover"
                time.sleep(0.05)
            if how == "sigkill":
                # Back, empty, as a replica of the new primary (as a supervisor restarting
                # it would; Sentinel would otherwise demote it only seconds later).
                old.extra += ["--replicaof", "127.0.0.1", str(sentinels.primary_port())]
                old.start()
            sentinels.wait_replicated(timeout=60)

        numbers = drive_failover(server.port, slots, fail, recovered)
        assert "Traceback" not in server.log.read_text(), server.log_tail()
    name = f"sentinel-{how}-{shape}-{'wait1' if wait else 'nowait'}"
    report(tmp_path / "failover.json", name, numbers.as_dict())
    assert numbers.errors == 0, numbers
    assert numbers.recovery < 15, numbers
    if wait:
        assert numbers.lost == 0, numbers
