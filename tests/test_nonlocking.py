"""Non-locking mode (``SESSION_LOCKING = False``, SPEC §7 opt-out) and nested mutation in
both modes.

In non-locking mode a request holds its session's lock only while reading it; at save the
keys it added, changed (in place too) or removed are merged into the data stored *now*.
Keys changed by concurrent requests survive, the same key goes to the last writer, and a
session deleted or regenerated meanwhile is not resurrected. Requests are interleaved
deterministically with events held inside the views.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from helpers import build_app, client_with, cookie_of, record_files

#: Longest wait for an event a test should set; a test that never sets it still ends.
WAIT = 30.0


class Gates:
    """Per-name events: ``loaded[name]`` is set by a view once it has read the session,
    ``go[name]`` is set by the test to let that view finish."""

    def __init__(self) -> None:
        self.loaded: dict[str, threading.Event] = {}
        self.go: dict[str, threading.Event] = {}

    def pair(self, name: str) -> tuple[threading.Event, threading.Event]:
        return (
            self.loaded.setdefault(name, threading.Event()),
            self.go.setdefault(name, threading.Event()),
        )


def gated_app(data_dir: Path, **config: Any) -> tuple[Flask, Gates]:
    """``build_app`` plus gated routes: each reads the session, signals ``loaded``,
    waits for ``go``, then acts.

    ``/gset/<gate>/<key>/<value>``, ``/gpop/<gate>/<key>``, ``/gclear/<gate>``,
    ``/gappend/<gate>/<key>/<value>`` (in place), ``/gread/<gate>``; plus ungated
    ``/append/<key>/<value>`` and ``/nested/<key>/<sub>/<value>`` (in place).
    """
    app = build_app(data_dir, **config)
    gates = Gates()

    def gated(name: str, action: Callable[[], None]) -> str:
        loaded, go = gates.pair(name)
        flask_session.get("_accessed_time")  # first use: loads (and, if locking, locks)
        loaded.set()
        assert go.wait(WAIT), f"gate {name} never opened"
        action()
        return "ok"

    @app.route("/gset/<gate>/<key>/<value>")
    def gset(gate: str, key: str, value: str) -> str:
        return gated(gate, lambda: flask_session.__setitem__(key, value))

    @app.route("/gpop/<gate>/<key>")
    def gpop(gate: str, key: str) -> str:
        return gated(gate, lambda: flask_session.pop(key, None))

    @app.route("/gclear/<gate>")
    def gclear(gate: str) -> str:
        return gated(gate, flask_session.clear)

    @app.route("/gappend/<gate>/<key>/<value>")
    def gappend(gate: str, key: str, value: str) -> str:
        return gated(gate, lambda: flask_session[key].append(value))

    @app.route("/gread/<gate>")
    def gread(gate: str) -> str:
        return gated(gate, lambda: None)

    @app.route("/append/<key>/<value>")
    def append(key: str, value: str) -> str:
        flask_session.setdefault(key, [])
        flask_session[key].append(value)
        return "ok"

    @app.route("/nested/<key>/<sub>/<value>")
    def nested(key: str, sub: str, value: str) -> str:
        flask_session[key][sub] = value
        return "ok"

    return app, gates


class Request:
    """A request of session ``sid`` running in its own thread."""

    def __init__(self, app: Flask, sid: str, path: str) -> None:
        self.client = client_with(app, sid)
        self.response: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path,))
        self.thread.start()

    def _run(self, path: str) -> None:
        try:
            self.response = self.client.get(path)
        except BaseException as exc:  # re-raised by finish()
            self.error = exc

    def finish(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "request never finished"
        if self.error is not None:
            raise self.error
        return self.response


def start(app: Flask, gates: Gates, sid: str, path: str, gate: str) -> Request:
    """Starts a gated request and waits until it has read the session."""
    req = Request(app, sid, path)
    assert gates.pair(gate)[0].wait(WAIT), f"{path} never loaded the session"
    return req


def finish(gates: Gates, req: Request, gate: str) -> Any:
    gates.pair(gate)[1].set()
    return req.finish()


def new_session(app: Flask, **data: str) -> str:
    client = app.test_client()
    for key, value in data.items():
        assert client.get(f"/set/{key}/{value}").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return sid


def dump(app: Flask, sid: str) -> dict[str, Any]:
    client = client_with(app, sid)
    data: dict[str, Any] = client.get("/dump").get_json()
    return data


@pytest.fixture
def nl(data_dir: Path) -> tuple[Flask, Gates]:
    return gated_app(data_dir, SESSION_LOCKING=False)


def test_requests_overlap_without_waiting(nl: tuple[Flask, Gates]) -> None:
    """Two requests of one session are inside their views at the same time (the second
    loads while the first is still running): no lock is held across the request."""
    app, gates = nl
    sid = new_session(app, a="1")
    first = start(app, gates, sid, "/gset/A/x/1", "A")
    second = start(app, gates, sid, "/gset/B/y/2", "B")
    assert finish(gates, second, "B").status_code == 200
    assert finish(gates, first, "A").status_code == 200
    assert dump(app, sid) == {"a": "1", "x": "1", "y": "2"}


def test_locking_mode_serialises_the_same_requests(data_dir: Path) -> None:
    """Control: with SESSION_LOCKING=True the second request cannot load while the
    first holds the session (it waits, here past a 0.5 s lock timeout: 503)."""
    app, gates = gated_app(data_dir, SESSION_LOCK_TIMEOUT=0.5)
    sid = new_session(app, a="1")
    first = start(app, gates, sid, "/gset/A/x/1", "A")
    second = Request(app, sid, "/gset/B/y/2")
    assert second.finish().status_code == 503
    assert not gates.pair("B")[0].is_set()
    assert finish(gates, first, "A").status_code == 200
    assert dump(app, sid) == {"a": "1", "x": "1"}


def test_different_keys_of_concurrent_requests_all_survive(data_dir: Path) -> None:
    """8 threads each increment their own key 15 times on one shared session (with a
    read→write window): every key ends exact, none overwritten by a concurrent save."""
    app = build_app(data_dir, SESSION_LOCKING=False)

    @app.route("/bump/<key>")
    def bump(key: str) -> str:
        value = flask_session.get(key, 0)
        threading.Event().wait(0.001)
        flask_session[key] = value + 1
        return str(value + 1)

    sid = new_session(app, base="1")
    errors: list[str] = []

    def worker(key: str) -> None:
        client = client_with(app, sid)
        for _ in range(15):
            resp = client.get(f"/bump/{key}")
            if resp.status_code != 200:
                errors.append(f"{key}: {resp.status_code}")

    threads = [threading.Thread(target=worker, args=(f"k{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    assert dump(app, sid) == {"base": "1", **{f"k{i}": 15 for i in range(8)}}


@pytest.mark.parametrize("order", ["A last", "B last"])
def test_same_key_last_writer_wins(nl: tuple[Flask, Gates], order: str) -> None:
    """Two requests load the session, both set ``x``: the one that saves last wins,
    whichever loaded first; other keys are untouched."""
    app, gates = nl
    sid = new_session(app, x="0", keep="k")
    a = start(app, gates, sid, "/gset/A/x/a", "A")
    b = start(app, gates, sid, "/gset/B/x/b", "B")
    if order == "A last":
        finish(gates, b, "B")
        finish(gates, a, "A")
        expected = "a"
    else:
        finish(gates, a, "A")
        finish(gates, b, "B")
        expected = "b"
    assert dump(app, sid) == {"x": expected, "keep": "k"}


def test_removal_and_addition_both_apply(nl: tuple[Flask, Gates]) -> None:
    """One request removes ``a`` while a concurrent one adds ``b``: the merged session
    has ``b`` and not ``a``, whichever saves first."""
    app, gates = nl
    sid = new_session(app, a="1", c="3")
    remover = start(app, gates, sid, "/gpop/R/a", "R")
    adder = start(app, gates, sid, "/gset/S/b/2", "S")
    finish(gates, adder, "S")
    finish(gates, remover, "R")
    assert dump(app, sid) == {"b": "2", "c": "3"}


def test_clear_keeps_keys_added_concurrently(nl: tuple[Flask, Gates], data_dir: Path) -> None:
    """A request that clears the session (all the keys it loaded) while another adds a
    key: the added key survives; the cleared ones are gone."""
    app, gates = nl
    sid = new_session(app, a="1")
    clearer = start(app, gates, sid, "/gclear/C", "C")
    adder = start(app, gates, sid, "/gset/S/b/2", "S")
    finish(gates, adder, "S")
    finish(gates, clearer, "C")
    assert dump(app, sid) == {"b": "2"}
    assert len(record_files(data_dir)) == 1


def test_deleted_session_is_not_resurrected(nl: tuple[Flask, Gates], data_dir: Path) -> None:
    """A request loads the session; another calls ``session.delete()`` (logout); the
    first then sets a key and saves: the session stays deleted (no record, the old id
    shows nothing) and the late request's response expires the cookie."""
    app, gates = nl
    sid = new_session(app, user="alice")
    late = start(app, gates, sid, "/gset/L/cart/full", "L")
    logout = client_with(app, sid)
    assert logout.get("/delete").status_code == 200
    assert record_files(data_dir) == []
    resp = finish(gates, late, "L")
    assert resp.status_code == 200
    assert any("Max-Age=0" in c for c in resp.headers.getlist("Set-Cookie"))
    assert record_files(data_dir) == []
    assert dump(app, sid) == {}


