"""Crash ordering of the per-user index (issue 20 item 1): a process SIGKILLed at random
instants while it logs users in and out (index entry and record in separate writes, on the
file store and on a real ``redis-server``) never leaves a session whose record names a user
without that user's index entry, so "log out everywhere" always finds it."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from helpers import build_app, client_with, cookie_of, interface_of


def _fork() -> Any:
    """The 'fork' context: each restart of the worker is cheap (no re-import), as in
    test_crash.py. A function, not a module constant: Windows has no 'fork' context, and
    this module must still import there (it is skipped, see conftest.py)."""
    return multiprocessing.get_context("fork")


USERS = ("alice", "bob", "carol")


def _app(data_dir: str, config: dict[str, Any]) -> Flask:
    app = build_app(data_dir, SESSION_USER_KEY="_user_id", SESSION_LOCK_TIMEOUT=2, **config)

    @app.route("/as/<uid>")
    def login_as(uid: str) -> str:
        if uid == "-":
            flask_session.pop("_user_id", None)
        else:
            flask_session["_user_id"] = uid
        flask_session["keep"] = "1"  # stays stored when logged out
        return "ok"

    @app.route("/who")
    def who() -> str:
        return str(flask_session.get("_user_id"))

    return app


def _churn(data_dir: str, config: dict[str, Any], sids: list[str], seed: int, done: Any) -> None:
    """The victim: logs the sessions in and out as random users, in place, forever,
    counting the requests it completed in ``done`` (shared with the test)."""
    rng = random.Random(seed)
    app = _app(data_dir, config)
    while True:
        sid = rng.choice(sids)
        client_with(app, sid).get(f"/as/{rng.choice((*USERS, '-'))}")
        done.value += 1  # no lock: one worker at a time writes, and a kill must not leave it held


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_sigkill_never_hides_a_session_from_its_user(
    backend: str, data_dir: Path, request: pytest.FixtureRequest, prefix: str
) -> None:
    config: dict[str, Any] = {}
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        config = {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS_URL": server.url,
            "SESSION_REDIS_PREFIX": prefix,
            # The lock of a killed worker lives until its TTL: keep that below the
            # checker's lock timeout, so the checker waits it out.
            "SESSION_REDIS_LOCK_TTL": 0.5,
        }
    rng = random.Random(20261205)
    checker = _app(str(data_dir), config)
    sids = []
    for _ in range(8):
        client = checker.test_client()
        assert client.get("/as/-").status_code == 200
        sid = cookie_of(client)
        assert sid is not None
        sids.append(sid)
    store = interface_of(checker).store
    kills = logged_in = 0
    seen: set[tuple[str, ...]] = set()
    # A raw shared int: a worker killed while holding a lock on it would block every later
    # reader and writer (the test only reads it; the one live worker writes it).
    done = _fork().RawValue("i", 0)
    started = time.monotonic()
    for round_ in range(40):
        if time.monotonic() - started > 30:
            break
        # Kill after a random number of completed requests (whatever the machine's load),
        # plus a random delay, so that the kill lands anywhere inside the next request.
        target = done.value + rng.randint(1, 4)
        proc = _fork().Process(target=_churn, args=(str(data_dir), config, sids, round_, done))
        proc.start()
        deadline = time.monotonic() + 10
        while done.value < target and proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.01))
        assert proc.is_alive(), f"worker died on its own (exit code {proc.exitcode})"
        proc.kill()
        proc.join(10)
        kills += 1
        state: list[str] = []
        for sid in sids:
            response = client_with(checker, sid).get("/who")
            assert response.status_code == 200
            user = response.get_data(as_text=True)
            state.append(user)
            if user != "None":
                logged_in += 1
                indexed = [s for s, _, _ in store.index_list(user)]
                assert sid in indexed, f"{user}'s session has no index entry after a crash"
        seen.add(tuple(state))
    print(
        f"index crash loop ({backend}): {kills} kills, {logged_in} logged-in sessions checked, "
        f"{len(seen)} distinct states"
    )
    # The worker made progress between kills (at least one request each time), and the
    # kills found the sessions in many different states.
    assert kills >= 20 and done.value >= kills and logged_in > 0 and len(seen) >= 5
    # And revocation finds every one of them.
    revoked = 0
    with checker.app_context():
        ext = checker.extensions["flask_beaker_session"]
        for user in USERS:
            revoked += ext.revoke_user_sessions(user)
    assert all(client_with(checker, s).get("/who").data == b"None" for s in sids)
    assert revoked >= 0
