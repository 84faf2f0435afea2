"""What the tests share: constants, the test app, ways to look at the store, a fake clock,
builders of native stores, and the routes and workers of the concurrency and crash tests.

Fixtures live in ``conftest.py``; everything else is imported from here (test modules,
``multiprocessing`` children started with 'spawn', and the scripts tests run in
subprocesses, which put ``TESTS_DIR`` on ``sys.path`` first). The Redis server the tests
start, and its client, are in ``redis_server.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session import session as fbs
from flask_beaker_session.session_interface import BeakerSessionInterface

TESTS_DIR = Path(__file__).parent
#: False on Windows, and under tests/windows_sim.py (which removes ``os.fork``): then
#: ``posix_only`` tests are skipped (conftest.py), and so is every start of a database
#: server (``require_posix``).
POSIX = os.name == "posix" and hasattr(os, "fork")


def require_posix(what: str) -> None:
    """Skips the calling test where POSIX is missing; ``what`` is the reason. For what a
    test can reach other than through a marked fixture (the servers' start-up helpers)."""
    if not POSIX:
        import pytest  # helpers.py is also imported by child processes without pytest

        pytest.skip(f"POSIX only: {what}")


FIXTURES = TESTS_DIR / "fixtures"
# ``legacy_objects`` (classes pickled into the legacy fixtures) must be importable.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

COOKIE = "beaker.session.id"
#: A session id: 32 lowercase hexadecimal characters (use ``fullmatch``).
SID_RE = re.compile(r"[0-9a-f]{32}")
LEGACY = FIXTURES / "legacy"
#: What ``tests/fixtures/legacy`` holds: per Beaker version, each session's id, path and data.
MANIFEST: dict[str, Any] = json.loads((LEGACY / "manifest.json").read_text())

#: The ``make_app`` fixture's type: ``make_app(**config) -> Flask``.
MakeApp = Callable[..., Flask]


# -- the test app ----------------------------------------------------------------------


def plain_app(data_dir: Path | str, **config: Any) -> Flask:
    """A Flask app with a few routes used across the tests, before the extension is set up.

    Routes: ``/set/<key>/<value>``, ``/get/<key>``, ``/inc`` (counter ``n``), ``/dump``
    (JSON of the user keys), ``/none`` (never touches the session), ``/delete``,
    ``/regenerate``, ``/invalidate``, ``/id``.
    """
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="test-secret")
    # The contention tests count lost updates, not refusals: no waiter bound unless a test
    # sets one (``tests/test_waiters.py`` tests the bound and its default).
    app.config.update(SESSION_MAX_WAITERS=None)
    # No automatic sweep (on by default): a background sweep would race the tests that
    # count what is stored. Tests of the sweeper set SESSION_SWEEP_INTERVAL themselves.
    app.config.update(SESSION_SWEEP_INTERVAL=None)
    app.config.update(config)

    @app.route("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        flask_session[key] = value
        return "ok"

    @app.route("/get/<key>")
    def get_value(key: str) -> str:
        return str(flask_session.get(key))

    @app.route("/inc")
    def inc() -> str:
        flask_session["n"] = flask_session.get("n", 0) + 1
        return str(flask_session["n"])

    @app.route("/dump")
    def dump() -> Any:
        return jsonify({k: v for k, v in flask_session.items() if not k.startswith("_")})

    @app.route("/none")
    def none() -> str:
        return "none"

    @app.route("/delete")
    def delete() -> str:
        flask_session.delete()
        return "deleted"

    @app.route("/regenerate")
    def regenerate() -> str:
        flask_session.regenerate_id()
        return flask_session.id

    @app.route("/invalidate")
    def invalidate() -> str:
        flask_session.invalidate()
        return flask_session.id

    @app.route("/id")
    def sid() -> str:
        return flask_session.id

    return app


def build_app(data_dir: Path | str, **config: Any) -> Flask:
    """``plain_app`` with the extension set up (``init_app``)."""
    app = plain_app(data_dir, **config)
    fbs.init_app(app)
    return app


def client_with(app: Flask, sid: str) -> Any:
    """A new test client of ``app`` presenting session id ``sid``."""
    client = app.test_client()
    client.set_cookie(COOKIE, sid)
    return client


def cookie_of(client: Any) -> str | None:
    """The session id the client holds (its session cookie), or None."""
    c = client.get_cookie(COOKIE)
    return None if c is None else c.value


def session_cookies(response: Any) -> list[str]:
    """The response's Set-Cookie headers for the session cookie."""
    return [str(h) for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{COOKIE}=")]


# -- what is stored ----------------------------------------------------------------------


def interface_of(app: Flask) -> BeakerSessionInterface:
    """The app's session interface (the extension's)."""
    interface = app.session_interface
    assert isinstance(interface, BeakerSessionInterface)
    return interface


def store_of(app: Flask) -> _core.Store:
    """The native store behind ``app``'s sessions."""
    return interface_of(app).store


def record_files(data_dir: Path) -> list[Path]:
    """Our record files under a data dir (not temp files, not legacy files)."""
    root = data_dir / "fbs1"
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def record_path(data_dir: Path, sid: str) -> Path:
    """Where the record of ``sid`` lives (the core computes the layout)."""
    return Path(_core.record_path(data_dir, sid))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def set_age(path: Path, seconds: float) -> None:
    """Sets the file's atime and mtime ``seconds`` in the past (of the real clock)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def plant(
    store: _core.Store,
    data_dir: Path,
    count: int,
    *,
    age: float,
    created_age: float | None = None,
    data: dict[str, Any] | None = None,
) -> list[str]:
    """Creates ``count`` records last used ``age`` s ago (header and mtime alike), created
    ``created_age`` s ago (default: ``age``), holding ``data`` (default ``{"k": "v"}``)."""
    now = time.time()
    created = now - (age if created_age is None else created_age)
    payload = pickle.dumps(data if data is not None else {"k": "v"})
    sids = []
    for _ in range(count):
        sid = store.new_id()
        store.create(sid, payload, created, now - age)
        set_age(record_path(data_dir, sid), age)
        sids.append(sid)
    return sids


# -- time --------------------------------------------------------------------------------


class FakeClock:
    """A clock that moves only when told: installed on an app, it is the time of that
    app's requests, of the records they store and of its automatic sweeper."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Moves the clock ``seconds`` forward (backward if negative); the new time."""
        self.now += seconds
        return self.now

    def install(self, app: Flask) -> Flask:
        """Makes this the clock of ``app``'s session interface; returns the app."""
        interface_of(app).clock = self
        return app


# -- native stores (tests that use the core directly) ------------------------------------


def file_store(
    data_dir: Path | str,
    *,
    keys: Iterable[bytes] = (b"k",),
    idle: float | None = None,
    absolute: float | None = None,
    lock: float = 10.0,
    read_legacy: bool = False,
) -> _core.Store:
    """A native file store on ``data_dir``: idle timeout, absolute lifetime and lock
    timeout in seconds, tagged with ``keys``."""
    backend = _core.FileBackend(data_dir=data_dir, read_legacy=read_legacy)
    return _core.Store(
        _core.StoreConfig(
            backend=backend,
            keys=list(keys),
            idle_timeout=idle,
            absolute_timeout=absolute,
            lock_timeout=lock,
        )
    )


def is_stored(app: Flask, sid: str) -> bool:
    """Whether the app's store holds a live session ``sid`` (at the app's clock)."""
    status, handle = store_of(app).open(sid, interface_of(app).clock())
    if handle is not None:
        handle.release()
    return status == _core.OpenStatus.Found


# -- concurrency and crash tests: routes ---------------------------------------------------

#: Width of the read→write window of ``/slowinc`` (seconds).
RACE_WINDOW = 0.002


def add_counter_routes(app: Flask) -> Flask:
    """``/init`` (n = 0), ``/slowinc`` (read n, sleep, write n + 1), ``/getn``."""

    @app.route("/init")
    def init() -> str:
        flask_session["n"] = 0
        return "0"

    @app.route("/slowinc")
    def slowinc() -> str:
        n = flask_session.get("n", 0)
        time.sleep(RACE_WINDOW)
        flask_session["n"] = n + 1
        return str(n + 1)

    @app.route("/getn")
    def getn() -> str:
        return str(flask_session.get("n"))

    return app


def counter_app(data_dir: Path | str, **config: Any) -> Flask:
    return add_counter_routes(build_app(data_dir, **config))


def blob_for(label: str, version: int, size: int) -> bytes:
    """Deterministic content of ``size`` bytes for (label, version)."""
    return hashlib.shake_256(f"{label}:{version}".encode()).digest(size)


def versioned_value(label: str, version: int, size: int) -> dict[str, Any]:
    blob = blob_for(label, version, size)
    return {
        "label": label,
        "v": version,
        "size": size,
        "blob": blob,
        "sha": hashlib.sha256(blob).hexdigest(),
    }


def check_versioned(value: Any) -> str | None:
    """None if ``value`` is a complete, self-consistent versioned value, else why."""
    if not isinstance(value, dict):
        return f"missing or wrong type: {type(value).__name__}"
    try:
        blob = value["blob"]
        if len(blob) != value["size"]:
            return f"length {len(blob)} != {value['size']}"
        if hashlib.sha256(blob).hexdigest() != value["sha"]:
            return "checksum mismatch"
        if blob != blob_for(value["label"], value["v"], value["size"]):
            return "content does not match its version tag"
    except (KeyError, TypeError) as exc:
        return f"incomplete value: {exc!r}"
    return None


def add_versioned_routes(app: Flask) -> Flask:
    """``/vput/<label>/<v>/<size>`` stores a versioned value under key ``val``;
    ``/vbump/<label>/<size>`` stores version (current + 1); ``/vcheck`` reports
    ``{found, v, error}`` for the stored value."""

    @app.route("/vput/<label>/<int:v>/<int:size>")
    def vput(label: str, v: int, size: int) -> str:
        flask_session["val"] = versioned_value(label, v, size)
        return "ok"

    @app.route("/vbump/<label>/<int:size>")
    def vbump(label: str, size: int) -> str:
        current = flask_session.get("val")
        v = (current["v"] if isinstance(current, dict) else 0) + 1
        # Vary the size a little so some saves outgrow the slot (rename path).
        flask_session["val"] = versioned_value(label, v, size + (v % 7) * 4096)
        return str(v)

    @app.route("/vcheck")
    def vcheck() -> Any:
        value = flask_session.get("val")
        return jsonify(
            found=not flask_session.is_new,
            v=value.get("v") if isinstance(value, dict) else None,
            label=value.get("label") if isinstance(value, dict) else None,
            error=check_versioned(value),
        )

    return app


# -- concurrency and crash tests: workers run in child processes -----------------------
# (in a module, not a test file, so that 'spawn' children can import them by name)


def increment_worker(
    data_dir: str, sid: str, count: int, barrier: Any, results: Any, index: int
) -> None:
    """Builds its own app on ``data_dir``, increments session ``sid`` count times."""
    app = counter_app(data_dir)
    client = client_with(app, sid)
    barrier.wait(timeout=60)
    statuses: list[int] = []
    values: list[int] = []
    for _ in range(count):
        resp = client.get("/slowinc")
        statuses.append(resp.status_code)
        if resp.status_code == 200:
            values.append(int(resp.get_data(as_text=True)))
    results.put((index, statuses, values))


def create_sessions_worker(
    data_dir: str, count: int, barrier: Any, results: Any, index: int
) -> None:
    """Builds its own app and creates ``count`` new sessions, each with a token."""
    app = build_app(data_dir)
    barrier.wait(timeout=60)
    created: list[tuple[str | None, str, int]] = []
    for j in range(count):
        client = app.test_client()
        token = f"p{index}-{j}"
        resp = client.get(f"/set/owner/{token}")
        created.append((cookie_of(client), token, resp.status_code))
    results.put((index, created))


def holding_worker(data_dir: str, sid: str, ready: Any) -> None:
    """Touches session ``sid`` inside a request, then blocks there until killed."""
    app = build_app(data_dir)

    @app.route("/hold-forever")
    def hold_forever() -> str:
        flask_session["held_by_child"] = flask_session.get("n", 0)
        ready.set()
        threading.Event().wait(120)
        return "unreachable"

    client_with(app, sid).get("/hold-forever")
    os._exit(7)


def bump_loop_worker(data_dir: str, targets: list[tuple[str, str, int]]) -> None:
    """Rewrites every (sid, label, size) session in a tight loop until killed."""
    app = add_versioned_routes(build_app(data_dir))
    clients = [(client_with(app, sid), label, size) for sid, label, size in targets]
    while True:
        for client, label, size in clients:
            resp = client.get(f"/vbump/{label}/{size}")
            if resp.status_code != 200:
                os._exit(3)