def test_regenerated_session_old_id_stays_dead(nl: tuple[Flask, Gates], data_dir: Path) -> None:
    """A request loads the session; another regenerates its id (login): the data moves
    to the new id, the old record is gone; the first request's later save does not bring
    the old id back."""
    app, gates = nl
    sid = new_session(app, user="alice")
    late = start(app, gates, sid, "/gset/L/x/1", "L")
    regen = client_with(app, sid)
    new_sid = regen.get("/regenerate").get_data(as_text=True)
    assert new_sid != sid
    assert cookie_of(regen) == new_sid
    assert finish(gates, late, "L").status_code == 200
    assert dump(app, sid) == {}
    assert dump(app, new_sid) == {"user": "alice"}
    assert len(record_files(data_dir)) == 1


def test_delete_then_set_in_one_request_goes_to_new_id(
    nl: tuple[Flask, Gates], data_dir: Path
) -> None:
    """Non-locking ``delete()`` followed by a new key in the same request: the old
    record is removed at once, the key lands in a new session under a new id."""
    app, _ = nl

    @app.route("/relog")
    def relog() -> str:
        flask_session.delete()
        flask_session["user"] = "bob"
        return flask_session.id

    client = app.test_client()
    assert client.get("/set/user/alice").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    new_sid = client.get("/relog").get_data(as_text=True)
    assert new_sid != sid
    assert cookie_of(client) == new_sid
    assert dump(app, sid) == {}
    assert dump(app, new_sid) == {"user": "bob"}
    assert len(record_files(data_dir)) == 1


