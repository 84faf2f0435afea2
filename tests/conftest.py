"""Fixtures only (shared helpers are in ``helpers.py``): a factory for real Flask apps using
the extension on a temp data dir, a fake clock, and the one ``redis-server`` of the run;
and the one place that decides which tests cannot run on Windows (``posix_only``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import sweeper
from helpers import POSIX, FakeClock, MakeApp, build_app
from postgres_server import PostgresServer
from postgres_server import running_server as running_postgres
from redis_ha import RedisCluster, RedisSentinels, running
from redis_server import RedisServer, running_server

# -- POSIX-only tests -------------------------------------------------------------------
# The suite runs on Windows in the release workflow (docs/platforms.md). What cannot run
# there is marked ``posix_only`` (registered in pyproject.toml) in one of three ways, all
# applied here: a whole module (``POSIX_ONLY_MODULES``), every test using a fixture
# (``POSIX_ONLY_FIXTURES``), or a test or parameter marked in its module with
# ``@pytest.mark.posix_only(reason="...")``. Where POSIX is missing (``helpers.POSIX``),
# each is skipped with its reason. Database servers are POSIX-only however a test starts
# one (a fixture, ``request.getfixturevalue``, its own ``running_server``): their start-up
# helpers skip (``helpers.require_posix``). Module-level code must not touch POSIX-only
# modules or names (``fcntl``, ``pwd``, ``signal.SIGKILL``, ``os.geteuid``, a 'fork'
# multiprocessing context): a collection error fails the whole Windows run.
# tests/test_windows_sim.py checks that the suite collects without them
# (tests/windows_sim.py), and ``python tests/windows_sim.py -m "not posix_only"`` runs
# what Windows runs with them gone.

POSIX_ONLY_MODULES: dict[str, str] = {
    "test_fork_safety": "os.fork",
    "test_servers": "gunicorn (fcntl, fork)",
    "test_fd_cache": "the descriptor cache (none on Windows) and /proc/self/fd",
    "test_faults": "RLIMIT_FSIZE, tmpfs mounts and POSIX modes",
    "test_users_crash": "SIGKILL of forked workers",
    "test_browser": "Debian's chromium and chromedriver",
    "test_redis_cluster": "redis-server processes, killed with SIGKILL",
    "test_redis_sentinel": "redis-server and redis-sentinel processes, killed with SIGKILL",
    "test_redis_hardening": "redis-server stopped with SIGSTOP",
    "test_windows_sim": "simulates Windows on POSIX (on Windows the real suite runs)",
}

POSIX_ONLY_FIXTURES: dict[str, str] = {
    "redis_server": "redis-server (Unix socket, SIGKILL)",
    "redis_cluster": "redis-server processes (SIGKILL)",
    "redis_sentinels": "redis-sentinel processes (SIGKILL)",
    "postgres_server": "PostgreSQL cluster (initdb, runuser, Unix socket)",
}


def _posix_only_reason(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("posix_only")
    if marker is not None:
        return str(marker.kwargs.get("reason") or (marker.args[0] if marker.args else ""))
    module = item.module.__name__ if getattr(item, "module", None) else ""
    if module in POSIX_ONLY_MODULES:
        return POSIX_ONLY_MODULES[module]
    for name in getattr(item, "fixturenames", ()):
        if name in POSIX_ONLY_FIXTURES:
            return POSIX_ONLY_FIXTURES[name]
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = _posix_only_reason(item)
        if reason is None:
            continue
        if item.get_closest_marker("posix_only") is None:
            item.add_marker(pytest.mark.posix_only(reason=reason))
        if not POSIX:
            item.add_marker(pytest.mark.skip(reason=f"POSIX only: {reason}"))


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
