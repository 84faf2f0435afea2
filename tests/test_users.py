"""The per-user index (``SESSION_USER_KEY``, issue 20 items 1-2): listing and revoking a
user's sessions through real apps and the test client, on the file and memory backends,
on a real ``redis-server`` and Redis Cluster, and on PostgreSQL in both lock modes; the
CLI's ``sessions`` and ``revoke``; the crash-ordering rule (the entry is written before the
record, removed after it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session.errors import ConfigurationError
from flask_beaker_session.session import Session
from flask_beaker_session.stored import StoredSession
from flask_beaker_session.users import IndexedStoredSession, index_grace
from helpers import FakeClock, build_app, cookie_of, interface_of
from postgres_server import table_for

BACKENDS = ["file", "memory", "redis", "cluster", "postgresql", "postgresql-advisory"]


def _config(kind: str, request: pytest.FixtureRequest, prefix: str) -> dict[str, Any]:
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS_URL": server.url,
            "SESSION_REDIS_PREFIX": prefix,
        }
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS_URL": cluster.url,
            "SESSION_REDIS_PREFIX": prefix,
        }
    if kind in ("postgresql", "postgresql-advisory"):
        server = request.getfixturevalue("postgres_server")
        return {
            "SESSION_TYPE": "postgresql",
            "SESSION_DATABASE_URL": server.url(),
            "SESSION_DATABASE_TABLE": table_for(prefix),
            "SESSION_DATABASE_LOCK": "advisory" if kind == "postgresql-advisory" else "row",
        }
    return {"SESSION_TYPE": kind}


def users_app(data_dir: Path, **config: Any) -> Flask:
    """An app logging users in by setting ``_user_id``, with routes over the extension's
    user API (the current user is the session's)."""
    config.setdefault("SESSION_USER_KEY", "_user_id")
    app = build_app(data_dir, **config)
    ext: Session = app.extensions["flask_beaker_session"]
    gate, holding = threading.Event(), threading.Event()
    app.config.update(gate=gate, holding=holding)

    @app.route("/login/<uid>")
    def login(uid: str) -> str:
        flask_session["_user_id"] = uid
        return "in"

    @app.route("/login-regenerate/<uid>")
    def login_regenerate(uid: str) -> str:
        flask_session.regenerate_id()  # type: ignore[attr-defined]
        flask_session["_user_id"] = uid
        return "in"

    @app.route("/logout")
    def logout() -> str:
        flask_session.pop("_user_id", None)
        return "out"

    @app.route("/whoami")
    def whoami() -> str:
        return str(flask_session.get("_user_id"))

    @app.route("/devices")
    def devices() -> Any:
        listed = ext.user_sessions(flask_session["_user_id"])
        return jsonify([s.to_dict() for s in listed])

    @app.route("/revoke/<handle>")
    def revoke(handle: str) -> str:
        return str(ext.revoke_session(flask_session["_user_id"], handle))

    @app.route("/elsewhere")
    def elsewhere() -> str:
        return str(ext.revoke_user_sessions(flask_session["_user_id"], except_current=True))

    @app.route("/handle")
    def handle() -> str:
        return str(ext.session_handle())

    @app.route("/hold")
    def hold() -> str:
        flask_session["held"] = "yes"  # loads the session: its lock is held from here
        holding.set()
        gate.wait(30)
        return "held"

    return app


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, data_dir: Path, prefix: str) -> Iterator[Any]:
    base = _config(request.param, request, prefix)

    def factory(**config: Any) -> Flask:
        return users_app(data_dir, **{**base, **config})

    yield factory


def _logged_in(app: Flask, uid: str, agent: str = "test") -> Any:
    client = app.test_client()
    assert client.get(f"/login/{uid}", headers={"User-Agent": agent}).status_code == 200
    return client


def test_login_lists_logout_unlists(make: Any) -> None:
    app = make(SESSION_USER_METADATA=True)
    phone = _logged_in(app, "alice", "phone")
    laptop = _logged_in(app, "alice", "laptop")
    _logged_in(app, "bob")
    listed = laptop.get("/devices").get_json()
    assert len(listed) == 2
    assert {s["metadata"]["user_agent"] for s in listed} == {"phone", "laptop"}
    assert [s["current"] for s in listed if s["metadata"]["user_agent"] == "laptop"] == [True]
    sids = {cookie_of(phone), cookie_of(laptop)}
    for s in listed:
        # A handle is never the id, and the id is nowhere in what is listed.
        assert s["handle"] not in sids
        assert not any(sid in json.dumps(s) for sid in sids if sid)
        assert s["created"] is not None and s["expires"] > s["last_access"]
    assert phone.get("/logout").data == b"out"
    assert [s["metadata"]["user_agent"] for s in laptop.get("/devices").get_json()] == ["laptop"]
    # Logged out: the entry went (not only filtered out).
    store = interface_of(app).store
    assert [sid for sid, _, _ in store.index_list("alice")] == [cookie_of(laptop)]


