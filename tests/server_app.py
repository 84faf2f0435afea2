"""The app the real-server tests run under gunicorn (``gunicorn server_app:app``).

Configured from the environment, read once at import (so ``--preload`` builds it, and
calls ``init_app``, in the master before it forks):

* ``FBS_DATA_DIR`` (required): ``SESSION_DATA_DIR``.
* ``FBS_LOCKING``: ``"1"`` (default) or ``"0"`` for ``SESSION_LOCKING``.
* ``FBS_LOCK_TIMEOUT``: ``SESSION_LOCK_TIMEOUT`` in seconds (default 10).
* ``FBS_SWEEP``: ``SESSION_SWEEP_INTERVAL`` in seconds (default: no automatic sweep).
* ``FBS_MAX_WAITERS``: ``SESSION_MAX_WAITERS`` (a number, or ``none``; default: the
  package's default).
* ``FBS_GATE_DIR``: directory of the gate files the holding routes wait for.
* ``FBS_METRICS``: ``"1"`` for ``SESSION_METRICS`` (and a ``/metrics`` route that serves
  every worker's metrics, aggregated by ``prometheus_client``'s multiprocess mode: set
  ``PROMETHEUS_MULTIPROC_DIR`` too).
* ``FBS_CONFIG_JSON``: further settings, a JSON object (e.g. another backend's).
* ``FBS_WARMUP_FILE``: if set, the app serves one request to itself at import, storing a
  session (``{"n": 0, "warm": "yes"}``) whose id it writes to that file: with ``--preload``
  this touches the store, its locks and the sweeper in the master before the fork.

Routes (each request touching the session sleeps ``RACE_WINDOW`` between read and write, so
lost updates would show):

* ``/inc``: ``n += 1``; returns the new value.
* ``/bump/<key>``: ``session[key] += 1`` (per-key counters, for non-locking mode).
* ``/append/<key>/<value>``: ``session[key].append(value)`` (nested in-place mutation).
* ``/dump``: JSON of the user keys.  ``/pid``: the worker's pid (no session).
* ``/sweeper``: whether this process runs the automatic sweeper thread (no session).
* ``/hold/<gate>``: touches the session (``held += 1``), writes ``<gate>.pid`` (its pid) in
  the gate dir, then waits until a file ``<gate>`` appears there before answering.
* ``/stream/<gate>``: reads ``n`` in the view, streams a first line, then waits for the
  gate before the last line.
* ``/stream_lazy/<gate>``: the same, but first touches the session inside the body.
* ``/boom``: touches the session, then raises.

Every response carries ``X-Worker-Pid``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, session, stream_with_context
from flask_beaker_session import session as fbs

#: Seconds between reading and writing a value in the counting routes.
RACE_WINDOW = 0.001
#: Longest wait for a gate file (a test that never opens its gate still ends).
GATE_TIMEOUT = 30.0


def wait_gate(name: str) -> bool:
    """Waits until the test creates gate file ``name``; False after ``GATE_TIMEOUT``."""
    gate = Path(os.environ["FBS_GATE_DIR"]) / name
    deadline = time.monotonic() + GATE_TIMEOUT
    while not gate.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def create_app() -> Flask:
    """The app, configured from ``FBS_*`` environment variables."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="server-test",
        SESSION_DATA_DIR=os.environ["FBS_DATA_DIR"],
        SESSION_LOCKING=os.environ.get("FBS_LOCKING", "1") == "1",
        SESSION_LOCK_TIMEOUT=float(os.environ.get("FBS_LOCK_TIMEOUT", "10")),
    )
    waiters = os.environ.get("FBS_MAX_WAITERS")
    if waiters:
        app.config["SESSION_MAX_WAITERS"] = None if waiters == "none" else int(waiters)
    # No automatic sweep unless a test asks for one (it is on by default).
    app.config["SESSION_SWEEP_INTERVAL"] = float(os.environ.get("FBS_SWEEP") or 0)
    app.config["SESSION_METRICS"] = os.environ.get("FBS_METRICS") == "1"
    app.config.update(json.loads(os.environ.get("FBS_CONFIG_JSON") or "{}"))
    fbs.init_app(app)

    @app.route("/metrics")
    def metrics() -> Response:
        """Every worker's metrics (prometheus_client's multiprocess mode), as Prometheus
        scrapes them."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.route("/inc")
    def inc() -> str:
        n = session.get("n", 0)
        time.sleep(RACE_WINDOW)
        session["n"] = n + 1
        return str(n + 1)

    @app.route("/bump/<key>")
    def bump(key: str) -> str:
        value = session.get(key, 0)
        time.sleep(RACE_WINDOW)
        session[key] = value + 1
        return str(value + 1)

    @app.route("/append/<key>/<value>")
    def append(key: str, value: str) -> str:
        items = session.get(key)
        if items is None:
            session[key] = [value]
        else:
            time.sleep(RACE_WINDOW)
            items.append(value)  # in place: no assignment, no ``modified`` flag
        return "ok"

    @app.route("/dump")
    def dump() -> Any:
        return jsonify({k: v for k, v in session.items() if not k.startswith("_")})

    @app.route("/pid")
    def pid() -> str:
        return str(os.getpid())

    @app.route("/sweeper")
    def sweeper() -> Any:
        """Whether this worker process runs the automatic sweeper thread."""
        names = [t.name for t in threading.enumerate()]
        return jsonify(pid=os.getpid(), running="flask-beaker-session-sweeper" in names)

    @app.route("/hold/<gate>")
    def hold(gate: str) -> str:
        session["held"] = session.get("held", 0) + 1
        Path(os.environ["FBS_GATE_DIR"], gate + ".pid").write_text(str(os.getpid()))
        return "held" if wait_gate(gate) else "gate never opened"

    @app.route("/stream/<gate>")
    def stream(gate: str) -> Response:
        n = session.get("n", 0)

        def body() -> Iterator[str]:
            yield f"n={n}\n"
            yield "end\n" if wait_gate(gate) else "gate never opened\n"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.route("/stream_lazy/<gate>")
    def stream_lazy(gate: str) -> Response:
        def body() -> Iterator[str]:
            yield f"n={session.get('n', 0)}\n"
            yield "end\n" if wait_gate(gate) else "gate never opened\n"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.route("/boom")
    def boom() -> str:
        session["half"] = "done"
        raise RuntimeError("view failed after touching the session")

    @app.after_request
    def worker_pid(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    warmup = os.environ.get("FBS_WARMUP_FILE")
    if warmup:
        client = app.test_client()
        with client.session_transaction() as sess:
            sess["n"] = 0
            sess["warm"] = "yes"
        cookie = client.get_cookie("beaker.session.id")
        assert cookie is not None
        # Read it back, so the master also opened and locked an existing record.
        assert client.get("/dump").get_json() == {"n": 0, "warm": "yes"}
        Path(warmup).write_text(cookie.value)
    return app


app = create_app()
