"""Hostile input and damaged storage: cookie values never become paths or select
another session, lookups create nothing, damaged or planted records are rejected (never
unpickled unless authentic) and removed, unpicklable values fail loudly without touching
the stored session, and stores are isolated per data dir and persist across apps."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from helpers import (
    COOKIE,
    SID_RE,
    all_files,
    build_app,
    client_with,
    cookie_of,
    file_store,
    record_files,
    record_path,
    session_cookies,
)

HEADER_LEN = 64


# -- helpers ---------------------------------------------------------------------------


def hostile_app(data_dir: Path, **config: Any) -> Flask:
    """``build_app`` plus ``/probe``: returns the user data found, then writes a key."""
    app = build_app(data_dir, **config)

    @app.route("/probe")
    def probe() -> Any:
        seen = {k: v for k, v in flask_session.items() if not k.startswith("_")}
        response = jsonify(seen=seen)
        flask_session["mark"] = "probe"
        return response

    return app


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: type, and for files size, content hash and mtime."""
    out: dict[str, tuple[Any, ...]] = {}
    if not root.exists():
        return out
    for p in root.rglob("*"):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = ("file", st.st_size, digest, st.st_mtime_ns)
    return out


def raw_get(app: Flask, path: str, cookie_header: str | None) -> Any:
    """A request with exactly this ``Cookie`` header (bypassing the cookie jar)."""
    client = app.test_client(use_cookies=False)
    overrides = {} if cookie_header is None else {"HTTP_COOKIE": cookie_header}
    return client.get(path, environ_overrides=overrides)


def cookie_value(header: str) -> str:
    return header[len(COOKIE) + 1 :].split(";", 1)[0]


def is_deletion(header: str) -> bool:
    low = header.lower()
    return cookie_value(header) == "" and ("max-age=0" in low or "1970" in low)


def new_session(app: Flask, key: str = "secret", value: str = "victim-data") -> str:
    client = app.test_client()
    assert client.get(f"/set/{key}/{value}").status_code == 200
    sid = cookie_of(client)
    assert sid is not None and SID_RE.fullmatch(sid)
    return sid


