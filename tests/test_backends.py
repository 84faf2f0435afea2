"""The common behaviour of the backends (SPEC §5, §7, §8, §10): every test runs against
'file', 'redis' (the run's ``redis-server``, one key prefix per test), 'memory' and
'postgresql' (the run's PostgreSQL cluster, one table per test), the latter in both lock
modes (``SESSION_DATABASE_LOCK`` 'row' and 'advisory').
Time passes on the apps' fake clock (the ``clock`` fixture), never by sleeping."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import _core
from helpers import (
    COOKIE,
    SID_RE,
    FakeClock,
    build_app,
    client_with,
    cookie_of,
    interface_of,
    is_stored,
    record_path,
    store_of,
)
from postgres_server import PostgresServer, table_for
from redis_ha import cluster_data_key
from redis_server import RedisServer, add_contention_routes, data_key

BACKENDS = ["file", "redis", "memory", "postgresql", "postgresql-advisory"]
#: Redis as a Cluster and behind Sentinel: the same backend found another way.
BACKENDS += ["redis-cluster", "redis-sentinel"]


@dataclass
class Backend:
    """One configured backend plus ways to look at what it stores."""

    kind: str
    data_dir: Path
    prefix: str
    server: RedisServer | None
    config: dict[str, Any] = field(default_factory=dict)
    #: The record's key name (hash-tagged on a Cluster).
    data_key: Any = data_key
    pg: PostgresServer | None = None

    def app(self, **config: Any) -> Flask:
        """``build_app`` on this backend, plus a few routes of this module."""
        return add_routes(build_app(self.data_dir, **{**self.config, **config}))

    def raw(self, app: Flask, sid: str) -> bytes | None:
        """What the backend stores for ``sid`` (the record's bytes), or None."""
        if self.kind == "file":
            path = record_path(self.data_dir, sid)
            return path.read_bytes() if path.exists() else None
        if self.kind == "redis":
            assert self.server is not None
            with self.server.client() as c:
                value: bytes | None = c("GET", self.data_key(self.prefix, sid))
                return value
        if self.kind == "postgresql":
            assert self.pg is not None
            return self.pg.raw(self.config["SESSION_DATABASE_TABLE"], sid)
        # memory: nothing outside the process; the stored payload is what there is.
        _, handle = store_of(app).open(sid, interface_of(app).clock())
        if handle is None:
            return None
        try:
            return bytes(handle.payload)
        finally:
            handle.release()

    def stored(self, app: Flask, sid: str) -> bool:
        """Whether a live session ``sid`` is stored (as the store itself sees it)."""
        return is_stored(app, sid)

    def overwrite(self, sid: str, value: bytes) -> None:
        """Replaces the stored record of ``sid`` (file and Redis only)."""
        if self.kind == "file":
            record_path(self.data_dir, sid).write_bytes(value)
        elif self.kind == "redis":
            assert self.server is not None
            with self.server.client() as c:
                c("SET", self.data_key(self.prefix, sid), value, "KEEPTTL")
        elif self.kind == "postgresql":
            assert self.pg is not None
            self.pg.overwrite(self.config["SESSION_DATABASE_TABLE"], sid, value)
        else:
            raise AssertionError("the memory backend has no external record")


def add_routes(app: Flask) -> Flask:
    """``/cart/init``, ``/cart/add/<x>``, ``/cart``, ``/bad``, and the contention routes
    ``/slowinc``, ``/hold``, ``/pid``."""
    add_contention_routes(app)

    @app.route("/cart/init")
    def cart_init() -> str:
        flask_session["cart"] = []
        return "ok"

    @app.route("/cart/add/<item>")
    def cart_add(item: str) -> str:
        flask_session["cart"].append(item)  # in place: no __setitem__, no modified flag
        return "ok"

    @app.route("/cart")
    def cart() -> Any:
        return jsonify(flask_session.get("cart"))

    @app.route("/bad")
    def bad() -> str:
        flask_session["a"] = "changed"
        flask_session["unpicklable"] = threading.Lock()
        return "ok"

    return app


def make_backend(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Backend:
    """Backend ``kind`` isolated for one test (own data dir / own Redis key prefix)."""
    prefix = f"t:{tmp_path.name}:"
    config: dict[str, Any] = {"SESSION_TYPE": kind}
    server = None
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        config.update(SESSION_REDIS_URL=server.url, SESSION_REDIS_PREFIX=prefix)
    if kind in ("redis-cluster", "redis-sentinel"):
        server = request.getfixturevalue(kind.replace("-", "_").replace("sentinel", "sentinels"))
        config.update(SESSION_TYPE="redis", SESSION_REDIS_URL=server.url)
        config.update(SESSION_REDIS_PREFIX=prefix)
        key = cluster_data_key if kind == "redis-cluster" else data_key
        return Backend("redis", tmp_path / "sessions", prefix, server, config, key)
    pg = None
    if kind in ("postgresql", "postgresql-advisory"):
        pg = request.getfixturevalue("postgres_server")
        config.update(
            SESSION_TYPE="postgresql",
            SESSION_DATABASE_URL=pg.url(),
            SESSION_DATABASE_TABLE=table_for(tmp_path.name),
            SESSION_DATABASE_LOCK="advisory" if kind == "postgresql-advisory" else "row",
        )
        kind = "postgresql"
    return Backend(kind, tmp_path / "sessions", prefix, server, config, pg=pg)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backend under test."""
    return make_backend(request, tmp_path, request.param)


@pytest.fixture(params=["file", "redis", "postgresql", "postgresql-advisory"])
def external_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backends whose records live outside the process (and can be corrupted)."""
    return make_backend(request, tmp_path, request.param)


@pytest.fixture
def backend_app(backend: Backend) -> Flask:
    return backend.app()


def test_counter_increments(backend_app: Flask) -> None:
    """Successive requests of one client see and update the same session."""
    client = backend_app.test_client()
    assert [client.get("/inc").text for _ in range(5)] == ["1", "2", "3", "4", "5"]
    other = backend_app.test_client()
    assert other.get("/inc").text == "1"


def test_new_session_gets_cookie(backend: Backend, backend_app: Flask) -> None:
    """A new session with data gets a 32-hex HttpOnly cookie and is stored; a view that
    never touches the session sends no cookie."""
    client = backend_app.test_client()
    none = client.get("/none")
    assert "Set-Cookie" not in none.headers
    assert cookie_of(client) is None
    response = client.get("/set/a/1")
    header = response.headers["Set-Cookie"]
    assert header.startswith(f"{COOKIE}=")
    assert "HttpOnly" in header
    assert "Path=/" in header
    assert "SameSite=Lax" in header
    sid = cookie_of(client)
    assert sid is not None and SID_RE.fullmatch(sid)
    assert backend.stored(backend_app, sid)
    assert "Cookie" in response.headers["Vary"]


def test_session_without_data_not_stored(backend: Backend, backend_app: Flask) -> None:
    """Reading a missing key of a new session stores nothing and sends no cookie."""
    seen: dict[str, str] = {}

    @backend_app.teardown_request
    def capture_id(exc: BaseException | None) -> None:
        # After the session was saved: reading a new session's id in the view would
        # store it (the id must then survive).
        seen["id"] = flask_session.id

    client = backend_app.test_client()
    response = client.get("/get/a")
    sid = seen["id"]
    assert "Set-Cookie" not in response.headers
    assert not backend.stored(backend_app, sid)
    assert backend.raw(backend_app, sid) is None


def test_read_only_request_sends_no_cookie(backend: Backend, backend_app: Flask) -> None:
    """A request that only reads neither sends Set-Cookie nor rewrites the record."""
    client = backend_app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    before = backend.raw(backend_app, sid)
    assert before is not None
    response = client.get("/get/a")
    assert response.text == "1"
    assert "Set-Cookie" not in response.headers
    assert backend.raw(backend_app, sid) == before


def test_unknown_id_never_adopted(backend: Backend, backend_app: Flask) -> None:
    """A well-formed id the store does not know gives a new session under a new id."""
    unknown = "0123456789abcdef0123456789abcdef"
    client = client_with(backend_app, unknown)
    assert client.get("/get/a").text == "None"
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None and sid != unknown
    assert not backend.stored(backend_app, unknown)
    assert backend.stored(backend_app, sid)


def test_delete_kills_old_id(backend: Backend, backend_app: Flask) -> None:
    """delete(): the record is removed, the cookie expired, and the old id is dead."""
    client = backend_app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    assert old is not None
    response = client.get("/delete")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert not backend.stored(backend_app, old)
    assert client_with(backend_app, old).get("/get/a").text == "None"


def test_invalidate_kills_old_id(backend: Backend, backend_app: Flask) -> None:
    """invalidate(): the old record is removed at once and the new id differs."""
    client = backend_app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    assert old is not None
    new = client.get("/invalidate").text
    assert SID_RE.fullmatch(new) and new != old
    assert not backend.stored(backend_app, old)
    assert client_with(backend_app, old).get("/get/a").text == "None"


def test_regenerate_id_moves_data(backend: Backend, backend_app: Flask) -> None:
    """regenerate_id(): data kept under the new id, the old id is dead."""
    client = backend_app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    assert old is not None
    new = client.get("/regenerate").text
    assert new != old and cookie_of(client) == new
    assert client.get("/get/a").text == "1"
    assert backend.stored(backend_app, new)
    assert not backend.stored(backend_app, old)
    assert client_with(backend_app, old).get("/get/a").text == "None"


def test_idle_timeout_expires(backend: Backend, clock: FakeClock) -> None:
    """A session idle for longer than SESSION_TIMEOUT is gone; its id is not reused."""
    app = clock.install(backend.app(SESSION_TIMEOUT=60))
    client = app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    assert old is not None
    clock.advance(61)
    assert client.get("/get/a").text == "None"
    assert not backend.stored(app, old)
    client.get("/set/b/2")
    assert cookie_of(client) not in (None, old)


def test_absolute_timeout_expires_active_session(backend: Backend, clock: FakeClock) -> None:
    """SESSION_ABSOLUTE_TIMEOUT ends a session however active it is."""
    app = clock.install(backend.app(SESSION_TIMEOUT=6000, SESSION_ABSOLUTE_TIMEOUT=120))
    client = app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    clock.advance(60)
    assert client.get("/inc").text == "1"
    assert client.get("/get/a").text == "1"
    clock.advance(72)
    assert client.get("/get/a").text == "None"
    assert old is not None and not backend.stored(app, old)


def test_session_transaction(backend_app: Flask) -> None:
    """Data written in client.session_transaction() is seen by the next request."""
    client = backend_app.test_client()
    with client.session_transaction() as sess:
        sess["a"] = "from-transaction"
    assert client.get("/get/a").text == "from-transaction"
    with client.session_transaction() as sess:
        assert sess["a"] == "from-transaction"
        sess["b"] = "2"
    assert client.get("/get/b").text == "2"


def test_in_place_mutation_persists(backend_app: Flask) -> None:
    """session['cart'].append(x) is saved without session.modified."""
    client = backend_app.test_client()
    client.get("/cart/init")
    client.get("/cart/add/x")
    client.get("/cart/add/y")
    assert client.get("/cart").json == ["x", "y"]


def test_unpicklable_value_names_key(backend: Backend) -> None:
    """An unpicklable value raises TypeError naming its key; nothing of the request is
    stored."""
    app = backend.app(PROPAGATE_EXCEPTIONS=True)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    before = backend.raw(app, sid)
    with pytest.raises(TypeError, match="unpicklable"):
        client.get("/bad")
    assert backend.raw(app, sid) == before
    assert client.get("/dump").json == {"a": "1"}


def test_threads_lose_no_update(backend: Backend, backend_app: Flask) -> None:
    """8 threads x 25 read-modify-write requests on one session: every one counts."""
    first = backend_app.test_client()
    assert first.get("/slowinc").text == "1"
    sid = cookie_of(first)
    assert sid is not None
    statuses: list[int] = []
    guard = threading.Lock()

    def work() -> None:
        client = client_with(backend_app, sid)
        got = [client.get("/slowinc").status_code for _ in range(25)]
        with guard:
            statuses.extend(got)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 200
    assert first.get("/get/n").text == str(1 + 200)


def test_non_locking_mode_merges_keys(backend: Backend) -> None:
    """SESSION_LOCKING=False on every backend: 8 threads each write their own key while the
    requests overlap; all keys survive (merged at save time), nested mutation included."""
    app = backend.app(SESSION_LOCKING=False)
    barrier = threading.Barrier(8, timeout=10)

    @app.route("/own/<key>")
    def own(key: str) -> str:
        flask_session.get("start")  # load before the others save
        barrier.wait()
        flask_session[key] = key
        flask_session["log"].append(key)  # the same key for all: last writer wins
        return "ok"

    first = app.test_client()
    with first.session_transaction() as sess:
        sess["start"] = 1
        sess["log"] = []
    sid = cookie_of(first)
    assert sid is not None
    statuses: list[int] = []

    def work(i: int) -> None:
        statuses.append(client_with(app, sid).get(f"/own/k{i}").status_code)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    data = first.get("/dump").get_json()
    assert {f"k{i}" for i in range(8)} <= set(data)
    assert len(data["log"]) >= 1


def test_lock_timeout_gives_503(backend: Backend) -> None:
    """A request waiting longer than SESSION_LOCK_TIMEOUT gets 503 + Retry-After: 1,
    and the session works again once the holder lets go."""
    app = backend.app(SESSION_LOCK_TIMEOUT=0.3)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    status, handle = store_of(app).open(sid, interface_of(app).clock())
    assert status == _core.OpenStatus.Found and handle is not None
    try:
        response = client.get("/get/a")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "Traceback" not in response.text
    finally:
        handle.release()
    assert client.get("/get/a").text == "1"


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\x00" * 64, b"FBS" * 100])
def test_corrupt_record_gives_fresh_session(external_backend: Backend, garbage: bytes) -> None:
    """A stored value that is not a valid record: fresh empty session under a new id, the
    bad record removed (file and Redis; memory has no external record)."""
    backend = external_backend
    backend_app = backend.app()
    client = backend_app.test_client()
    client.get("/set/a/1")
    old = cookie_of(client)
    assert old is not None
    backend.overwrite(old, garbage)
    assert client.get("/get/a").text == "None"
    assert backend.raw(backend_app, old) is None
    client.get("/set/b/2")
    new = cookie_of(client)
    assert new is not None and new != old
    assert client.get("/dump").json == {"b": "2"}