def test_concurrent_in_place_mutations_of_different_keys(nl: tuple[Flask, Gates]) -> None:
    """Two concurrent requests append in place to two different lists: both appends are
    saved (in-place mutation counts as a change, and the keys merge)."""
    app, gates = nl
    client = app.test_client()
    assert client.get("/append/l1/x").status_code == 200
    assert client.get("/append/l2/y").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    a = start(app, gates, sid, "/gappend/A/l1/a", "A")
    b = start(app, gates, sid, "/gappend/B/l2/b", "B")
    finish(gates, a, "A")
    finish(gates, b, "B")
    assert dump(app, sid) == {"l1": ["x", "a"], "l2": ["y", "b"]}


def test_read_only_request_does_not_rewrite(nl: tuple[Flask, Gates], data_dir: Path) -> None:
    """A non-locking request that only reads leaves the record's bytes identical, even
    when a concurrent request changed it meanwhile (its stale copy is not written)."""
    app, gates = nl
    sid = new_session(app, a="1")
    reader = start(app, gates, sid, "/gread/R", "R")
    writer = client_with(app, sid)
    assert writer.get("/set/b/2").status_code == 200
    [record] = record_files(data_dir)
    after_write = record.read_bytes()
    assert finish(gates, reader, "R").status_code == 200
    assert record.read_bytes() == after_write
    assert dump(app, sid) == {"a": "1", "b": "2"}


def test_failed_request_changes_nothing(nl: tuple[Flask, Gates]) -> None:
    """Non-locking mode keeps the 5xx rule: a view that raises after changing the
    session saves nothing."""
    app, _ = nl

    @app.route("/boom")
    def boom() -> str:
        flask_session["half"] = "done"
        raise RuntimeError("boom")

    sid = new_session(app, a="1")
    client = client_with(app, sid)
    assert client.get("/boom").status_code == 500
    assert dump(app, sid) == {"a": "1"}


# -- nested mutation, both modes --------------------------------------------------------


@pytest.mark.parametrize("locking", [True, False])
def test_nested_mutation_is_saved(data_dir: Path, locking: bool) -> None:
    """``session['cart'].append(x)`` and ``session['d'][k] = v`` — in place, with no
    assignment to the session and ``modified`` left alone — persist to the next
    request, in both modes."""
    app, _ = gated_app(data_dir, SESSION_LOCKING=locking)

    @app.route("/init")
    def init() -> str:
        flask_session["cart"] = []
        flask_session["d"] = {"k": "v0"}
        return "ok"

    @app.route("/mutate/<x>")
    def mutate(x: str) -> str:
        flask_session["cart"].append(x)
        flask_session["d"]["k"] = x
        flask_session.modified = False  # the save must not depend on the flag
        return "ok"

    client = app.test_client()
    assert client.get("/init").status_code == 200
    for x in ("a", "b", "c"):
        assert client.get(f"/mutate/{x}").status_code == 200
    assert client.get("/dump").get_json() == {"cart": ["a", "b", "c"], "d": {"k": "c"}}
    assert client.get("/nested/d/k2/v2").status_code == 200
    assert client.get("/dump").get_json() == {"cart": ["a", "b", "c"], "d": {"k": "c", "k2": "v2"}}
