"""What only the PostgreSQL backend does (the shared behaviour is in ``test_backends.py``),
against a real PostgreSQL: the run's cluster (``postgres_server``), one table per test.

The table and its migration (``init-db``, idempotent; a role without DDL rights gets a
clear 503, never DDL), settings checked at ``init_app``, the session lock (a waiting
request pins no connection; a save whose lock was lost is refused), the sweep by the
indexed expiry column, and failures: unreachable server, a statement held up past the
statement timeout, a server restarted under load (503s, then recovery by itself, never a
500), a worker SIGKILLed mid-request (its connections go, its lock lapses or goes with
them); gunicorn with 4 workers loses no update on one shared session nor on many
sessions, nor gunicorn's threaded workers with a small pool.

The tests of the lock and of failures run in both lock modes (the ``lock_mode``
fixture: ``SESSION_DATABASE_LOCK`` 'row' and 'advisory'); what does not depend on the
mode (the table, settings, TLS, unreachable servers) runs once, with the default 'row',
and so does the slowest test whose other mode adds no coverage:
``test_gunicorn_many_sessions`` (session creation is the same INSERT in both modes; the
advisory lock under gunicorn is covered by the shared-session, killed-worker and restart
tests).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import _core
from flask_beaker_session.errors import (
    ConfigurationError,
    LockTimeoutError,
    StoreUnavailableError,
)
from helpers import COOKIE, FakeClock, build_app, client_with, cookie_of, interface_of, store_of
from postgres_server import PostgresServer, digest, running_server, table_for
from redis_server import free_port, run_child
from test_servers import Server, _dump, _new_session, gunicorn

SECRET = "pg-test-secret"


@pytest.fixture
def table(tmp_path: Path) -> str:
    return table_for(tmp_path.name)


@pytest.fixture(params=["row", "advisory"])
def lock_mode(request: pytest.FixtureRequest) -> str:
    """``SESSION_DATABASE_LOCK`` of a test that runs in both lock modes."""
    mode: str = request.param
    return mode


def advisory_locks(server: PostgresServer) -> int:
    """Advisory locks granted now (any connection): the advisory mode's session locks."""
    return int(server.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"))


def lock_rows(server: PostgresServer, table: str) -> int:
    """Rows whose lock row is taken (lapsed or not): the row mode's session locks."""
    return int(server.psql(f'SELECT count(*) FROM "{table}" WHERE lock_token IS NOT NULL'))


def locks_held(server: PostgresServer, table: str, mode: str) -> int:
    """Session locks held now in ``mode``."""
    return advisory_locks(server) if mode == "advisory" else lock_rows(server, table)


def pg_config(server: PostgresServer, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "SESSION_TYPE": "postgresql",
        "SESSION_DATABASE_URL": server.url(),
        "SESSION_DATABASE_TABLE": table,
        "SECRET_KEY": SECRET,
        **extra,
    }


def pg_app(tmp_path: Path, server: PostgresServer, table: str, **extra: Any) -> Flask:
    return build_app(tmp_path / "unused", **pg_config(server, table, **extra))


def test_row_keyed_by_digest_with_indexed_expiry(
    tmp_path: Path, postgres_server: PostgresServer, table: str, clock: FakeClock
) -> None:
    """The first request creates the table (and the expires_at index); a session is one
    row under the SHA-256 of its id (the id itself is nowhere), expiring an idle timeout
    after its last save on the app's clock."""
    app = pg_app(tmp_path, postgres_server, table, SESSION_TIMEOUT=600)
    clock.install(app)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    rows = postgres_server.psql(f'SELECT id, expires_at FROM "{table}"').splitlines()
    assert len(rows) == 1
    row_id, expires = rows[0].split("|")
    assert row_id == digest(sid)
    assert float(expires) == pytest.approx(clock.now + 600, abs=0.01)
    indexes = postgres_server.psql(f"SELECT indexdef FROM pg_indexes WHERE tablename = '{table}'")
    assert "(expires_at)" in indexes
    storage = postgres_server.psql(
        f"SELECT attstorage FROM pg_attribute WHERE attrelid = '\"{table}\"'::regclass "
        "AND attname = 'record'"
    )
    assert storage == "e"  # out of line when large, never compressed
    assert sid not in postgres_server.psql(f'SELECT record::text FROM "{table}"')


def test_statements_and_round_trips_per_request(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """What a request costs the server, counted in its own statement log
    (`log_statement=all` for this store's connection, which prepared its statements
    during the warm-up): a new session is one statement (the INSERT). Lock row: a
    read-write request two (lock+read, save+release), a read-only one two (lock+read,
    release). Advisory: a read-write request four in two round trips
    (pg_try_advisory_lock + SELECT, then UPDATE + pg_advisory_unlock, each pair
    pipelined), a read-only one three, all read-only (pg_try_advisory_lock + SELECT,
    then the unlock). Either way the read-only request's release is sent without waiting
    for its answer: the request waits for one answer only, so its statement is logged by
    the time the next request's answer arrives."""
    name = f"fbs-count-{table}"
    url = postgres_server.url() + f"&application_name={name}&options=-c%20log_statement%3Dall"
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=url,
        SESSION_TIMEOUT=3600,
        SESSION_SWEEP_INTERVAL=None,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    client = app.test_client()
    for _ in range(3):  # prepares every statement below on the one connection
        client.get("/inc")
        client.get("/get/n")
    pid = postgres_server.psql(
        f"SELECT pid FROM pg_stat_activity WHERE application_name = '{name}'"
    )
    assert pid.isdigit()  # one connection
    log = postgres_server.log

    def executed(since: int) -> list[str]:
        with open(log, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        return [line for line in lines if f"[{pid}] LOG:  execute " in line]

    def count(requests: Any, expected: int) -> list[str]:
        since = log.stat().st_size
        requests()
        wait_for(lambda: len(executed(since)) >= expected)
        return executed(since)

    def kinds(lines: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in lines:
            text = line.split(": ", 2)[-1]
            kind = next(
                k for k in ("pg_try_advisory_lock", "pg_advisory_unlock", "SELECT record",
                            "WITH got", "UPDATE", "INSERT") if k in text
            )  # fmt: skip
            found[kind] = found.get(kind, 0) + 1
        return found

    n = 20
    if lock_mode == "row":
        read_write = count(lambda: [client.get("/inc") for _ in range(n)], 2 * n)
        assert kinds(read_write) == {"WITH got": n, "UPDATE": n}
        read_only = count(lambda: [client.get("/get/n") for _ in range(n)], 2 * n)
        assert kinds(read_only) == {"WITH got": n, "UPDATE": n}
    else:
        read_write = count(lambda: [client.get("/inc") for _ in range(n)], 4 * n)
        assert kinds(read_write) == {
            "pg_try_advisory_lock": n, "SELECT record": n, "UPDATE": n, "pg_advisory_unlock": n
        }  # fmt: skip
        read_only = count(lambda: [client.get("/get/n") for _ in range(n)], 3 * n)
        assert kinds(read_only) == {
            "pg_try_advisory_lock": n, "SELECT record": n, "pg_advisory_unlock": n
        }  # fmt: skip
    fresh = app.test_client()
    new = count(lambda: fresh.get("/inc"), 1)
    assert len(new) == 1
    # Prepared once: each statement is executed by name, never parsed again.
    assert not any("execute <unnamed>" in line for line in read_write + read_only + new)


def test_lock_and_release_never_wait_for_the_wal_flush(
    tmp_path: Path, table: str, lock_mode: str
) -> None:
    """Taking and releasing the lock never wait for the WAL flush or a synchronous
    standby; saves still wait. Lock row: they change only the lock columns and commit
    asynchronously (`LOCK_ONLY` in store/postgres/lock.rs); advisory: the advisory lock
    functions and the read are read-only statements, with nothing to commit. Shown on a
    cluster of its own where no waiting commit can complete: `synchronous_commit=on` and
    a synchronous standby that never comes. Read-only requests (lock + pipelined release,
    over and over) go through and leave the lock free; a read-write request's save waits
    for the standby, so it is a 503 after SESSION_DATABASE_TIMEOUT."""
    with running_server() as server:
        url = server.url() + "&options=-c%20synchronous_commit%3Don"
        app = pg_app(
            tmp_path,
            server,
            table,
            SESSION_DATABASE_URL=url,
            SESSION_DATABASE_TIMEOUT=0.5,
            SESSION_SWEEP_INTERVAL=None,
            SESSION_DATABASE_LOCK=lock_mode,
        )
        client = app.test_client()
        assert client.get("/set/a/1").status_code == 200
        server.psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        server.psql("SELECT pg_reload_conf()")
        wait_for(lambda: server.psql("SHOW synchronous_standby_names") == "nobody")
        for _ in range(5):
            assert client.get("/get/a").text == "1"
        wait_for(lambda: locks_held(server, table, lock_mode) == 0)
        response = client.get("/set/a/2")
        assert response.status_code == 503
        server.psql("ALTER SYSTEM RESET synchronous_standby_names")
        server.psql("SELECT pg_reload_conf()")


def test_touch_writes_only_the_access_time(
    tmp_path: Path, postgres_server: PostgresServer, table: str, clock: FakeClock, lock_mode: str
) -> None:
    """A read-only request past the touch interval refreshes touched_at and expires_at,
    never the record; the session then outlives its first idle deadline."""
    app = pg_app(
        tmp_path, postgres_server, table, SESSION_TIMEOUT=100, SESSION_DATABASE_LOCK=lock_mode
    )
    clock.install(app)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    before = postgres_server.raw(table, sid)
    clock.advance(60)
    assert client.get("/get/a").text == "1"
    assert postgres_server.raw(table, sid) == before
    touched = postgres_server.psql(f'SELECT touched_at, expires_at FROM "{table}"').split("|")
    assert float(touched[0]) == pytest.approx(clock.now, abs=0.01)
    assert float(touched[1]) == pytest.approx(clock.now + 100, abs=0.01)
    clock.advance(60)  # 120 s after the save, 60 s after the touch
    assert client.get("/get/a").text == "1"


def test_init_db_is_idempotent(tmp_path: Path, postgres_server: PostgresServer, table: str) -> None:
    """``flask beaker-session init-db`` creates the table once; run again it changes
    nothing and says so; sessions work on the table it made."""
    app = pg_app(tmp_path, postgres_server, table, SESSION_DATABASE_CREATE=False)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["beaker-session", "init-db"])
    assert first.exit_code == 0, first.output
    assert "created" in first.output and table in first.output
    second = runner.invoke(args=["beaker-session", "init-db"])
    assert second.exit_code == 0, second.output
    assert "already exists" in second.output
    assert (
        postgres_server.psql(f"SELECT count(*) FROM pg_indexes WHERE tablename = '{table}'") == "2"
    )
    client = app.test_client()
    assert client.get("/inc").text == "1"
    assert client.get("/inc").text == "2"


def test_init_db_on_other_backends_creates_nothing(tmp_path: Path) -> None:
    app = build_app(tmp_path / "sessions")
    result = app.test_cli_runner().invoke(args=["beaker-session", "init-db"])
    assert result.exit_code == 0
    assert "nothing to create" in result.output
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())


def test_stats_sweep_clear_commands(
    tmp_path: Path, postgres_server: PostgresServer, table: str, clock: FakeClock, lock_mode: str
) -> None:
    """stats counts rows, sweep deletes the expired ones by expires_at and keeps the live
    ones, clear deletes everything."""
    app = pg_app(
        tmp_path, postgres_server, table, SESSION_TIMEOUT=100, SESSION_DATABASE_LOCK=lock_mode
    )
    clock.install(app)
    for _ in range(3):
        app.test_client().get("/inc")
    clock.advance(150)
    for _ in range(2):
        app.test_client().get("/inc")
    runner = app.test_cli_runner()
    stats = runner.invoke(args=["beaker-session", "stats", "--json"])
    data = json.loads(stats.output)
    assert (data["backend"], data["records"], data["expired"], data["live"]) == (
        "postgresql",
        5,
        3,
        2,
    )
    assert "postgres@127.0.0.1" in data["store"]
    swept = runner.invoke(args=["beaker-session", "sweep"])
    assert "removed 3" in swept.output, swept.output
    assert postgres_server.psql(f'SELECT count(*) FROM "{table}"') == "2"
    cleared = runner.invoke(args=["beaker-session", "clear", "--yes"])
    assert "removed 2" in cleared.output, cleared.output
    assert postgres_server.psql(f'SELECT count(*) FROM "{table}"') == "0"


def test_sweeper_thread_deletes_expired_rows(
    tmp_path: Path, postgres_server: PostgresServer, table: str, clock: FakeClock, lock_mode: str
) -> None:
    """The automatic sweeper's pass on PostgreSQL: expired rows deleted by the indexed
    expiry column, live rows and a row locked by a live request kept (its lock row, or
    its advisory lock, which the sweep tries for each row)."""
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_TIMEOUT=100,
        SESSION_SWEEP_INTERVAL=600,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    clock.install(app)
    old = [app.test_client() for _ in range(3)]
    for client in old:
        client.get("/inc")
    clock.advance(150)
    app.test_client().get("/inc")
    sweeper = interface_of(app).sweeper
    assert sweeper is not None
    locked_sid = cookie_of(old[0])
    assert locked_sid is not None
    _, held = store_of(app).open(locked_sid, clock.now - 150)  # as a request from before
    assert held is not None
    try:
        report = sweeper.sweep_once()
    finally:
        held.release()
    assert report is not None and report.expired == report.removed == 2
    assert postgres_server.psql(f'SELECT count(*) FROM "{table}"') == "2"


def test_read_only_role_never_runs_ddl(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """A role with only SELECT/INSERT/UPDATE/DELETE on the table: with the table created
    by init-db it works (nothing else is sent); with the table missing it gets a 503
    saying what to run, whether creating is allowed (refused by the server) or not (never
    tried), and the table stays missing."""
    role = f"ro_{table}"
    postgres_server.psql(f'CREATE ROLE "{role}" LOGIN')
    postgres_server.psql(f'REVOKE CREATE ON SCHEMA public FROM "{role}"')
    missing = f"{table}_m"
    for create in (True, False):
        app = pg_app(
            tmp_path,
            postgres_server,
            missing,
            SESSION_DATABASE_CREATE=create,
            SESSION_DATABASE_URL=postgres_server.url(role),
        )
        response = app.test_client().get("/inc")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert postgres_server.psql(f"SELECT to_regclass('\"{missing}\"') IS NULL") == "t"
    admin = pg_app(tmp_path, postgres_server, table)
    assert admin.test_cli_runner().invoke(args=["beaker-session", "init-db"]).exit_code == 0
    postgres_server.psql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO "{role}"')
    app = pg_app(tmp_path, postgres_server, table, SESSION_DATABASE_URL=postgres_server.url(role))
    client = app.test_client()
    assert [client.get("/inc").text for _ in range(3)] == ["1", "2", "3"]


def test_missing_table_message_says_what_to_run(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """With SESSION_DATABASE_CREATE off and no table, the error (logged with the 503)
    names the table and init-db."""
    app = pg_app(tmp_path, postgres_server, table, SESSION_DATABASE_CREATE=False)
    assert app.test_client().get("/inc").status_code == 503
    with pytest.raises(StoreUnavailableError, match=f"{table}.*init-db"):
        store_of(app).open("ab" * 16, 0.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSION_DATABASE_URL", None),
        ("SESSION_DATABASE_URL", "mysql://u@h/db"),
        ("SESSION_DATABASE_URL", "postgresql://u:secretpw@h/db?sslmode=verify-full"),
        ("SESSION_DATABASE_URL", "postgresql://u:secretpw@h:notaport/db"),
        ("SESSION_DATABASE_TABLE", "sessions; drop table x"),
        ("SESSION_DATABASE_TABLE", "a" * 53),
        ("SESSION_DATABASE_SCHEMA", "my-schema"),
        ("SESSION_DATABASE_POOL_SIZE", 0),
        ("SESSION_DATABASE_TIMEOUT", -1),
        ("SESSION_DATABASE_CONNECT_TIMEOUT", "soon"),
        ("SESSION_DATABASE_LOCK_TTL", 0),
        ("SESSION_DATABASE_CREATE", "perhaps"),
        ("SESSION_DATABASE_TLS_CA_CERTS", "/nonexistent/ca.pem"),
        ("SESSION_DATABASE_LOCK", "advisory-xact"),
        ("SESSION_DATABASE_LOCK", None),
        ("SESSION_DATABASE_LOCK", 1),
    ],
)
def test_bad_settings_rejected_at_init(tmp_path: Path, key: str, value: Any) -> None:
    """Each bad value is a ConfigurationError at init_app naming its key (and never
    showing the URL's password)."""
    config = {
        "SESSION_TYPE": "postgresql",
        "SESSION_DATABASE_URL": "postgresql://u@127.0.0.1:1/db",
        "SECRET_KEY": SECRET,
        key: value,
    }
    with pytest.raises(ConfigurationError, match=key) as info:
        build_app(tmp_path, **config)
    assert "secretpw" not in str(info.value)


def test_lock_mode_setting(tmp_path: Path) -> None:
    """SESSION_DATABASE_LOCK: 'row' by default, 'advisory' (any case) reaches the native
    backend as its enum; a bad value names the accepted ones; the advisory lock needs a
    pool of two connections at least (one is kept by a request holding its session)."""
    base = {
        "SESSION_TYPE": "postgresql",
        "SESSION_DATABASE_URL": "postgresql://u@127.0.0.1:1/db",
        "SECRET_KEY": SECRET,
    }
    backend = store_of(build_app(tmp_path, **base)).config.backend
    assert isinstance(backend, _core.PostgresBackend)
    assert backend.lock == _core.PostgresLock.Row
    advisory = build_app(tmp_path, **base, SESSION_DATABASE_LOCK=" Advisory ")
    backend = store_of(advisory).config.backend
    assert isinstance(backend, _core.PostgresBackend)
    assert backend.lock == _core.PostgresLock.Advisory
    with pytest.raises(ConfigurationError, match=r"SESSION_DATABASE_LOCK.*'row' or 'advisory'"):
        build_app(tmp_path, **base, SESSION_DATABASE_LOCK="table")
    build_app(tmp_path, **base, SESSION_DATABASE_POOL_SIZE=1)  # fine with the lock row
    with pytest.raises(ConfigurationError, match=r"SESSION_DATABASE_POOL_SIZE.*from 2"):
        build_app(tmp_path, **base, SESSION_DATABASE_POOL_SIZE=1, SESSION_DATABASE_LOCK="advisory")


def test_secret_key_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        build_app(
            tmp_path,
            SESSION_TYPE="postgresql",
            SESSION_DATABASE_URL="postgresql://u@127.0.0.1:1/db",
            SECRET_KEY=None,
        )


def test_init_does_not_connect_and_unreachable_gives_503_quickly(tmp_path: Path) -> None:
    """init_app opens nothing (a closed port is fine); a request then gets a 503 with
    Retry-After within the connect timeout, and no traceback."""
    app = build_app(
        tmp_path,
        SESSION_TYPE="postgresql",
        SESSION_DATABASE_URL=f"postgresql://u@127.0.0.1:{free_port()}/db?sslmode=disable",
        SESSION_DATABASE_CONNECT_TIMEOUT=1.0,
        SECRET_KEY=SECRET,
    )
    started = time.monotonic()
    response = app.test_client().get("/inc")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "Traceback" not in response.text
    assert time.monotonic() - started < 3


def test_silent_server_gives_503_within_the_timeouts(tmp_path: Path) -> None:
    """A server that accepts connections and never answers: 503 within connect timeout +
    statement timeout (the client bounds the handshake itself)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        app = build_app(
            tmp_path,
            SESSION_TYPE="postgresql",
            SESSION_DATABASE_URL=f"postgresql://u@127.0.0.1:{port}/db?sslmode=disable",
            SESSION_DATABASE_CONNECT_TIMEOUT=0.5,
            SESSION_DATABASE_TIMEOUT=0.5,
            SECRET_KEY=SECRET,
        )
        started = time.monotonic()
        assert app.test_client().get("/inc").status_code == 503
        assert time.monotonic() - started < 2.5


def test_tls_verifies_the_server_certificate(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """sslmode=require with the CA that signed the server's certificate: sessions work
    over TLS (pg_stat_ssl says so); with another CA (or the public ones): 503, never a
    connection that skips the check."""
    name = f"fbs-tls-{table}"
    url = postgres_server.url().replace(
        "sslmode=disable",
        f"sslmode=require&application_name={name}&options=-c%20search_path%3Dpublic",
    )
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=url,
        SESSION_DATABASE_TLS_CA_CERTS=str(postgres_server.ca_pem),
    )
    client = app.test_client()
    assert [client.get("/inc").text for _ in range(2)] == ["1", "2"]
    assert postgres_server.psql(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        f"WHERE a.application_name = '{name}'"
    ) == "t"  # fmt: skip
    for ca in (str(postgres_server.other_ca_pem), None):
        untrusted = pg_app(
            tmp_path,
            postgres_server,
            table,
            SESSION_DATABASE_URL=url,
            SESSION_DATABASE_TLS_CA_CERTS=ca,
        )
        assert untrusted.test_client().get("/inc").status_code == 503


def test_stalled_server_gives_503_then_the_lock_is_free_at_once(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """The server process of our connection stops answering (SIGSTOP) in the middle of
    the lock statement: the client-side timeout gives a 503 within
    SESSION_DATABASE_TIMEOUT (the server-side statement_timeout cannot fire: it is
    stopped), and the client closes that connection. Resumed, the server process
    finishes the statement. Lock row: it takes the lock for the gone request; this
    process remembers that token (an orphan), so its next request of the session takes
    the lock over at once. Advisory: it may take the lock, but finds its connection
    closed and exits, which drops the lock. Either way the next request gets the session
    at once, not after SESSION_DATABASE_LOCK_TTL."""
    name = f"fbs-stall-{table}"
    url = postgres_server.url() + f"&application_name={name}"
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=url,
        SESSION_DATABASE_TIMEOUT=0.5,
        SESSION_DATABASE_LOCK_TTL=60,
        SESSION_LOCK_TIMEOUT=2,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    client = app.test_client()
    # (twice: the connection has then prepared the lock statement, and sends it at once)
    assert [client.get("/inc").text for _ in range(2)] == ["1", "2"]
    pid = int(
        postgres_server.psql(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{name}'")
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert client.get("/inc").status_code == 503
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(pid, signal.SIGCONT)
    if lock_mode == "row":
        wait_for(lambda: lock_rows(postgres_server, table) == 1)
    else:
        wait_for(
            lambda: (
                postgres_server.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")
                == "0"
            )
        )
    started = time.monotonic()
    assert client.get("/inc").text == "3"
    assert time.monotonic() - started < 1.5


def test_statement_timeout_gives_503(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """Another client holds the table locked: the request's statement gives up after
    SESSION_DATABASE_TIMEOUT (server-side lock/statement timeout) with a 503, and the
    session works again once the other client lets go. The URL's own ``options`` (here
    synchronous_commit) are kept and the timeouts added to them. Advisory: the lock taken
    before the read timed out went with that connection (closed, never pooled)."""
    url = postgres_server.url() + "&options=-c%20synchronous_commit%3Doff"
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_TIMEOUT=0.5,
        SESSION_DATABASE_URL=url,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    client = app.test_client()
    assert client.get("/inc").text == "1"
    blocker = run_psql_background(
        postgres_server,
        f'BEGIN; LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;',
    )
    try:
        wait_for(lambda: postgres_server.psql(
            f"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            f"WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        ) == "1")  # fmt: skip
        started = time.monotonic()
        response = client.get("/inc")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert time.monotonic() - started < 2.0
    finally:
        blocker.wait(timeout=30)
    assert client.get("/inc").text == "2"
    wait_for(lambda: locks_held(postgres_server, table, lock_mode) == 0)


def run_psql_background(server: PostgresServer, sql: str) -> Any:
    import subprocess

    return subprocess.Popen(
        [server.psql_bin, "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
         "-d", "postgres", "-c", sql],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def test_server_turned_read_only_then_writable_again(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """As a failover seen from a pooled connection: the database stops taking writes
    (here: ``default_transaction_read_only``, and its connections are cut) → 503, never a
    500; once it takes writes again the next request succeeds by itself (a connection
    that met a read-only server is not kept)."""
    db = f"ro_{table}"
    postgres_server.psql(f'CREATE DATABASE "{db}"')
    url = postgres_server.url().replace("/postgres?", f"/{db}?")
    app = pg_app(
        tmp_path, postgres_server, table, SESSION_DATABASE_URL=url, SESSION_DATABASE_LOCK=lock_mode
    )
    client = app.test_client()
    assert client.get("/inc").text == "1"
    postgres_server.psql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
    postgres_server.psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    )
    assert client.get("/inc").status_code == 503
    assert client.get("/inc").status_code == 503
    postgres_server.psql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = off')
    assert client.get("/inc").text == "2"


def test_waiting_request_pins_no_connection(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """While one session's lock is held (by an open handle) and a request waits for it,
    requests of other sessions still run; the waiter gets the session as soon as the lock
    is released. Lock row: with a pool of ONE connection (nothing is kept between
    statements). Advisory: with a pool of THREE (the holder keeps one, where its lock
    lives; the other session's request keeps one while it holds its session: at most
    pool size - 1 do at once, so one is left for other statements)."""
    pool_size = 1 if lock_mode == "row" else 3
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_POOL_SIZE=pool_size,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    status, handle = store_of(app).open(sid, interface_of(app).clock())
    assert status == _core.OpenStatus.Found and handle is not None
    result: dict[str, Any] = {}

    def waiter() -> None:
        result["text"] = client_with(app, sid).get("/inc").text

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        time.sleep(0.3)  # the waiter polls the lock meanwhile
        assert thread.is_alive()
        other = app.test_client()
        assert [other.get("/inc").text for _ in range(3)] == ["1", "2", "3"]
    finally:
        handle.release()
    thread.join(timeout=10)
    assert result["text"] == "1"


def test_lapsed_lock_refuses_the_stale_save(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """A holder whose lock lapsed (SESSION_DATABASE_LOCK_TTL: the lock row's expiry on
    the server's clock; advisory: the server's idle_session_timeout closes the holder's
    connection, and the lock goes with it) and was taken by another request cannot
    overwrite the newer data: its save is refused."""
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_LOCK_TTL=0.3,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    client = app.test_client()
    client.get("/set/a/old")
    sid = cookie_of(client)
    assert sid is not None
    store = store_of(app)
    status, stale = store.open(sid, interface_of(app).clock())
    assert status == _core.OpenStatus.Found and stale is not None
    # As another process's request: another URL is another in-process lock scope.
    other_url = postgres_server.url() + "&application_name=other"
    other = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=other_url,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    time.sleep(0.4)
    assert client_with(other, sid).get("/set/a/new").status_code == 200
    with pytest.raises(LockTimeoutError):
        stale.save(stale.payload, interface_of(app).clock(), None)
    assert client_with(other, sid).get("/get/a").text == "new"


def test_worker_killed_mid_request_leaks_no_connection(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """A server process SIGKILLed while a request holds its session: its connections are
    gone from pg_stat_activity within seconds; its lock row lapses (lock TTL, 1 s here),
    its advisory lock goes with its connection (not after the lock TTL, a minute here),
    so the session is usable again with its last saved data."""
    name = f"fbs-kill-{table}"
    config = pg_config(
        postgres_server,
        table,
        SESSION_DATABASE_URL=postgres_server.url() + f"&application_name={name}",
        SESSION_DATABASE_LOCK_TTL=1.0 if lock_mode == "row" else 60.0,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    proc = run_child("serve", json.dumps(config))
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        sid = http_get(port, "/inc")[1]
        assert sid is not None

        def hold() -> None:
            with contextlib.suppress(OSError):  # the server dies under it
                http_get(port, "/hold", sid, timeout=30)

        holding = threading.Thread(target=hold)
        holding.daemon = True
        holding.start()
        assert proc.stdout.readline().strip() == "locked"
        assert postgres_server.connections(name) >= 1
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    wait_for(lambda: postgres_server.connections(name) == 0, timeout=10)
    if lock_mode == "advisory":
        assert advisory_locks(postgres_server) == 0
    app = pg_app(
        tmp_path, postgres_server, table, SESSION_LOCK_TIMEOUT=5, SESSION_DATABASE_LOCK=lock_mode
    )
    started = time.monotonic()
    assert client_with(app, sid).get("/inc").text == "2"
    if lock_mode == "advisory":
        assert time.monotonic() - started < 1.0


def test_hung_holder_is_bounded_by_the_lock_ttl(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """Advisory: a request that holds its session and then hangs, its TCP connection
    open (here: a handle never released), keeps the session at most
    SESSION_DATABASE_LOCK_TTL: the server's idle_session_timeout closes that connection
    and drops its advisory lock, so a request of another process waiting for the session
    gets it then. The hung process's own next request works too (its pooled
    connections, closed the same way, are replaced by themselves). (The lock row's
    equivalent, a lapsed lock, is `test_lapsed_lock_refuses_the_stale_save`.)"""
    name = f"fbs-hung-{table}"
    url = postgres_server.url() + f"&application_name={name}"
    app = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=url,
        SESSION_DATABASE_LOCK_TTL=0.5,
        SESSION_DATABASE_LOCK="advisory",
    )
    client = app.test_client()
    assert client.get("/inc").text == "1"
    sid = cookie_of(client)
    assert sid is not None
    status, hung = store_of(app).open(sid, interface_of(app).clock())
    assert status == _core.OpenStatus.Found and hung is not None
    assert advisory_locks(postgres_server) >= 1
    other_url = postgres_server.url() + "&application_name=other"
    other = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=other_url,
        SESSION_LOCK_TIMEOUT=5,
        SESSION_DATABASE_LOCK="advisory",
    )
    started = time.monotonic()
    assert client_with(other, sid).get("/inc").text == "2"
    waited = time.monotonic() - started
    assert 0.3 < waited < 2.0, waited
    assert postgres_server.connections(name) == 0
    with pytest.raises(LockTimeoutError):
        hung.save(hung.payload, interface_of(app).clock(), None)
    assert client_with(app, sid).get("/inc").text == "3"


def test_two_processes_contend_on_one_session(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """Two stores with separate in-process locks (as two worker processes: another URL
    is another lock scope) and four threads each increment one session: the database's
    lock serialises them, no update is lost, and no lock is left behind."""
    apps = [
        pg_app(
            tmp_path,
            postgres_server,
            table,
            SESSION_DATABASE_URL=postgres_server.url() + f"&application_name=p{i}",
            SESSION_LOCK_TIMEOUT=20,
            SESSION_DATABASE_LOCK=lock_mode,
        )
        for i in range(2)
    ]
    first = apps[0].test_client()
    assert first.get("/inc").text == "1"
    sid = cookie_of(first)
    assert sid is not None

    def work(app: Flask) -> list[int]:
        client = client_with(app, sid)
        return [client.get("/inc").status_code for _ in range(25)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [c for r in pool.map(work, apps * 4) for c in r]
    assert statuses == [200] * 200
    assert client_with(apps[1], sid).get("/get/n").text == "201"
    wait_for(lambda: locks_held(postgres_server, table, lock_mode) == 0)


def test_mixed_lock_modes_fail_closed(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """A rolling switch between the modes, two processes on one table, one of each (not
    a supported way to run, docs/postgresql.md: all workers switch together). A
    row-locking process never sees advisory locks, but the advisory mode respects the
    lock row: it waits while a lock row is live, and its save is refused (never a lost
    update) when a row-locking request changed the session while it held it."""
    row = pg_app(tmp_path, postgres_server, table, SESSION_LOCK_TIMEOUT=5)
    advisory = pg_app(
        tmp_path,
        postgres_server,
        table,
        SESSION_DATABASE_URL=postgres_server.url() + "&application_name=adv",
        SESSION_DATABASE_LOCK="advisory",
        SESSION_LOCK_TIMEOUT=0.3,
    )
    client = row.test_client()
    assert client.get("/inc").text == "1"
    sid = cookie_of(client)
    assert sid is not None
    # A live lock row keeps the advisory process out.
    status, held = store_of(row).open(sid, interface_of(row).clock())
    assert status == _core.OpenStatus.Found and held is not None
    try:
        assert client_with(advisory, sid).get("/inc").status_code == 503
    finally:
        held.release()
    assert client_with(advisory, sid).get("/inc").text == "2"
    # An advisory holder does not keep the row-locking process out, but its own save
    # then fails instead of overwriting that process's update.
    status, stale = store_of(advisory).open(sid, interface_of(advisory).clock())
    assert status == _core.OpenStatus.Found and stale is not None
    assert client_with(row, sid).get("/inc").text == "3"
    with pytest.raises(LockTimeoutError):
        stale.save(stale.payload, interface_of(advisory).clock(), None)
    assert client_with(advisory, sid).get("/get/n").text == "3"
    wait_for(lambda: advisory_locks(postgres_server) + lock_rows(postgres_server, table) == 0)


def test_rekey_waits_for_an_advisory_holder(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """Advisory: a request's write requires the record's header it read, which `rekey`
    changes; so `rekey` rewrites a record only under the session's advisory lock, waiting
    for a holder (bounded by SESSION_DATABASE_TIMEOUT). A request holding its session
    while the key rotates saves as usual, and `rekey` then finds that record written under
    the current key already."""
    old = pg_app(
        tmp_path, postgres_server, table, SECRET_KEY="old-key", SESSION_DATABASE_LOCK="advisory"
    )
    client = old.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    other = old.test_client()
    assert other.get("/set/a/1").status_code == 200
    rotated = pg_app(
        tmp_path,
        postgres_server,
        table,
        SECRET_KEY="new-key",
        SECRET_KEY_FALLBACKS=["old-key"],
        SESSION_DATABASE_LOCK="advisory",
        SESSION_DATABASE_TIMEOUT=10,
    )
    status, held = store_of(rotated).open(sid, interface_of(rotated).clock())
    assert status == _core.OpenStatus.Found and held is not None
    output: dict[str, str] = {}

    def rekey() -> None:
        result = rotated.test_cli_runner().invoke(args=["beaker-session", "rekey"])
        output["text"] = result.output

    thread = threading.Thread(target=rekey)
    thread.start()
    try:
        wait_for(
            lambda: (
                postgres_server.psql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                == "1"
            )
        )
        held.save(held.payload, interface_of(rotated).clock(), None)
    finally:
        thread.join(timeout=30)
    assert "re-encrypted 1 of 2 sessions" in output["text"], output["text"]
    assert "1 already under the current key" in output["text"], output["text"]
    new_only = pg_app(
        tmp_path, postgres_server, table, SECRET_KEY="new-key", SESSION_DATABASE_LOCK="advisory"
    )
    assert client_with(new_only, sid).get("/get/a").text == "1"


def http_get(
    port: int, path: str, sid: str | None = None, timeout: float = 10
) -> tuple[int, str | None]:
    """GET ``path`` with the session cookie; (status, session id from Set-Cookie)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Cookie": f"{COOKIE}={sid}"} if sid else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        new = cookie.split(";")[0].split("=", 1)[1] if cookie.startswith(COOKIE) else sid
        return response.status, new
    finally:
        conn.close()


# -- gunicorn, 4 workers ---------------------------------------------------------------

#: Sessions of the many-sessions test (each created, then incremented once more).
MANY = 1000


def pg_env(server: PostgresServer, table: str, **extra: Any) -> dict[str, str]:
    config = pg_config(server, table, **extra)
    config.pop("SECRET_KEY")  # server_app sets its own
    return {"FBS_CONFIG_JSON": json.dumps(config)}


def drive(server: Server, sid: str, count: int, keepalive: bool) -> Counter[int]:
    statuses: Counter[int] = Counter()
    client = server.client(sid, keepalive=keepalive)
    try:
        for _ in range(count):
            try:
                statuses[client.get("/inc").status] += 1
            except OSError:
                statuses[0] += 1
                client.close()
                client = server.client(sid, keepalive=keepalive)
    finally:
        client.close()
    return statuses


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-connect", "preload"])
def test_gunicorn_shared_session_loses_no_update(
    tmp_path: Path, postgres_server: PostgresServer, table: str, preload: bool, lock_mode: str
) -> None:
    """gunicorn -w 4: 8 clients x 25 increments of ONE session spread over the workers:
    every request a 200, the counter exactly 1 + 200. With ``--preload`` the master
    created and read the session (so it holds pooled connections) before forking: the
    workers use connections of their own."""
    env = pg_env(postgres_server, table, SESSION_DATABASE_LOCK=lock_mode)
    args = ["-w", "4"]
    if preload:
        env["FBS_WARMUP_FILE"] = str(tmp_path / "warm.sid")
        args.append("--preload")
    with gunicorn(tmp_path, *args, env=env) as server:
        if preload:
            sid = (tmp_path / "warm.sid").read_text()
            assert client_get_text(server, sid, "/inc") == "1"
        else:
            sid = _new_session(server)
        with ThreadPoolExecutor(max_workers=8) as pool:
            tallies = list(pool.map(lambda i: drive(server, sid, 25, i % 2 == 0), range(8)))
        total = sum(tallies, Counter())
        assert total == Counter({200: 200}), server.log_tail()
        assert _dump(server, sid)["n"] == 201
        # Several workers served (which ones win accept() is the kernel's choice: on a
        # loaded machine not all four need to).
        assert len(worker_pids(server)) >= 2


def test_gunicorn_threads_lose_no_update(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """gunicorn -w 2 -k gthread --threads 4 with a pool of 3 connections per worker:
    4 clients x 20 increments of ONE shared session and 4 clients x 20 on their own
    sessions at once. With the advisory lock at most 2 requests of a worker hold a
    session (each keeps its connection) and the others wait for one: every request a 200
    all the same, and no update lost."""
    env = pg_env(
        postgres_server, table, SESSION_DATABASE_POOL_SIZE=3, SESSION_DATABASE_LOCK=lock_mode
    )
    args = ("-w", "2", "-k", "gthread", "--threads", "4")
    with gunicorn(tmp_path, *args, lock_timeout=20.0, env=env) as server:
        shared = _new_session(server)
        own = [_new_session(server) for _ in range(4)]
        sids = [shared] * 4 + own
        with ThreadPoolExecutor(max_workers=8) as pool:
            tallies = list(pool.map(lambda s: drive(server, s, 20, True), sids))
        assert sum(tallies, Counter()) == Counter({200: 160}), server.log_tail()
        assert _dump(server, shared)["n"] == 81
        assert [_dump(server, sid)["n"] for sid in own] == [21] * 4
    wait_for(lambda: locks_held(postgres_server, table, lock_mode) == 0)


def client_get_text(server: Server, sid: str, path: str) -> str:
    client = server.client(sid)
    try:
        return client.get(path).text
    finally:
        client.close()


def worker_pids(server: Server) -> set[int]:
    pids = set()
    for _ in range(40):
        client = server.client(keepalive=False)
        try:
            pids.add(int(client.get("/pid").body))
        finally:
            client.close()
    return pids


def pg_client_ports(pid: int, pg_port: int) -> set[int]:
    """Local ports of the TCP connections process ``pid`` has to ``pg_port`` (from
    /proc: its socket descriptors, matched in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == pg_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


def test_gunicorn_worker_killed_mid_request_leaks_no_connection(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """gunicorn -w 2: a worker SIGKILLed while its request holds the session. Its
    connections (found by their client ports) leave pg_stat_activity; its lock row lapses
    (lock TTL 1 s), its advisory lock goes with the connection holding it, and the next
    requests of the session succeed with the last saved data on the other workers."""
    env = pg_env(
        postgres_server,
        table,
        SESSION_DATABASE_LOCK_TTL=1.0 if lock_mode == "row" else 60.0,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    with gunicorn(tmp_path, "-w", "2", lock_timeout=5.0, env=env) as server:
        sid = _new_session(server)
        holder = server.client(sid)
        result: dict[str, Any] = {}

        def hold() -> None:
            try:
                holder.get("/hold/k1")
            except (OSError, http.client.HTTPException) as exc:
                result["error"] = exc

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            victim = server.wait_pid_file("k1")
            ports = pg_client_ports(victim, postgres_server.port)
            assert ports, "the worker holds no connection to PostgreSQL"
            listed = postgres_server.psql("SELECT client_port FROM pg_stat_activity")
            assert ports <= {int(p) for p in listed.split() if p.isdigit()}
            os.kill(victim, signal.SIGKILL)
            thread.join(60)
        finally:
            server.open_gate("k1")
            holder.close()
        assert "error" in result

        def gone() -> bool:
            listed = postgres_server.psql("SELECT client_port FROM pg_stat_activity")
            return not ports & {int(p) for p in listed.split() if p.isdigit()}

        wait_for(gone, timeout=10)
        if lock_mode == "advisory":
            assert advisory_locks(postgres_server) == 0
        replies = [server.client(sid).get("/inc") for _ in range(3)]
        assert [r.status for r in replies] == [200] * 3
        assert [r.text for r in replies] == ["2", "3", "4"]
        assert all(r.pid != victim for r in replies)


def test_gunicorn_many_sessions(
    tmp_path: Path, postgres_server: PostgresServer, table: str
) -> None:
    """gunicorn -w 4: MANY sessions created by 8 clients, each then incremented once
    more: every request a 200, every counter exactly 2, MANY rows."""
    with gunicorn(tmp_path, "-w", "4", env=pg_env(postgres_server, table)) as server:

        def create(_: int) -> str:
            return _new_session(server)

        with ThreadPoolExecutor(max_workers=8) as pool:
            sids = list(pool.map(create, range(MANY)))
            tallies = list(pool.map(lambda s: drive(server, s, 1, False), sids))
        assert sum(tallies, Counter()) == Counter({200: MANY})
        assert postgres_server.psql(f'SELECT count(*) FROM "{table}"') == str(MANY)
        for sid in sids[:: MANY // 20]:
            assert _dump(server, sid)["n"] == 2


def test_server_restart_under_load(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """gunicorn -w 4 under load from 8 clients on their own sessions while PostgreSQL is
    stopped (fast shutdown) and started again: requests get 200 or 503, never a 500 nor a
    dropped connection; once it is back every client's requests succeed again by
    themselves, and no counter lost an acknowledged update. (Advisory: the connections
    holding locks die with the server, and their holders' saves are refused.)"""
    env = pg_env(
        postgres_server,
        table,
        SESSION_DATABASE_TIMEOUT=1.0,
        SESSION_DATABASE_CONNECT_TIMEOUT=1.0,
        SESSION_DATABASE_LOCK_TTL=2.0,
        SESSION_DATABASE_LOCK=lock_mode,
    )
    with gunicorn(tmp_path, "-w", "4", env=env) as server:
        sids = [_new_session(server) for _ in range(8)]
        stop = threading.Event()
        after: dict[str, Counter[int]] = {s: Counter() for s in sids}
        during: dict[str, Counter[int]] = {s: Counter() for s in sids}
        restarted = threading.Event()

        def load(sid: str) -> None:
            client = server.client(sid, keepalive=False)
            while not stop.is_set():
                phase = after if restarted.is_set() else during
                try:
                    status = client.get("/inc").status
                except OSError:
                    status = 0
                phase[sid][status] += 1

        threads = [threading.Thread(target=load, args=(s,)) for s in sids]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            postgres_server.stop("fast")
            time.sleep(1.0)
            postgres_server.start()
            time.sleep(0.2)
            restarted.set()
            time.sleep(4.0)  # (a lock taken before the stop lapses within 2 s)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            if not postgres_server.running():
                postgres_server.start()
        seen = sum(during.values(), Counter()) + sum(after.values(), Counter())
        assert set(seen) <= {200, 503}, (seen, server.log_tail())
        assert seen[503] > 0
        # Recovery: after the restart, the last requests of every client succeed.
        tail = {sid: _dump(server, sid)["n"] for sid in sids}
        for sid in sids:
            ok = during[sid][200] + after[sid][200] + 1
            maybe = during[sid][503] + after[sid][503]
            assert ok <= tail[sid] <= ok + maybe, (sid, tail[sid], during[sid], after[sid])
            assert after[sid][200] > 0, after[sid]
        assert "Traceback" not in server.log.read_text()


def test_fork_after_init_uses_its_own_connections(
    tmp_path: Path, postgres_server: PostgresServer, table: str, lock_mode: str
) -> None:
    """A store used in the parent, then forked: the child works on new connections of
    its own and the parent's still work afterwards (the child never closed them)."""
    app = pg_app(tmp_path, postgres_server, table, SESSION_DATABASE_LOCK=lock_mode)
    client = app.test_client()
    assert client.get("/inc").text == "1"
    sid = cookie_of(client)
    assert sid is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            text = client_with(app, sid).get("/inc").text
            os.write(write, text.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read, 100) == b"2"
    os.close(read)
    assert client.get("/inc").text == "3"
