"""Hypothesis: random sequences of session operations, request after request, checked
against a model dict, for SESSION_LOCKING True and False.

Each step is one request applying a few operations (set, pop, clear, in-place append to a
list, ``regenerate_id()``, ``delete()``) or a read-only request, or — for a live session —
two overlapping requests of it (in locking mode they run one after the other; in
non-locking mode both load the same data and the later save merges key by key). After
every step the stored session equals the model, exactly one record exists while the model
holds data (none when empty), and every id that was deleted or regenerated away stays
dead. Also the regression tests for inputs fuzzing found.
"""

from __future__ import annotations

import copy
import pickle
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Flask, request
from flask import session as flask_session
from helpers import COOKIE, FIXTURES, build_app, client_with, cookie_of, record_files
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

Op = tuple[Any, ...]

KEYS = st.sampled_from(["a", "b", "cart", "user"])
VALUES = st.one_of(
    st.integers(-5, 5),
    st.text("xyz", max_size=3),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 3), max_size=2),
)
DATA_OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("pop"), KEYS),
    st.tuples(st.just("append"), KEYS, st.integers(0, 9)),
    st.tuples(st.just("mutate_dict"), KEYS, st.integers(0, 9)),
    st.just(("clear",)),
)
SESSION_OPS = st.one_of(DATA_OPS, st.just(("regenerate",)), st.just(("delete",)))


def apply_op(data: Any, op: Op) -> None:
    """Applies one data operation to a mapping: the view and the model share it."""
    kind = op[0]
    if kind == "set":
        data[op[1]] = op[2]
    elif kind == "pop":
        data.pop(op[1], None)
    elif kind == "append":
        current = data.get(op[1])
        if isinstance(current, list):
            current.append(op[2])  # in place
        else:
            data[op[1]] = [op[2]]
    elif kind == "mutate_dict":
        current = data.get(op[1])
        if isinstance(current, dict):
            current["m"] = op[2]  # in place
        else:
            data[op[1]] = {"m": op[2]}
    elif kind == "clear":
        data.clear()
    else:
        raise AssertionError(f"not a data op: {op}")


def model_apply(data: dict[str, Any], ops: list[Op]) -> None:
    """Applies data operations to a model dict, on copies of their values (a value
    stored in the model must never be the object a later request sends)."""
    for op in copy.deepcopy(ops):
        apply_op(data, op)