class Bomb:
    """Unpickling this creates ``marker`` (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


def bomb_bytes(marker: Path) -> bytes:
    return pickle.dumps({"evil": Bomb(marker)}, protocol=pickle.HIGHEST_PROTOCOL)


def test_bomb_is_live(tmp_path: Path) -> None:
    """Sanity: the pickle bomb used below really executes when unpickled."""
    marker = tmp_path / "sanity-marker"
    pickle.loads(bomb_bytes(marker))
    assert marker.is_dir()


# -- hostile cookie values -------------------------------------------------------------


@pytest.fixture
def arena(tmp_path: Path) -> dict[str, Any]:
    """A data dir with one victim session, a canary dir with a canary file and a pickle
    bomb next to it (outside the data dir)."""
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "canary.txt").write_text("canary")
    marker = canary / "PWNED"
    (canary / "bomb.pkl").write_bytes(bomb_bytes(marker))
    (canary / "bomb.cache").write_bytes(bomb_bytes(marker))
    data_dir = tmp_path / "sessions"
    app = hostile_app(data_dir)
    victim = new_session(app)
    return {
        "root": tmp_path,
        "canary": canary,
        "marker": marker,
        "data_dir": data_dir,
        "app": app,
        "victim": victim,
    }


def _utf8_as_latin1(text: str) -> str:
    # WSGI environ strings are the raw header bytes decoded as latin-1.
    return text.encode("utf-8").decode("latin-1")


def hostile_values(canary: Path, victim: str) -> list[str]:
    values = [
        "../../etc/passwd",
        "../../../canary/canary.txt",
        "../" * 12 + "etc/passwd",
        "../" * 12 + str(canary).lstrip("/") + "/canary.txt",
        "..%2F..%2Fcanary%2Fcanary.txt",
        "..%252F..%252Fcanary",
        "..\\..\\canary\\canary.txt",
        "..poc",
        ".",
        "..",
        "/",
        "/etc/passwd",
        str(canary / "canary.txt"),
        str(canary / "bomb.pkl"),
        "",
        "abc\x00def",
        "\x00" * 32,
        "%00",
        "\x01\x02\x7f",
        "*",
        "~root",
        "$HOME",
        "a%0d%0aSet-Cookie:%20x=y",
        "a\r\nSet-Cookie: x=y",
        "a" * 10 * 1024,
        _utf8_as_latin1("ünïcødé-日本-🍪"),
        "\xff\xfe\xfd",
        " ",
        "abc",
        "0" * 31,
        "0" * 33,
        "0" * 64,
        victim.upper(),
        victim[:-1],
        victim + "0",
        victim[:16],
        secrets.token_hex(16),
        "0123456789abcdef0123456789abcdeg",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        '"abc\\073 Domain=evil"',
        '"\\056\\056\\057\\056\\056\\057canary"',
        '"abc',
        "a.b",
        "x/../evil",
    ]
    for depth in range(1, 8):
        values.append("../" * depth + "canary/bomb.pkl")
        values.append("..%2F" * depth + "canary%2Fbomb.pkl")
    return values


def hostile_headers(canary: Path, victim: str) -> list[str]:
    headers = [f"{COOKIE}={v}" for v in hostile_values(canary, victim)]
    pad = "; ".join(f"pad{i}={'x' * 1000}" for i in range(100))
    many = "; ".join(f"c{i}=v{i}" for i in range(500))
    headers += [
        f"{pad}; {COOKIE}=../../../canary/canary.txt",  # ~100 KB Cookie header
        f"{many}; {COOKIE}={'../' * 12}etc/passwd",  # 500 other cookies
        f"{COOKIE}=../../x; {COOKIE}=..%2F..",  # duplicate names
        f"{COOKIE}={secrets.token_hex(16)}; {COOKIE}=../etc",
        f"{COOKIE}=; {COOKIE}=",
        ";;;; ,, ;=;",
        f"{COOKIE}",
        f"{COOKIE}==",
    ]
    return headers


def _check_fresh_write(arena: dict[str, Any], header: str, issued: set[str]) -> None:
    app, data_dir, root = arena["app"], arena["data_dir"], arena["root"]
    before = snapshot(root)
    resp = raw_get(app, "/probe", header)
    assert resp.status_code == 200, header[:80]
    assert resp.get_json() == {"seen": {}}, header[:80]
    cookies = session_cookies(resp)
    assert len(cookies) == 1, (header[:80], cookies)
    new_id = cookie_value(cookies[0])
    assert SID_RE.fullmatch(new_id), cookies[0][:200]
    assert new_id != arena["victim"]
    assert new_id not in issued, "a hostile value got an id that was already issued"
    for hostile in re.findall(rf"{re.escape(COOKIE)}=([^;]*)", header):
        assert new_id != hostile
        if len(hostile.strip()) >= 4:  # never echoed into any Set-Cookie
            assert all(hostile not in h for h in resp.headers.getlist("Set-Cookie"))
    for h in resp.headers.getlist("Set-Cookie"):
        assert "evil" not in h.lower() and "x=y" not in h, h[:200]
    issued.add(new_id)
    after = snapshot(root)
    # Nothing existing changed (victim record, canary); the only new file is the new
    # session's record, inside the data dir.
    assert {k: v for k, v in after.items() if k in before} == before, header[:80]
    added = {k for k in after if k not in before}
    new_files = {k for k in added if after[k][0] != "dir"}
    fbs1 = str((data_dir / "fbs1").relative_to(root))
    assert new_files == {str(record_path(data_dir, new_id).relative_to(root))}
    assert all(k.startswith(fbs1 + os.sep) for k in added), added
    assert not arena["marker"].exists()


def test_hostile_cookies_on_writing_view_get_new_server_id(
    arena: dict[str, Any],
) -> None:
    """Each hostile cookie (traversal, NUL, sizes, unicode, wrong lengths, upper-case
    copy, never-issued ids, octal escapes, duplicates), sent twice: 200, no data of
    another session, a new 32-hex server id, nothing touched outside the data dir."""
    issued = {arena["victim"]}
    # Positive control: a raw Cookie header with the real id does reach the session.
    resp = raw_get(arena["app"], "/dump", f"{COOKIE}={arena['victim']}")
    assert resp.get_json() == {"secret": "victim-data"}
    headers = hostile_headers(arena["canary"], arena["victim"])
    for header in headers:
        _check_fresh_write(arena, header, issued)
        _check_fresh_write(arena, header, issued)  # same value again: no shared state
    assert len(issued) == 2 * len(headers) + 1
    # The victim's session is intact and holds only its own data.
    resp = client_with(arena["app"], arena["victim"]).get("/dump")
    assert resp.get_json() == {"secret": "victim-data"}
    assert (arena["canary"] / "canary.txt").read_text() == "canary"


def test_hostile_cookies_on_read_only_view_create_nothing(
    arena: dict[str, Any],
) -> None:
    """A read-only view with any hostile cookie: 200, no data, no new id cookie, and
    not a single byte, file, directory or mtime changes anywhere under the tmp dir."""
    app, root = arena["app"], arena["root"]
    resp = raw_get(app, "/get/secret", f"{COOKIE}={arena['victim']}")
    assert resp.get_data(as_text=True) == "victim-data"  # positive control
    for header in hostile_headers(arena["canary"], arena["victim"]):
        before = snapshot(root)
        for path in ("/get/secret", "/dump"):
            resp = raw_get(app, path, header)
            assert resp.status_code == 200, header[:80]
            assert resp.get_data(as_text=True).strip() in ("None", "{}"), header[:80]
            for h in session_cookies(resp):
                assert is_deletion(h), h[:200]
        assert snapshot(root) == before, header[:80]
    assert not arena["marker"].exists()


def test_other_cookies_never_select_a_session(arena: dict[str, Any]) -> None:
    """500 other cookies carrying the victim's id under other names select nothing."""
    victim = arena["victim"]
    names = ["session", "beaker.session", "beaker.session.id2", "BEAKER.SESSION.ID"]
    names += [f"c{i}" for i in range(496)]
    header = "; ".join(f"{n}={victim}" for n in names)
    resp = raw_get(arena["app"], "/probe", header)
    assert resp.status_code == 200
    assert resp.get_json() == {"seen": {}}
    assert cookie_value(session_cookies(resp)[0]) != victim


