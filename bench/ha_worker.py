"""Runs inside a bench venv (``ours`` or ``baseline``) for ``ha_bench.py``.

One Flask app on the Redis deployment named by a JSON config, the benchmark routes of
``apps``, and per scenario the median time of ``client.get`` over N requests (after a
warm-up), printed as one JSON object. Scenarios: ``free`` (no session: the baseline),
``ro`` (reads a key), ``rw`` (increments a counter), ``new`` (no cookie: creates a
session). Also printed: ``session_requests``, how many requests used Redis (warm-ups
included), for ``ha_bench.py``'s Redis CPU per request.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from flask import Flask
from flask_beaker_session.session import Session

from apps import add_routes
from impls import SECRET_KEY


def main(config_json: str, n: str) -> None:
    app = Flask(__name__)
    app.secret_key = SECRET_KEY
    app.config.update(json.loads(config_json))
    Session(app)
    add_routes(app)
    count = int(n)
    client = app.test_client()
    client.get("/rw")  # a session for ro/rw
    cookie = client.get_cookie("beaker.session.id")
    assert cookie is not None
    header = {"Cookie": f"beaker.session.id={cookie.value}"}
    out = {}
    session_requests = 1  # the /rw above
    for scenario, path, headers in (
        ("free", "/free", {}),
        ("ro", "/ro", header),
        ("rw", "/rw", header),
        ("new", "/rw", {}),
    ):
        fresh = app.test_client(use_cookies=False)
        warm = max(10, count // 10)
        for _ in range(warm):
            fresh.get(path, headers=headers)
        if scenario != "free":
            session_requests += warm + count
        samples = []
        for _ in range(count):
            started = time.perf_counter_ns()
            response = fresh.get(path, headers=headers)
            samples.append(time.perf_counter_ns() - started)
            assert response.status_code == 200, (scenario, response.status_code)
        out[scenario] = statistics.median(samples)
    # For ha_bench's Redis CPU per request: the requests that used Redis.
    out["session_requests"] = session_requests
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