def user_keys(data: Any) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _pickled(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def merged(stored: dict[str, Any], base: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """The documented non-locking rule: the keys a request added, changed (compared
    pickled) or removed, relative to what it loaded, are applied to what is stored when
    it saves."""
    out = dict(stored)
    for key in base.keys() | mine.keys():
        if key not in mine:
            out.pop(key, None)
        elif key not in base or _pickled(mine[key]) != _pickled(base[key]):
            out[key] = mine[key]
    return out


def fuzz_app(data_dir: Path, locking: bool) -> tuple[Flask, dict[str, threading.Event]]:
    """``/ops`` (POST JSON list of operations) applies them in one request and answers
    the resulting user data; ``/gops/<gate>`` does the same after having loaded the
    session and waited for ``gates[gate + ':go']``."""
    app = build_app(data_dir, SESSION_LOCKING=locking, SESSION_LOCK_TIMEOUT=30)
    gates: dict[str, threading.Event] = {}

    def run_ops(ops: list[list[Any]]) -> Any:
        for raw in ops:
            op = tuple(raw)
            if op[0] == "regenerate":
                flask_session.regenerate_id()
            elif op[0] == "delete":
                flask_session.delete()
            else:
                apply_op(flask_session, op)
        data = user_keys(flask_session)
        # (Reading the id of an empty session would store it: read it only with data.)
        return {"data": data, "id": flask_session.id if data else None}

    @app.post("/ops")
    def ops() -> Any:
        return run_ops(request.get_json())

    @app.post("/gops/<gate>")
    def gops(gate: str) -> Any:
        flask_session.get("_accessed_time")  # load now
        gates[gate + ":loaded"].set()
        assert gates[gate + ":go"].wait(30)
        return run_ops(request.get_json())

    return app, gates


class SessionMachine(RuleBasedStateMachine):
    """One browser (cookie jar) using one app, against a model dict."""

    locking: ClassVar[bool] = True
    root: ClassVar[Path]
    runs: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        cls = type(self)
        cls.runs += 1
        self.data_dir = cls.root / f"run{cls.runs}"
        self.app, self.gates = fuzz_app(self.data_dir, self.locking)
        self.client = self.app.test_client()
        self.model: dict[str, Any] = {}
        self.sid: str | None = None
        self.dead: list[str] = []

    # -- helpers -------------------------------------------------------------------

    def _client_for(self, sid: str | None) -> Any:
        client = self.app.test_client()
        if sid is not None:
            client.set_cookie(COOKIE, sid)
        return client

    def _check_reply(self, resp: Any) -> None:
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert resp.get_json()["data"] == self.model

    def _settle_id(self, old: str | None) -> None:
        """After a request: the jar's cookie is the session's id (or none when empty)."""
        self.sid = cookie_of(self.client)
        if not self.model:
            assert self.sid is None
        if old is not None and old != self.sid:
            self.dead.append(old)

    # -- rules ---------------------------------------------------------------------

    @rule(ops=st.lists(SESSION_OPS, min_size=1, max_size=4))
    def one_request(self, ops: list[Op]) -> None:
        old = self.sid
        resp = self.client.post("/ops", json=[list(op) for op in ops])
        for op in ops:
            if op[0] == "delete":
                self.model.clear()
            elif op[0] != "regenerate":
                model_apply(self.model, [op])
        self._check_reply(resp)
        self._settle_id(old)
        if any(op[0] in ("regenerate", "delete") for op in ops) and old is not None:
            assert self.sid != old
            if old not in self.dead:
                self.dead.append(old)

    @rule()
    def read_only_request(self) -> None:
        before = [p.read_bytes() for p in record_files(self.data_dir)]
        resp = self.client.post("/ops", json=[])
        self._check_reply(resp)
        assert [p.read_bytes() for p in record_files(self.data_dir)] == before

    @precondition(lambda self: self.sid is not None)
    @rule(
        first=st.lists(DATA_OPS, min_size=1, max_size=3),
        second=st.lists(DATA_OPS, min_size=1, max_size=3),
    )
    def overlapping_requests(self, first: list[Op], second: list[Op]) -> None:
        """Request F loads the session; request S starts; S saves first in non-locking
        mode (F saves last), while in locking mode S waits for F and runs after it."""
        sid = self.sid
        assert sid is not None
        for name in ("F", "S"):
            for suffix in (":loaded", ":go"):
                self.gates[name + suffix] = threading.Event()
        replies: dict[str, Any] = {}
        clients = {"F": self._client_for(sid), "S": self._client_for(sid)}

        def send(name: str, ops: list[Op]) -> None:
            replies[name] = clients[name].post(f"/gops/{name}", json=[list(op) for op in ops])

        f = threading.Thread(target=send, args=("F", first))
        f.start()
        assert self.gates["F:loaded"].wait(30)
        s = threading.Thread(target=send, args=("S", second))
        s.start()
        if self.locking:
            self.gates["S:go"].set()
            self.gates["F:go"].set()
            f.join(30)
            s.join(30)
            after_f = _copy(self.model)
            model_apply(after_f, first)
            expected = _copy(after_f)
            model_apply(expected, second)
            new_sid = None
            if not after_f:
                # F emptied the session (record deleted): S starts a new one.
                new_sid = cookie_of(clients["S"]) if expected else None
            elif expected:
                new_sid = sid
        else:
            assert self.gates["S:loaded"].wait(30)
            self.gates["S:go"].set()
            s.join(30)
            self.gates["F:go"].set()
            f.join(30)
            base = self.model
            mine_s, mine_f = _copy(base), _copy(base)
            model_apply(mine_s, second)
            model_apply(mine_f, first)
            after_s = merged(base, base, mine_s)
            # S emptied the session: it was deleted, and F does not resurrect it.
            expected = merged(after_s, base, mine_f) if after_s else {}
            new_sid = sid if expected else None
        assert not f.is_alive() and not s.is_alive()
        assert replies["F"].status_code == 200
        assert replies["S"].status_code == 200
        self.model = expected
        if new_sid != sid:
            self.dead.append(sid)
        self.sid = new_sid
        self.client = self._client_for(new_sid)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def stored_session_matches_model(self) -> None:
        client = self._client_for(self.sid)
        resp = client.post("/ops", json=[])
        assert resp.status_code == 200
        assert resp.get_json()["data"] == self.model
        if self.model:
            assert resp.get_json()["id"] == self.sid
        assert len(record_files(self.data_dir)) == (1 if self.model else 0)

    @invariant()
    def dead_ids_stay_dead(self) -> None:
        for sid in self.dead[-2:]:
            resp = self._client_for(sid).post("/ops", json=[])
            assert resp.get_json()["data"] == {}
            assert resp.get_json()["id"] != sid


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy (what a request loads is its own unpickled copy)."""
    return copy.deepcopy(data)


FUZZ_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=12,
    deadline=None,
    database=None,  # nothing written into the work tree; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("locking", [True, False], ids=["locking", "non-locking"])
def test_session_operations_match_model(tmp_path: Path, locking: bool) -> None:
    """50 random programs of up to 12 steps per mode: the session always equals the
    model dict (see the module docstring for what is checked after every step)."""
    machine = type(
        f"SessionMachine_{'locking' if locking else 'nonlocking'}",
        (SessionMachine,),
        {"locking": locking, "root": tmp_path, "runs": 0},
    )
    run_state_machine_as_test(machine, settings=FUZZ_SETTINGS)


# -- regressions found by fuzzing ------------------------------------------------------

#: A Beaker <= 1.10 file (``pickle({'session': {...}}, protocol 2)``) whose session holds
#: nested shared references: ``{'a': [x, x]}`` with ``x = [l, l]``, ``l = [1, 2]``.
#: The Rust legacy decoder refused it (serde-pickle reported a recursive structure), so
#: the store removed a valid session as corrupt instead of migrating it.
NESTED_SHARED_LEGACY = bytes.fromhex(
    "80027d7100580700000073657373696f6e71017d710228580e0000005f61636365737365645f74696d"
    "6571034741ee90cca2000000580e0000005f6372656174696f6e5f74696d6571044741ee90cae00000"
    "0058010000006171055d7106285d7107285d7108284b014b026568086568076575732e"
)


def test_regression_legacy_nested_shared_references_migrate(tmp_path: Path) -> None:
    """The legacy session with nested shared references loads with its data (shared
    structure kept), then migrates to our format; the Beaker file is removed."""
    sid = "ab" * 16
    data_dir = tmp_path / "sessions"
    legacy = data_dir / "container_file" / sid[0] / sid[:2] / f"{sid}.cache"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(NESTED_SHARED_LEGACY)
    app = build_app(data_dir, SESSION_TIMEOUT=None)

    @app.route("/shape")
    def shape() -> Any:
        a = flask_session["a"]
        return {"a": a, "shared": a[0] is a[1] and a[0][0] is a[0][1]}

    client = client_with(app, sid)
    resp = client.get("/shape")
    assert resp.status_code == 200
    assert resp.get_json() == {"a": [[[1, 2], [1, 2]], [[1, 2], [1, 2]]], "shared": True}
    assert client.get("/set/b/1").status_code == 200
    assert not legacy.exists()
    assert len(record_files(data_dir)) == 1
    assert client.get("/dump").get_json() == {
        "a": [[[1, 2], [1, 2]], [[1, 2], [1, 2]]],
        "b": "1",
    }


def test_legacy_fixtures_exist() -> None:
    """The fixtures the Rust property tests mutate are present."""
    assert list((FIXTURES / "legacy").rglob("*.cache"))
