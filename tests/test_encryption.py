"""Encryption at rest (issue 17): a session value never reaches the data dir, a Redis dump
(RDB and AOF) or the PostgreSQL cluster in the clear; a tampered, truncated, moved or
foreign-key record reads as a fresh session (no 500, nothing unpickled); key rotation
through ``SECRET_KEY_FALLBACKS`` and ``flask beaker-session rekey``; 0.3 records still load
and are sealed by their next save; ``SESSION_ENCRYPT = False`` opts out.

The proofs scan every byte the store wrote for a random marker: found with encryption off
(so the scan can see it), never with it on."""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session.errors import ConfigurationError
from helpers import build_app, client_with, cookie_of, record_path
from postgres_server import PostgresServer, table_for
from redis_server import RedisServer, running_server
from test_cli import write_legacy

HEADER_LEN = 64


class Probe:
    """A session value that counts how often it is unpickled."""

    loads = 0

    def __init__(self) -> None:
        self.tag = "probe"  # a state, so that unpickling calls __setstate__

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).loads += 1
        self.__dict__.update(state)


def marker() -> str:
    return f"MARKER-{uuid.uuid4().hex}"


def with_probe_routes(app: Flask) -> Flask:
    @app.route("/probe/set")
    def probe_set() -> str:
        flask_session["probe"] = Probe()
        return "ok"

    @app.route("/probe/get")
    def probe_get() -> str:
        return type(flask_session.get("probe")).__name__

    return app


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["beaker-session", *args])


def all_bytes(root: Path) -> bytes:
    """Every byte of every regular file under ``root`` (symlinks are not followed)."""
    out = bytearray()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                try:
                    out += path.read_bytes()
                except (FileNotFoundError, PermissionError):
                    continue  # removed meanwhile (a server's temporary file)
    return bytes(out)


def new_session(app: Flask, value: str) -> str:
    client = app.test_client()
    assert client.get(f"/set/secret/{value}").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return sid


def read_back(app: Flask, sid: str) -> str:
    response = client_with(app, sid).get("/get/secret")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# -- the file backend ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "visible"),
    [
        ({}, False),
        ({"SECRET_KEY": None}, False),  # the key the file backend generates
        ({"SESSION_ENCRYPT": False}, True),
        ({"SESSION_ENCRYPT": "false"}, True),
    ],
    ids=["secret-key", "generated-key", "opt-out", "opt-out-string"],
)
def test_file_store_never_holds_the_value_in_the_clear(
    data_dir: Path, config: dict[str, Any], visible: bool
) -> None:
    app = build_app(data_dir, **config)
    value = marker()
    sids = [new_session(app, value) for _ in range(3)]
    # Saved again (in place, the other slot) and read back.
    for sid in sids:
        assert client_with(app, sid).get(f"/set/again/{value}").status_code == 200
        assert read_back(app, sid) == value
    assert (value.encode() in all_bytes(data_dir)) is visible


def log_in_with_metadata(app: Flask, user: str, agent: str) -> str:
    """A session logged in as ``user`` from a browser announcing ``agent``; its id."""
    client = app.test_client()
    response = client.get(f"/set/_user_id/{user}", headers={"User-Agent": agent})
    assert response.status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return sid


def assert_index_entries_sealed(app: Flask, dump: Any, user: str) -> None:
    """The per-user index names live sessions: neither their ids nor the metadata kept at
    login may be read off the store, with records encrypted or not; the index still
    lists them."""
    agent = marker()
    sids = [log_in_with_metadata(app, user, agent) for _ in range(2)]
    listed = app.extensions["flask_beaker_session"].user_sessions(user, app=app)
    assert sorted(s.metadata.get("user_agent") for s in listed) == [agent, agent]
    stored = dump()
    assert agent.encode() not in stored
    for sid in sids:
        assert sid.encode() not in stored


@pytest.mark.parametrize("encrypt", [True, False])
def test_file_user_index_never_shows_session_ids(data_dir: Path, encrypt: bool) -> None:
    app = build_app(
        data_dir,
        SESSION_ENCRYPT=encrypt,
        SESSION_USER_KEY="_user_id",
        SESSION_USER_METADATA=True,
    )
    assert_index_entries_sealed(app, lambda: all_bytes(data_dir), "alice")


def test_session_encrypt_is_validated(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"SESSION_ENCRYPT=.*True or False"):
        build_app(data_dir, SESSION_ENCRYPT="sometimes")