def test_unknown_ids_create_no_data_dir(tmp_path: Path) -> None:
    """200 random well-formed unknown ids on read-only views: nothing is created in the
    data dir (init_app made it, empty) and no id cookie is issued."""
    data_dir = tmp_path / "sessions"
    app = build_app(data_dir)
    for i in range(200):
        view = "/dump" if i % 2 else "/get/x"
        resp = raw_get(app, view, f"{COOKIE}={secrets.token_hex(16)}")
        assert resp.status_code == 200
        assert all(is_deletion(h) for h in session_cookies(resp))
    assert all_files(data_dir) == []  # init_app created it, nothing more
    assert set(snapshot(tmp_path)) == {"sessions"} and snapshot(data_dir) == {}


# -- damaged or planted records --------------------------------------------------------


def _payload_len(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 32)[0])


def _flip(at: Callable[[bytes], int]) -> Callable[[Path, Path], None]:
    def damage(path: Path, data_dir: Path) -> None:
        data = bytearray(path.read_bytes())
        data[at(bytes(data))] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _truncate(keep: Callable[[int], int]) -> Callable[[Path, Path], None]:
    def damage(path: Path, data_dir: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return damage


def _copy_other(path: Path, data_dir: Path) -> None:
    other = new_session(build_app(data_dir), "other", "other-data")
    path.write_bytes(record_path(data_dir, other).read_bytes())


def _raw_bomb(path: Path, data_dir: Path) -> None:
    path.write_bytes(bomb_bytes(data_dir.parent / "PWNED"))


DAMAGES: dict[str, Callable[[Path, Path], None]] = {
    "truncated-half": _truncate(lambda n: n // 2),
    "truncated-in-header": _truncate(lambda n: 40),
    "truncated-into-payload": _truncate(lambda n: HEADER_LEN + 6),
    "truncated-one-slot": _truncate(lambda n: n // 2 + 1),
    "truncated-last-byte": _truncate(lambda n: n - 1),
    "zero-bytes": _truncate(lambda n: 0),
    "random-garbage": lambda p, d: p.write_bytes(os.urandom(p.stat().st_size)),
    "text": lambda p, d: p.write_text("secret=victim-data\n" * 20),
    "4mb-garbage": lambda p, d: p.write_bytes(os.urandom(4 << 20)),
    "zeros-same-size": lambda p, d: p.write_bytes(bytes(p.stat().st_size)),
    "flip-magic": _flip(lambda b: 0),
    "flip-seq": _flip(lambda b: 9),
    "flip-created": _flip(lambda b: 17),
    "flip-saved-at": _flip(lambda b: 25),
    "flip-payload-len": _flip(lambda b: 33),
    "flip-reserved": _flip(lambda b: 40),
    "flip-tag": _flip(lambda b: 50),
    "flip-tag-last": _flip(lambda b: 63),
    "flip-payload-first": _flip(lambda b: HEADER_LEN),
    "flip-payload-middle": _flip(lambda b: HEADER_LEN + _payload_len(b) // 2),
    "flip-payload-last": _flip(lambda b: HEADER_LEN + _payload_len(b) - 1),
    "record-of-another-id": _copy_other,
    "raw-pickle-bomb": _raw_bomb,
}


#: Damage that only removes the empty second slot (and unused capacity) of a record
#: written once: the authenticated first slot is intact, so returning exactly the
#: original data is as correct as starting afresh (reliability.md §3.2 8).
ORIGINAL_OK = {"truncated-half"}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_damaged_record_gives_fresh_session(tmp_path: Path, kind: str) -> None:
    """A damaged record: 200, no (altered) data, a new id, and the damaged record is
    removed; other sessions are unaffected; nothing is unpickled from it."""
    data_dir = tmp_path / "sessions"
    app = hostile_app(data_dir)
    sid = new_session(app)
    path = record_path(data_dir, sid)
    assert record_files(data_dir) == [path]
    DAMAGES[kind](path, data_dir)
    others = {p: p.read_bytes() for p in record_files(data_dir) if p != path}
    resp = client_with(app, sid).get("/probe")
    assert resp.status_code == 200
    if kind in ORIGINAL_OK and resp.get_json() == {"seen": {"secret": "victim-data"}}:
        # Exactly the original, still under its id; and it stays usable.
        assert session_cookies(resp) == []
        expected = {"secret": "victim-data", "mark": "probe"}
        assert client_with(app, sid).get("/dump").get_json() == expected
        return
    assert resp.get_json() == {"seen": {}}
    new_id = cookie_value(session_cookies(resp)[0])
    assert SID_RE.fullmatch(new_id) and new_id != sid
    assert not path.exists() and not path.is_symlink()
    assert client_with(app, new_id).get("/dump").get_json() == {"mark": "probe"}
    # The old id stays dead; other records untouched.
    assert client_with(app, sid).get("/dump").get_json() == {}
    assert {p: p.read_bytes() for p in others} == others
    assert not (tmp_path / "PWNED").exists()
    if kind == "record-of-another-id":
        (other_path,) = others
        assert other_path.exists()
    assert not [f for f in all_files(data_dir) if f.name.endswith(".tmp")]


def test_damaged_record_on_read_only_view(tmp_path: Path) -> None:
    """A read-only view over a garbled record: 200, empty, record removed."""
    data_dir = tmp_path / "sessions"
    app = hostile_app(data_dir)
    sid = new_session(app)
    path = record_path(data_dir, sid)
    path.write_bytes(os.urandom(path.stat().st_size))
    resp = client_with(app, sid).get("/dump")
    assert resp.status_code == 200 and resp.get_json() == {}
    assert record_files(data_dir) == []


def test_newest_slot_damaged_never_returns_altered_data(tmp_path: Path) -> None:
    """A record whose newest slot is damaged returns the previous version exactly (or
    nothing): never altered data."""
    data_dir = tmp_path / "sessions"
    app = hostile_app(data_dir)
    sid = new_session(app, "a", "1")
    assert client_with(app, sid).get("/set/a/2").status_code == 200
    path = record_path(data_dir, sid)
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    assert struct.unpack_from("<Q", data, half + 8)[0] == 2  # version 2 is in slot 1
    data[half + HEADER_LEN + 3] ^= 0x01
    path.write_bytes(bytes(data))
    resp = client_with(app, sid).get("/dump")
    assert resp.status_code == 200
    assert resp.get_json() in ({"a": "1"}, {})


@pytest.mark.parametrize("writer_key", ["another-secret", None], ids=["other-key", "no-key"])
def test_record_with_wrong_key_rejected(tmp_path: Path, writer_key: str | None) -> None:
    """A record written with another SECRET_KEY, or without one, is rejected (and
    removed) by an app with a SECRET_KEY; the writer itself could read it."""
    data_dir = tmp_path / "sessions"
    writer = hostile_app(data_dir, SECRET_KEY=writer_key)
    sid = new_session(writer)
    assert client_with(writer, sid).get("/dump").get_json() == {"secret": "victim-data"}
    path = record_path(data_dir, sid)
    assert path.is_file()
    reader = hostile_app(data_dir)  # SECRET_KEY="test-secret"
    resp = client_with(reader, sid).get("/probe")
    assert resp.status_code == 200
    assert resp.get_json() == {"seen": {}}
    assert cookie_value(session_cookies(resp)[0]) != sid
    assert not path.exists()


def test_planted_pickle_bomb_record_never_executes(tmp_path: Path) -> None:
    """A well-framed record holding a pickle bomb, tagged without the secret key (what
    an attacker who can write the data dir can make), is rejected before unpickling."""
    data_dir = tmp_path / "sessions"
    marker = tmp_path / "PWNED"
    planter = file_store(data_dir, keys=[], lock=1.0)
    # Sanity: the planting method makes records an unkeyed app accepts.
    benign = planter.new_id()
    now = time.time()
    planter.create(benign, pickle.dumps({"planted": "yes"}), now, now)
    unkeyed = hostile_app(data_dir, SECRET_KEY=None)
    assert client_with(unkeyed, benign).get("/dump").get_json() == {"planted": "yes"}
    bomb_id = planter.new_id()
    planter.create(bomb_id, bomb_bytes(marker), now, now)
    app = hostile_app(data_dir)
    for path in ("/probe", "/dump", "/get/evil"):
        resp = client_with(app, bomb_id).get(path)
        assert resp.status_code == 200
    assert not marker.exists()
    assert not record_path(data_dir, bomb_id).exists()


@pytest.mark.posix_only(reason="symlinks (need privileges on Windows)")
@pytest.mark.parametrize("target_kind", ["outside-file", "other-session-record"])
@pytest.mark.parametrize("view", ["/probe", "/dump", "/delete", "/set/secret/x"])
def test_symlink_at_record_path_not_followed(tmp_path: Path, target_kind: str, view: str) -> None:
    """A symlink planted at a record path is never followed: the target (a file outside
    the data dir, or another session's record) is neither read, written nor deleted."""
    data_dir = tmp_path / "sessions"
    app = hostile_app(data_dir)
    sid = new_session(app)
    path = record_path(data_dir, sid)
    if target_kind == "outside-file":
        outside = tmp_path / "outside"
        outside.mkdir()
        target = outside / "target.bin"
        target.write_bytes(b"precious" * 100)
    else:
        target = record_path(data_dir, new_session(app, "other", "other-data"))
    # (The planted link itself is not compared: both records may share a shard directory,
    # and what the store does with the link is checked below.)
    before = {n: v for n, v in snapshot(target.parent).items() if n != path.name}
    path.unlink()
    path.symlink_to(target)
    resp = client_with(app, sid).get(view)
    assert resp.status_code == 200
    if view == "/probe":
        assert resp.get_json() == {"seen": {}}
    if view == "/dump":
        assert resp.get_json() == {}
    # Every file that was there is untouched (a new session's record may land in the same
    # shard directory as the target: that is not the target being touched).
    after = snapshot(target.parent)
    assert {name: after.get(name) for name in before} == before
    assert target.is_file()
    assert not path.exists() or not path.is_symlink()


# -- unpicklable values ----------------------------------------------------------------


def _unpicklable_app(data_dir: Path, propagate: bool, opened: list[Any]) -> Flask:
    app = build_app(data_dir, PROPAGATE_EXCEPTIONS=propagate, SESSION_LOCK_TIMEOUT=1)

    def make(kind: str) -> Any:
        if kind == "lambda":
            return lambda: None
        if kind == "lock":
            return threading.Lock()
        f = open(os.devnull)  # noqa: SIM115 - closed by the test
        opened.append(f)
        return f

    @app.route("/bad/<kind>")
    def bad(kind: str) -> str:
        flask_session["good"] = "changed"
        flask_session[f"bad_{kind}"] = make(kind)
        return "ok"

    return app


@pytest.mark.parametrize("propagate", [True, False])
@pytest.mark.parametrize("kind", ["lambda", "lock", "file"])
def test_unpicklable_value_fails_loudly_store_unchanged(
    tmp_path: Path, kind: str, propagate: bool
) -> None:
    """An unpicklable value: TypeError naming the key (or a 500), the stored record's
    bytes unchanged, no temp file, the session still usable; a new session with such a
    value stores nothing."""
    data_dir = tmp_path / "sessions"
    opened: list[Any] = []
    app = _unpicklable_app(data_dir, propagate, opened)
    try:
        sid = new_session(app, "good", "orig")
        path = record_path(data_dir, sid)
        before = path.read_bytes()
        for cookie in (sid, None):
            client = app.test_client() if cookie is None else client_with(app, cookie)
            if propagate:
                with pytest.raises(TypeError, match=f"bad_{kind}"):
                    client.get(f"/bad/{kind}")
            else:
                assert client.get(f"/bad/{kind}").status_code == 500
        assert path.read_bytes() == before
        assert record_files(data_dir) == [path]
        assert not [f for f in all_files(data_dir) if f.name.endswith(".tmp")]
        client = client_with(app, sid)
        assert client.get("/dump").get_json() == {"good": "orig"}
        assert client.get("/set/more/1").status_code == 200
        assert client.get("/dump").get_json() == {"good": "orig", "more": "1"}
    finally:
        for f in opened:
            f.close()


# -- restarts and isolation ------------------------------------------------------------


def test_data_survives_new_app_instance(tmp_path: Path) -> None:
    """Data written by one app instance is read by a brand-new one on the same dir."""
    data_dir = tmp_path / "sessions"
    first = build_app(data_dir)
    sid = new_session(first, "user", "alice")
    assert client_with(first, sid).get("/set/cart/3").status_code == 200
    del first
    second = build_app(data_dir)
    resp = client_with(second, sid).get("/dump")
    assert resp.get_json() == {"user": "alice", "cart": "3"}
    assert client_with(second, sid).get("/inc").get_data(as_text=True) == "1"
    third = build_app(data_dir)
    assert client_with(third, sid).get("/get/n").get_data(as_text=True) == "1"


def test_two_apps_with_different_dirs_are_isolated(tmp_path: Path) -> None:
    """Two apps set up with the module-level init_app on different data dirs: each keeps
    its sessions to itself, and an id from one is unknown to the other."""
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    app_a, app_b = build_app(dir_a), build_app(dir_b)
    sid_a = new_session(app_a, "who", "a")
    assert all_files(dir_b) == []
    assert client_with(app_b, sid_a).get("/dump").get_json() == {}
    assert all_files(dir_b) == []
    resp = client_with(app_b, sid_a).get("/set/who/b")
    assert resp.status_code == 200
    sid_b = cookie_value(session_cookies(resp)[0])
    assert sid_b != sid_a
    assert client_with(app_a, sid_a).get("/dump").get_json() == {"who": "a"}
    assert client_with(app_b, sid_b).get("/dump").get_json() == {"who": "b"}
    assert client_with(app_a, sid_b).get("/dump").get_json() == {}
    assert record_files(dir_a) == [record_path(dir_a, sid_a)]
    assert record_files(dir_b) == [record_path(dir_b, sid_b)]
    assert client_with(app_a, sid_a).get("/inc").status_code == 200
    assert client_with(app_b, sid_b).get("/inc").status_code == 200