def test_metadata_is_opt_in(make: Any) -> None:
    app = make()
    client = _logged_in(app, "alice", "phone")
    assert client.get("/devices").get_json()[0]["metadata"] == {}


def test_revoke_one_by_handle_ends_it_at_once(make: Any) -> None:
    app = make()
    phone = _logged_in(app, "alice")
    laptop = _logged_in(app, "alice")
    phone_handle = phone.get("/handle").data.decode()
    assert laptop.get(f"/revoke/{phone_handle}").data == b"True"
    assert phone.get("/whoami").data == b"None"  # a fresh, empty session
    assert laptop.get("/whoami").data == b"alice"
    assert len(laptop.get("/devices").get_json()) == 1
    assert laptop.get(f"/revoke/{phone_handle}").data == b"False"  # no such session now
    assert laptop.get("/revoke/" + "0" * 32).data == b"False"


def test_log_out_everywhere_else(make: Any) -> None:
    app = make()
    others = [_logged_in(app, "alice") for _ in range(3)]
    bob = _logged_in(app, "bob")
    me = _logged_in(app, "alice")
    assert me.get("/elsewhere").data == b"3"
    assert [c.get("/whoami").data for c in others] == [b"None"] * 3
    assert me.get("/whoami").data == b"alice"
    assert bob.get("/whoami").data == b"bob"
    assert len(me.get("/devices").get_json()) == 1


def test_revoking_the_current_session_deletes_it(make: Any) -> None:
    app = make()
    me = _logged_in(app, "alice")
    handle = me.get("/handle").data.decode()
    assert me.get(f"/revoke/{handle}").data == b"True"
    assert me.get("/whoami").data == b"None"


def test_regenerate_moves_the_entry(make: Any) -> None:
    app = make()
    client = _logged_in(app, "alice")
    old = cookie_of(client)
    client.get("/login-regenerate/alice")
    new = cookie_of(client)
    assert new != old
    store = interface_of(app).store
    assert [sid for sid, _, _ in store.index_list("alice")] == [new]


def test_a_revocation_waits_for_the_request_holding_the_lock(make: Any) -> None:
    """Revocation goes through the session lock: it waits for the request in flight (which
    saves its changes), and a request of the session waiting for the lock as well either
    runs before it (and is then revoked) or after it (and finds a fresh, empty session):
    never is the revoked session brought back."""
    app = make()
    victim = _logged_in(app, "alice")
    holder_result: list[bytes] = []
    holder = threading.Thread(target=lambda: holder_result.append(victim.get("/hold").data))
    holder.start()
    # The holder has the lock once its view runs.
    assert app.config["holding"].wait(10)
    revoked: list[int] = []

    def revoke() -> None:
        with app.app_context():
            ext: Session = app.extensions["flask_beaker_session"]
            revoked.append(ext.revoke_user_sessions("alice"))

    revoker = threading.Thread(target=revoke)
    revoker.start()
    waiter_result: list[bytes] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(victim.get("/whoami").data))
    waiter.start()
    app.config["gate"].set()
    for thread in (holder, revoker, waiter):
        thread.join(20)
    assert holder_result == [b"held"] and revoked == [1]
    assert waiter_result in ([b"alice"], [b"None"])
    assert victim.get("/whoami").data == b"None"
    with app.app_context():
        assert app.extensions["flask_beaker_session"].user_sessions("alice") == []


def test_expired_sessions_are_not_listed_and_the_sweep_drops_their_entries(make: Any) -> None:
    clock = FakeClock()
    app = clock.install(make(SESSION_TIMEOUT=30))
    _logged_in(app, "alice")
    me = _logged_in(app, "alice")
    clock.advance(20)
    me.get("/whoami")  # refreshes this one only
    clock.advance(15)
    assert len(me.get("/devices").get_json()) == 1
    store = interface_of(app).store
    assert len(store.index_list("alice")) == 2  # the stale entry is only filtered
    store.walk(clock(), _core.WalkMode.Sweep)
    assert store.index_sweep(clock(), index_grace(10.0)) == 0  # younger than the grace
    for _ in range(4):
        clock.advance(20)
        me.get("/whoami")
    assert store.index_sweep(clock(), index_grace(10.0)) >= 1
    assert [sid for sid, _, _ in store.index_list("alice")] == [cookie_of(me)]