def tamper_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[HEADER_LEN + 30] ^= 0x01  # inside the ciphertext of slot 0
    path.write_bytes(bytes(data))


def tamper_truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(HEADER_LEN + 20)


@pytest.mark.parametrize("tamper", [tamper_flip, tamper_truncate], ids=["flip", "truncate"])
def test_a_damaged_record_is_a_fresh_session_and_is_never_unpickled(
    data_dir: Path, tamper: Any
) -> None:
    app = with_probe_routes(build_app(data_dir))
    client = app.test_client()
    assert client.get("/probe/set").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    before = Probe.loads
    assert client_with(app, sid).get("/probe/get").get_data(as_text=True) == "Probe"
    assert Probe.loads == before + 1  # the probe does count loads
    tamper(record_path(data_dir, sid))
    response = client_with(app, sid).get("/probe/get")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "NoneType"
    assert Probe.loads == before + 1


def test_a_record_moved_to_another_id_or_read_with_another_key_is_no_session(
    data_dir: Path,
) -> None:
    app = build_app(data_dir)
    a, b = new_session(app, "value-a"), new_session(app, "value-b")
    shutil.copyfile(record_path(data_dir, a), record_path(data_dir, b))
    assert read_back(app, b) == "None"
    assert read_back(app, a) == "value-a"
    other = build_app(data_dir, SECRET_KEY="another-secret")
    assert read_back(other, a) == "None"


