"""Helpers for the concurrency and crash tests: extra routes and child workers.

Workers live in a module (not in a test file) so that ``multiprocessing`` children
started with the 'spawn' context can import them by name.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from conftest import COOKIE, build_app, cookie_of
from flask import Flask, jsonify
from flask import session as flask_session

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


def client_with(app: Flask, sid: str) -> Any:
    """A new test client of ``app`` presenting session id ``sid``."""
    client = app.test_client()
    client.set_cookie(COOKIE, sid)
    return client


# -- versioned blobs (readers during writes, SIGKILL loop) -----------------------------


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


# -- spawn workers --------------------------------------------------------------------


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
