"""Fixtures only (shared helpers are in ``helpers.py``): a factory for real Flask apps using
the extension on a temp data dir, a fake clock, and the one ``redis-server`` of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import sweeper
from helpers import FakeClock, MakeApp, build_app
from postgres_server import PostgresServer
from postgres_server import running_server as running_postgres
from redis_ha import RedisCluster, RedisSentinels, running
from redis_server import RedisServer, running_server


@pytest.fixture(autouse=True)
def _stop_sweeper_threads() -> Iterator[None]:
    """Apps built without ``helpers.plain_app`` sweep by default (a background thread per
    app, started at its first request): stop them when the test ends."""
    yield
    sweeper.stop_all()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def make_app(data_dir: Path) -> MakeApp:
    def factory(**config: Any) -> Flask:
        config.setdefault("SESSION_DATA_DIR", str(data_dir))
        return build_app(**{"data_dir": config.pop("SESSION_DATA_DIR")}, **config)

    return factory


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real time; ``clock.install(app)`` makes it the app's,
    ``clock.advance(seconds)`` lets time pass without waiting."""
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The one ``redis-server`` of the run, on a free port of 127.0.0.1 (tests keep apart
    by key prefix, see ``prefix``). Skipped when the binary is missing, except under
    CI."""
    with running_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The one PostgreSQL cluster of the run (``initdb`` in a temp dir, a free port of
    127.0.0.1; tests keep apart by table, see ``postgres_server.table_for``). Skipped when
    the binaries are missing, except under CI."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """A Redis key prefix of this test only, so tests never see each other's keys."""
    return f"t:{tmp_path.name}:"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 primaries + 3 replicas shared by the run (tests keep apart by
    key prefix); tests that kill nodes start their own (``redis_ha.RedisCluster``)."""
    with running(RedisCluster(tmp_path_factory.mktemp("cluster"))) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinels]:
    """A primary + replica watched by 3 Sentinels, shared by the run; tests that fail it
    over start their own (``redis_ha.RedisSentinels``)."""
    with running(RedisSentinels(tmp_path_factory.mktemp("sentinel"))) as sentinels:
        yield sentinels