def test_rotation_through_fallbacks_and_rekey_on_files(data_dir: Path) -> None:
    """Sessions written under the old key (and one with encryption off) are read through
    the fallback; ``rekey`` re-seals them all in place (a record of format version 3 is
    bound to the digest of its id, which a walk knows, encrypted or not; 0.3's unencrypted
    records are sealed by their next save: ``test_large_values``); then the new key alone
    reads every session."""
    value = marker()
    old = build_app(data_dir, SECRET_KEY="old-key")
    sealed = [new_session(old, value) for _ in range(3)]
    unencrypted = build_app(data_dir, SECRET_KEY="old-key", SESSION_ENCRYPT=False)
    legacy_plain = new_session(unencrypted, value)
    rotated = build_app(data_dir, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    for sid in [*sealed, legacy_plain]:
        assert read_back(rotated, sid) == value

    dry = cli(rotated, "rekey", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would re-encrypt 4 of 4 sessions; 0 already under the current key" in dry.output
    assert "unencrypted sessions" not in dry.output
    done = cli(rotated, "rekey")
    assert done.exit_code == 0, done.output
    assert "re-encrypted 4 of 4 sessions" in done.output
    again = cli(rotated, "rekey")
    assert "re-encrypted 0 of 4 sessions; 4 already under the current key" in again.output
    assert value.encode() not in all_bytes(data_dir)
    assert client_with(rotated, legacy_plain).get("/set/x/1").status_code == 200
    new_only = build_app(data_dir, SECRET_KEY="new-key")
    for sid in [*sealed, legacy_plain]:
        assert read_back(new_only, sid) == value
    # The retired key opens nothing any more (and a request under it is a fresh session).
    assert read_back(build_app(data_dir, SECRET_KEY="old-key"), sealed[0]) == "None"


def test_rekey_shows_its_progress_over_every_record(data_dir: Path) -> None:
    """``rekey`` runs its walk in a thread and draws a progress bar from the process's
    count of walked records: a counting walk gives the total, and the rekey walk visits
    every record once."""
    old = build_app(data_dir, SECRET_KEY="old-key")
    for _ in range(5):
        new_session(old, marker())
    rotated = build_app(data_dir, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    before = _core.walked_records()
    done = cli(rotated, "rekey")
    assert done.exit_code == 0, done.output
    assert "re-encrypting" in done.output  # the bar's label (a terminal also gets the bar)
    assert "re-encrypted 5 of 5 sessions" in done.output
    assert _core.walked_records() - before == 2 * 5  # counting walk + rekey walk


def test_rekey_leaves_records_no_key_opens(data_dir: Path) -> None:
    """Run with the wrong key, ``rekey`` destroys nothing: it reports and leaves them."""
    app = build_app(data_dir, SECRET_KEY="right")
    sid = new_session(app, "kept")
    wrong = build_app(data_dir, SECRET_KEY="wrong")
    result = cli(wrong, "rekey")
    assert result.exit_code == 0, result.output
    assert "1 records open under no configured key" in result.output
    assert read_back(app, sid) == "kept"


def test_legacy_beaker_files_migrate_straight_to_sealed_records(data_dir: Path) -> None:
    """Beaker's files hold pickles in the clear: the save that migrates one writes a
    sealed record and removes the file, so no copy of the value is left."""
    value = marker()
    sid = uuid.uuid4().hex
    write_legacy(data_dir, sid, {"secret": value})
    app = build_app(data_dir)
    assert value.encode() in all_bytes(data_dir)
    assert read_back(app, sid) == value
    assert client_with(app, sid).get("/set/x/1").status_code == 200  # migrates it
    assert value.encode() not in all_bytes(data_dir)
    assert read_back(app, sid) == value
    # `migrate` does the same for every legacy file at once.
    other = uuid.uuid4().hex
    write_legacy(data_dir, other, {"secret": value})
    assert cli(build_app(data_dir), "migrate").exit_code == 0
    assert value.encode() not in all_bytes(data_dir)
    assert read_back(app, other) == value


def test_memory_rekey_says_there_is_nothing_to_do(data_dir: Path) -> None:
    app = build_app(data_dir, SESSION_TYPE="memory")
    result = cli(app, "rekey")
    assert result.exit_code == 0
    assert "nothing to rekey" in result.output


# -- Redis: the RDB snapshot and the AOF ------------------------------------------------


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test that persists everything: AOF on, fsynced at every write."""
    extra = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_server(tmp_path / "redis-aof", extra=extra) as server:
        yield server


def redis_app(server: RedisServer, prefix: str, **config: Any) -> Flask:
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=server.url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


def redis_dump(server: RedisServer) -> bytes:
    """A fresh RDB snapshot (``BGSAVE``) and the AOF, as bytes."""
    with server.client() as c:
        # SCHEDULE: runs after an AOF rewrite in progress instead of failing.
        c("BGSAVE", "SCHEDULE")
        deadline = time.monotonic() + 30
        while True:
            info = c("INFO", "persistence")
            info = info.decode() if isinstance(info, bytes) else str(info)
            done = (
                "rdb_bgsave_in_progress:0" in info
                and "rdb_changes_since_last_save:0" in info
                and "aof_rewrite_in_progress:0" in info
            )
            if done and (server.workdir / "dump.rdb").exists():
                break
            assert time.monotonic() < deadline, f"BGSAVE did not finish:\n{info}"
            time.sleep(0.05)
    return all_bytes(server.workdir)


@pytest.mark.parametrize(("encrypt", "visible"), [(True, False), (False, True)])
def test_redis_dumps_never_hold_the_value_in_the_clear(
    aof_server: RedisServer, encrypt: bool, visible: bool
) -> None:
    app = redis_app(aof_server, f"enc{encrypt}:", SESSION_ENCRYPT=encrypt)
    value = marker()
    sids = [new_session(app, value) for _ in range(3)]
    for sid in sids:
        assert client_with(app, sid).get(f"/set/again/{value}").status_code == 200
        assert read_back(app, sid) == value
    dump = redis_dump(aof_server)
    assert b"appendonly" in b"".join(p.name.encode() for p in aof_server.workdir.rglob("*"))
    assert (value.encode() in dump) is visible


@pytest.mark.parametrize("encrypt", [True, False])
def test_redis_user_index_never_shows_session_ids(aof_server: RedisServer, encrypt: bool) -> None:
    app = redis_app(
        aof_server,
        f"idx{encrypt}:",
        SESSION_ENCRYPT=encrypt,
        SESSION_USER_KEY="_user_id",
        SESSION_USER_METADATA=True,
    )
    assert_index_entries_sealed(app, lambda: redis_dump(aof_server), "bob")


def test_rotation_and_rekey_on_redis(redis_server: RedisServer, prefix: str) -> None:
    value = marker()
    old = redis_app(redis_server, prefix, SECRET_KEY="old-key")
    sids = [new_session(old, value) for _ in range(3)]
    with redis_server.client() as c:
        ttls = [c("PTTL", k) for k in redis_server.keys(f"{prefix}s:*")]
    rotated = redis_app(
        redis_server, prefix, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"]
    )
    dry = cli(rotated, "rekey", "--dry-run")
    assert "would re-encrypt 3 of 3 sessions" in dry.output, dry.output
    done = cli(rotated, "rekey")
    assert done.exit_code == 0, done.output
    assert "re-encrypted 3 of 3 sessions" in done.output
    with redis_server.client() as c:
        after = [c("PTTL", k) for k in redis_server.keys(f"{prefix}s:*")]
    # The TTLs were kept (not reset, not dropped).
    assert all(0 < a <= t for a, t in zip(after, ttls))
    new_only = redis_app(redis_server, prefix, SECRET_KEY="new-key")
    for sid in sids:
        assert read_back(new_only, sid) == value
    wrong = redis_app(redis_server, prefix, SECRET_KEY="old-key")
    assert read_back(wrong, sids[0]) == "None"


# -- PostgreSQL: the table and the whole cluster directory (heap, WAL) --------------------


def pg_app(server: PostgresServer, table: str, **config: Any) -> Flask:
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="postgresql",
        SESSION_DATABASE_URL=server.url(),
        SESSION_DATABASE_TABLE=table,
        **config,
    )


def test_postgres_never_holds_the_value_in_the_clear(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    table = table_for(tmp_path.name)
    app = pg_app(postgres_server, table)
    value = marker()
    sids = [new_session(app, value) for _ in range(3)]
    for sid in sids:
        assert client_with(app, sid).get(f"/set/again/{value}").status_code == 200
        assert read_back(app, sid) == value
    rows = postgres_server.psql(f"SELECT encode(record, 'hex') FROM \"{table}\"")
    assert len(rows.splitlines()) == 3
    assert value.encode().hex() not in rows
    postgres_server.psql("CHECKPOINT")
    assert value.encode() not in all_bytes(postgres_server.workdir)
    # The control: with encryption off the same scan finds it.
    plain = pg_app(postgres_server, table, SESSION_ENCRYPT=False)
    shown = marker()
    new_session(plain, shown)
    rows = postgres_server.psql(f"SELECT encode(record, 'hex') FROM \"{table}\"")
    assert shown.encode().hex() in rows


def test_rotation_and_rekey_on_postgres(tmp_path: Path, postgres_server: PostgresServer) -> None:
    table = table_for(tmp_path.name)
    value = marker()
    old = pg_app(postgres_server, table, SECRET_KEY="old-key")
    sids = [new_session(old, value) for _ in range(3)]
    rotated = pg_app(postgres_server, table, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    assert "would re-encrypt 3 of 3" in cli(rotated, "rekey", "--dry-run").output
    done = cli(rotated, "rekey")
    assert done.exit_code == 0, done.output
    assert "re-encrypted 3 of 3 sessions" in done.output
    assert "3 already under the current key" in cli(rotated, "rekey").output
    new_only = pg_app(postgres_server, table, SECRET_KEY="new-key")
    for sid in sids:
        assert read_back(new_only, sid) == value
    # A record moved to another id's row: no session.
    a, b = sids[0], sids[1]
    postgres_server.overwrite(table, b, postgres_server.raw(table, a) or b"")
    assert read_back(new_only, b) == "None"
    assert read_back(new_only, a) == value


def test_the_record_format_version_is_exported() -> None:
    assert _core.RECORD_FORMAT_VERSION == 3


# -- Redis Cluster and Sentinel -----------------------------------------------------------


def redis_url_app(url: str, prefix: str, **config: Any) -> Flask:
    return build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=url,
        SESSION_REDIS_PREFIX=prefix,
        **config,
    )


def rotate_and_rekey(url: str, prefix: str) -> None:
    """Sessions sealed under an old key, re-sealed by ``rekey`` (every primary of a
    Cluster is walked), then read under the new key alone."""
    value = marker()
    old = redis_url_app(url, prefix, SECRET_KEY="old-key")
    sids = [new_session(old, value) for _ in range(6)]
    rotated = redis_url_app(url, prefix, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    done = cli(rotated, "rekey")
    assert done.exit_code == 0, done.output
    assert "re-encrypted 6 of 6 sessions" in done.output
    new_only = redis_url_app(url, prefix, SECRET_KEY="new-key")
    for sid in sids:
        assert read_back(new_only, sid) == value


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux")
def test_rotation_and_rekey_on_a_redis_cluster(redis_cluster: Any, prefix: str) -> None:
    rotate_and_rekey(redis_cluster.url, prefix)


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux")
def test_rotation_and_rekey_under_sentinel(redis_sentinels: Any, prefix: str) -> None:
    rotate_and_rekey(redis_sentinels.url, prefix)