def test_an_entry_is_written_before_its_record(make: Any) -> None:
    """Fault injected between the entry and the record: the record is refused (too large)
    after the entry was written. The user is not logged in, the stale entry is never
    listed, and the sweep removes it once past the grace period."""
    clock = FakeClock()
    app = clock.install(make(SESSION_MAX_SIZE=64))

    @app.route("/login-big/<uid>")
    def login_big(uid: str) -> str:
        flask_session["_user_id"] = uid
        flask_session["blob"] = "x" * 1000
        return "in"

    client = app.test_client()
    assert client.get("/login-big/alice").status_code == 500
    store = interface_of(app).store
    assert len(store.index_list("alice")) == 1  # written first
    me = _logged_in(app, "alice")
    assert len(me.get("/devices").get_json()) == 1  # the stale one is not listed
    clock.advance(index_grace(10.0) + 1)
    me.get("/whoami")
    assert store.index_sweep(clock(), index_grace(10.0)) == 1
    assert len(store.index_list("alice")) == 1


def test_cli_sessions_and_revoke(make: Any) -> None:
    app = make()
    keep = _logged_in(app, "alice")
    gone = _logged_in(app, "alice")
    runner = app.test_cli_runner()
    listed = json.loads(
        runner.invoke(args=["beaker-session", "sessions", "alice", "--json"]).output
    )
    assert len(listed) == 2
    text = runner.invoke(args=["beaker-session", "sessions", "alice"]).output
    assert all(s["handle"] in text for s in listed)
    handle = keep.get("/handle").data.decode()
    out = runner.invoke(args=["beaker-session", "revoke", "alice", "--except", handle])
    assert out.exit_code == 0 and "revoked 1 session of alice" in out.output
    assert gone.get("/whoami").data == b"None"
    assert keep.get("/whoami").data == b"alice"


def test_index_off_changes_nothing(data_dir: Path) -> None:
    app = build_app(data_dir)
    assert interface_of(app).state.stored_class is StoredSession
    client = app.test_client()
    client.get("/set/_user_id/alice")
    assert not (data_dir / "users1").exists()
    with app.app_context(), pytest.raises(ConfigurationError, match="SESSION_USER_KEY"):
        app.extensions["flask_beaker_session"].user_sessions("alice")
    runner = app.test_cli_runner()
    assert (
        "SESSION_USER_KEY is not set"
        in runner.invoke(args=["beaker-session", "sessions", "alice"]).output
    )


def test_unchanged_user_writes_no_entry(data_dir: Path) -> None:
    app = users_app(data_dir)
    assert interface_of(app).state.stored_class is IndexedStoredSession
    client = _logged_in(app, "alice")
    entries = list((data_dir / "users1").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert len(files) == 1
    before = files[0].stat()
    client.get("/set/x/1")
    client.get("/whoami")
    after = files[0].stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


@pytest.mark.parametrize("value", ["", "  ", 5, "_creation_time"])
def test_bad_user_key_is_a_configuration_error(data_dir: Path, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_USER_KEY"):
        users_app(data_dir, SESSION_USER_KEY=value)


@pytest.mark.posix_only(reason="symlinks (need privileges on Windows)")
def test_symlinks_in_the_index_tree_are_never_followed(data_dir: Path, tmp_path: Path) -> None:
    """The index's directories follow the data dir's confinement: a symlink planted at
    ``users1`` is replaced (its target untouched), one planted at an entry is not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    data_dir.mkdir(mode=0o700)
    (data_dir / "users1").symlink_to(outside)
    app = users_app(data_dir)
    client = _logged_in(app, "alice")
    assert (data_dir / "users1").is_dir() and not (data_dir / "users1").is_symlink()
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    entry = next(p for p in (data_dir / "users1").rglob("*") if p.is_file())
    entry.unlink()
    entry.symlink_to(outside / "keep")
    assert client.get("/devices").get_json() == []
    interface_of(app).store.index_sweep(1e12, 0.0)
    assert (outside / "keep").read_text() == "mine"


def test_postgresql_table_from_before_the_index_gets_its_index_table(
    data_dir: Path, prefix: str, request: pytest.FixtureRequest
) -> None:
    """A sessions table created before the index existed: the first index write creates
    ``<table>_users`` (``SESSION_DATABASE_CREATE``), or says to run ``init-db``."""
    server = request.getfixturevalue("postgres_server")
    table = table_for(prefix + "old")
    base = {
        "SESSION_TYPE": "postgresql",
        "SESSION_DATABASE_URL": server.url(),
        "SESSION_DATABASE_TABLE": table,
    }
    old = build_app(data_dir, **base)
    assert old.test_client().get("/set/a/1").status_code == 200
    server.psql(f'DROP TABLE "{table}_users"')
    strict = users_app(data_dir, SESSION_DATABASE_CREATE=False, **base)
    response = strict.test_client().get("/login/alice")
    assert response.status_code == 503  # the login is refused: its entry cannot be written
    app = users_app(data_dir, **base)
    client = _logged_in(app, "alice")
    assert len(client.get("/devices").get_json()) == 1
    assert "t" in server.psql(f"SELECT to_regclass('\"{table}_users\"') IS NOT NULL")
