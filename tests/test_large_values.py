"""Large values (issue 17, item 5: "a request pays for what it touches"): a value whose
pickle is at least ``_core.LARGE_VALUE`` bytes is stored in a segment of its own (record
format version 3), read only when the request uses it, and reused as stored by a save that
did not change it.

Shown by behaviour, not timing: a large value whose class cannot be unpickled in this
process does not disturb a request that reads a small key; a save that changes only a small
key leaves the large segment's bytes on disk identical; a damaged segment makes its key
absent (logged as a corrupt record), never a 500 and never unpickled; no placeholder ever
reaches user code, whatever dict method, JSON, pickle or copy reads the session."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session.errors import SessionTooLargeError
from helpers import build_app, client_with, cookie_of, record_path
from postgres_server import PostgresServer, table_for
from redis_server import RedisServer
from test_encryption import all_bytes, aof_server, marker, redis_dump  # noqa: F401

HEADER_LEN = 64
LARGE = _core.LARGE_VALUE
BLOB_LEN = 300_000


class Probe:
    """A large session value that counts how often it is unpickled."""

    loads = 0

    def __init__(self, size: int = 2 * LARGE) -> None:
        self.fill = "p" * size

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).loads += 1
        self.__dict__.update(state)


class Vanishing:
    """A large value whose class is removed from this module by a test (as after a
    deployment that dropped it): it then cannot be unpickled here."""

    def __init__(self) -> None:
        self.fill = "v" * (2 * LARGE)


def large_app(data_dir: Path | str, **config: Any) -> Flask:
    """An app whose sessions hold a large bytes blob, a large object and a small counter."""
    app = build_app(data_dir, **config)

    @app.route("/fill")
    def fill() -> str:
        flask_session["blob"] = bytes(range(256)) * (BLOB_LEN // 256)
        flask_session["probe"] = Probe()
        flask_session["n"] = 0
        return "ok"

    @app.route("/blob")
    def blob() -> str:
        # The bench's route: read the blob's length, increment a counter.
        size = len(flask_session["blob"])
        flask_session["n"] = flask_session.get("n", 0) + 1
        return str(size)

    @app.route("/n")
    def n() -> str:
        return str(flask_session.get("n"))

    @app.route("/bump")
    def bump() -> str:
        flask_session["n"] = flask_session.get("n", 0) + 1
        return str(flask_session["n"])

    @app.route("/probe")
    def probe() -> str:
        value = flask_session.get("probe")
        return type(value).__name__

    @app.route("/has/<key>")
    def has(key: str) -> str:
        return str(key in flask_session)

    @app.route("/vanishing")
    def vanishing() -> str:
        flask_session["gone"] = Vanishing()
        return "ok"

    @app.route("/revert")
    def revert() -> str:
        flask_session["blob"] = b"changed"
        flask_session["probe"].fill = "mutated"
        flask_session.revert()
        return f"{len(flask_session['blob'])} {len(flask_session['probe'].fill)}"

    @app.route("/mutate")
    def mutate() -> str:
        flask_session["probe"].fill = "q" * (3 * LARGE)
        return "ok"

    @app.route("/fill-len")
    def fill_len() -> str:
        return str(len(flask_session["probe"].fill))

    return app


def filled(app: Flask) -> str:
    client = app.test_client()
    assert client.get("/fill").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return sid


def get(app: Flask, sid: str, path: str) -> str:
    response = client_with(app, sid).get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


# -- the record on disk ------------------------------------------------------------------


def current_slot(path: Path) -> tuple[int, bytes, bytes]:
    """``(seq, head, segments)`` of the newest slot of a record file (trusting it)."""
    data = path.read_bytes()
    size = len(data) // 2
    best: tuple[int, bytes, bytes] | None = None
    for slot in (data[:size], data[size:]):
        if slot[:4] != b"FBSR":
            continue
        (seq,) = struct.unpack_from("<Q", slot, 8)
        (length,) = struct.unpack_from("<I", slot, 32)
        stored = slot[HEADER_LEN : HEADER_LEN + length]
        (head_len,) = struct.unpack_from("<I", stored, 0)
        entry = (seq, stored[: 4 + head_len], stored[4 + head_len :])
        if best is None or seq > best[0]:
            best = entry
    assert best is not None
    return best


@pytest.fixture(params=["file", "memory", "redis", "postgresql"])
def backend(request: pytest.FixtureRequest, data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    if request.param == "file":
        return {}
    if request.param == "memory":
        return {"SESSION_TYPE": "memory"}
    if request.param == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        return {
            "SESSION_TYPE": "postgresql",
            "SESSION_DATABASE_URL": pg.url(),
            "SESSION_DATABASE_TABLE": table_for(tmp_path.name),
        }
    server: RedisServer = request.getfixturevalue("redis_server")
    return {
        "SESSION_TYPE": "redis",
        "SESSION_REDIS_URL": server.url,
        "SESSION_REDIS_PREFIX": f"large-{tmp_path.name}:",
    }


# -- behaviour on every backend -----------------------------------------------------------


def test_large_values_round_trip_and_are_read_only_when_used(
    data_dir: Path, backend: dict[str, Any]
) -> None:
    app = large_app(data_dir, **backend)
    sid = filled(app)
    before = Probe.loads
    # Reading and writing the small counter, and reading the blob: the object stays unread.
    for i in range(1, 4):
        assert get(app, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
        assert get(app, sid, "/n") == str(i)
    assert Probe.loads == before
    assert get(app, sid, "/probe") == "Probe"
    assert Probe.loads == before + 1


def test_an_unloadable_large_value_does_not_break_reads_of_small_keys(
    data_dir: Path, backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    app = large_app(data_dir, **backend)
    sid = filled(app)
    assert get(app, sid, "/vanishing") == "ok"
    monkeypatch.delattr(sys.modules[__name__], "Vanishing")
    # Never read: small keys read and write as usual, the key is still listed.
    assert get(app, sid, "/bump") == "1"
    assert get(app, sid, "/n") == "1"
    assert get(app, sid, "/has/gone") == "True"
    # Read: absent (logged as corrupt), and the next save drops it; other values survive.
    with caplog.at_level(logging.WARNING):
        assert get(app, sid, "/get/gone") == "None"
    assert "cannot be loaded" in caplog.text
    assert get(app, sid, "/has/gone") == "False"
    assert get(app, sid, "/n") == "1"
    assert get(app, sid, "/probe") == "Probe"


BLOB = bytes(range(256)) * (BLOB_LEN // 256)

#: Every way of reading values out of a session (a large one among them, never read before).
READS: dict[str, Any] = {
    "getitem": lambda s: s["blob"],
    "get": lambda s: s.get("blob"),
    "pop": lambda s: s.pop("blob"),
    "setdefault": lambda s: s.setdefault("blob", None),
    "dict": lambda s: dict(s)["blob"],
    "unpack": lambda s: {**s}["blob"],
    "items": lambda s: dict(s.items())["blob"],
    "values": lambda s: next(v for v in s.values() if isinstance(v, bytes)),
    "copy": lambda s: s.copy()["blob"],
    "copy.copy": lambda s: copy.copy(s)["blob"],
    "deepcopy": lambda s: copy.deepcopy(s)["blob"],
    "pickle": lambda s: pickle.loads(pickle.dumps(s))["blob"],
    "or": lambda s: (s | {})["blob"],
    "ror": lambda s: ({} | s)["blob"],
    "iterate": lambda s: next(s[k] for k in s if k == "blob"),
    "popitem": lambda s: dict([s.popitem() for _ in range(len(s))])["blob"],
}


def test_no_placeholder_ever_reaches_user_code(data_dir: Path, backend: dict[str, Any]) -> None:
    app = large_app(data_dir, **backend)

    @app.route("/read/<name>")
    def read(name: str) -> str:
        value = READS[name](flask_session._get_current_object())  # type: ignore[attr-defined]
        assert value == BLOB, type(value)
        return "ok"

    @app.route("/whole")
    def whole() -> Any:
        flask_session["probe"] = "small now"
        expected = {"blob": BLOB, "probe": "small now", "n": 0}
        assert flask_session == expected
        assert flask_session.__ne__(expected) is False
        assert "unread" not in repr(flask_session)
        return "ok"

    text = "t" * (20 * LARGE)  # past SPLIT_AT: stored apart

    @app.route("/text")
    def fill_text() -> str:
        flask_session["text"] = text
        flask_session["n"] = 0
        return "ok"

    @app.route("/json/<how>")
    def as_json(how: str) -> Any:
        real = flask_session._get_current_object()  # type: ignore[attr-defined]
        # (Loaded first: the C encoder takes an empty dict for {} without asking it.)
        assert real.get("n") == 0
        if how == "dumps":
            return json.dumps(real)
        return jsonify(real)

    for name in READS:
        sid = filled(app)
        assert get(app, sid, f"/read/{name}") == "ok", name
    # Equality and repr see values, never the placeholder.
    assert get(app, filled(app), "/whole") == "ok"
    # JSON, through json.dumps and Flask's jsonify, of a session whose large value is unread.
    for how in ("dumps", "jsonify"):
        client = app.test_client()
        assert client.get("/text").status_code == 200
        sid = cookie_of(client)
        assert sid is not None
        assert json.loads(get(app, sid, f"/json/{how}")) == {"text": text, "n": 0}


def test_revert_and_mutation_of_large_values(data_dir: Path, backend: dict[str, Any]) -> None:
    app = large_app(data_dir, **backend)
    sid = filled(app)
    # revert() brings back the values as stored, read again from the record.
    assert get(app, sid, "/revert") == f"{BLOB_LEN - BLOB_LEN % 256} {2 * LARGE}"
    # An in-place change of a large value is saved (its pickle changed).
    assert get(app, sid, "/mutate") == "ok"
    assert get(app, sid, "/fill-len") == str(3 * LARGE)


def test_time_keys_sessions_read_large_values_too(data_dir: Path, backend: dict[str, Any]) -> None:
    app = large_app(data_dir, SESSION_TIME_KEYS=True, **backend)

    @app.route("/all")
    def all_values() -> Any:
        data = dict(flask_session)
        assert "_creation_time" in data and isinstance(data["probe"], Probe)
        return str(len(data["blob"]))

    sid = filled(app)
    assert get(app, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    assert get(app, sid, "/probe") == "Probe"
    assert get(app, sid, "/all") == str(BLOB_LEN - BLOB_LEN % 256)


# -- the file backend: what is written ---------------------------------------------------


@pytest.mark.parametrize("encrypt", [True, False])
def test_saving_a_small_change_reuses_the_large_segments_as_stored(
    data_dir: Path, encrypt: bool
) -> None:
    app = large_app(data_dir, SESSION_ENCRYPT=encrypt)
    sid = filled(app)
    path = record_path(data_dir, sid)
    seq, head, segments = current_slot(path)
    assert len(segments) >= BLOB_LEN
    assert get(app, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    seq2, head2, segments2 = current_slot(path)
    assert seq2 == seq + 1
    assert head2 != head
    assert segments2 == segments, "an unchanged large value was rewritten"
    # A read-only request writes nothing at all.
    before = path.read_bytes()
    assert get(app, sid, "/n") == "1"
    assert get(app, sid, "/probe") == "Probe"
    assert path.read_bytes() == before


def test_markers_in_large_values_and_their_keys_never_reach_the_disk(data_dir: Path) -> None:
    app = build_app(data_dir)
    value, key = marker(), marker()

    @app.route("/big")
    def big() -> str:
        flask_session[key] = (value + " ") * (LARGE // 8)
        flask_session["raw"] = value.encode() * (LARGE // 8)
        flask_session["small"] = 1
        return "ok"

    @app.route("/big/read")
    def big_read() -> str:
        return str(flask_session[key].startswith(value) and value.encode() in flask_session["raw"])

    client = app.test_client()
    assert client.get("/big").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    assert get(app, sid, "/inc") == "1"
    assert get(app, sid, "/big/read") == "True"
    stored = all_bytes(data_dir)
    assert value.encode() not in stored and key.encode() not in stored
    # With encryption off, the same scan does see them (the scan works).
    plain_dir = data_dir / "plain"
    plain = build_app(plain_dir, SESSION_ENCRYPT=False)
    plain.add_url_rule("/big", view_func=big)
    client = plain.test_client()
    assert client.get("/big").status_code == 200
    assert value.encode() in all_bytes(plain_dir)


def test_markers_in_large_values_never_reach_redis_dumps(aof_server: RedisServer) -> None:  # noqa: F811
    app = build_app(
        "/nonexistent-unused",
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=aof_server.url,
        SESSION_REDIS_PREFIX="large:",
    )
    value, key = marker(), marker()

    @app.route("/big")
    def big() -> str:
        flask_session[key] = (value + " ") * (LARGE // 8)
        flask_session["raw"] = value.encode() * (LARGE // 8)
        return "ok"

    for _ in range(2):
        client = app.test_client()
        assert client.get("/big").status_code == 200
        sid = cookie_of(client)
        assert sid is not None
        assert get(app, sid, "/inc") == "1"
    dump = redis_dump(aof_server)
    assert value.encode() not in dump and key.encode() not in dump


# -- tampering ----------------------------------------------------------------------------


def tamper(path: Path, edit: Any) -> None:
    data = bytearray(path.read_bytes())
    edit(data, len(data) // 2)
    path.write_bytes(bytes(data))


def newest_offset(data: bytearray, size: int) -> int:
    seqs = [
        struct.unpack_from("<Q", data, o + 8)[0] if data[o : o + 4] == b"FBSR" else -1
        for o in (0, size)
    ]
    return 0 if seqs[0] >= seqs[1] else size


def flip_in_last_segment(data: bytearray, size: int) -> None:
    base = newest_offset(data, size)
    (length,) = struct.unpack_from("<I", data, base + 32)
    data[base + HEADER_LEN + length - 100] ^= 0x01


def flip_in_head(data: bytearray, size: int) -> None:
    base = newest_offset(data, size)
    data[base + HEADER_LEN + 30] ^= 0x01


def truncate(data: bytearray, size: int) -> None:
    base = newest_offset(data, size)
    (length,) = struct.unpack_from("<I", data, base + 32)
    # Both slots cut: the record is shorter than its header says.
    del data[base + HEADER_LEN + length - 10 :]
    if base == 0:
        del data[size:]


def test_a_damaged_large_segment_makes_its_key_absent_and_is_never_unpickled(
    data_dir: Path, caplog: Any
) -> None:
    app = large_app(data_dir)
    sid = filled(app)
    path = record_path(data_dir, sid)
    # The probe is the last large value: its segment ends the stored bytes.
    tamper(path, flip_in_last_segment)
    before = Probe.loads
    assert get(app, sid, "/n") == "0"
    assert get(app, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    with caplog.at_level(logging.WARNING):
        assert get(app, sid, "/probe") == "NoneType"
    assert Probe.loads == before
    assert "does not verify" in caplog.text
    # The record was rewritten without it; the rest is intact.
    assert get(app, sid, "/has/probe") == "False"
    assert get(app, sid, "/n") == "1"


@pytest.mark.parametrize("edit", [flip_in_head, truncate], ids=["head", "truncate"])
def test_a_damaged_head_or_truncated_record_is_a_fresh_session(data_dir: Path, edit: Any) -> None:
    app = large_app(data_dir)
    sid = filled(app)
    assert get(app, sid, "/bump") == "1"  # both slots written
    tamper(record_path(data_dir, sid), edit)
    before = Probe.loads
    response = client_with(app, sid).get("/probe")
    assert response.status_code == 200
    # The older slot may still be whole (a flipped head): then it is the session.
    assert response.get_data(as_text=True) in ("NoneType", "Probe")
    assert Probe.loads <= before + 1


def swap_segment(target: Path, source: Path) -> None:
    """The last large segment of ``source``'s newest slot over ``target``'s (same size)."""
    src = bytearray(source.read_bytes())
    dst = bytearray(target.read_bytes())
    s_base, d_base = newest_offset(src, len(src) // 2), newest_offset(dst, len(dst) // 2)
    (s_len,) = struct.unpack_from("<I", src, s_base + 32)
    (d_len,) = struct.unpack_from("<I", dst, d_base + 32)
    n = 2 * LARGE  # inside the probe's segment, at its end
    dst[d_base + HEADER_LEN + d_len - n : d_base + HEADER_LEN + d_len] = src[
        s_base + HEADER_LEN + s_len - n : s_base + HEADER_LEN + s_len
    ]
    target.write_bytes(bytes(dst))


def test_a_segment_from_another_record_or_version_does_not_verify(data_dir: Path) -> None:
    app = large_app(data_dir)
    a, b = filled(app), filled(app)
    before = Probe.loads
    swap_segment(record_path(data_dir, a), record_path(data_dir, b))
    assert get(app, a, "/probe") == "NoneType"
    assert get(app, a, "/n") == "0"
    # An older version of the same record: its previous slot's probe segment.
    c = filled(app)
    path = record_path(data_dir, c)
    old = path.read_bytes()
    assert get(app, c, "/mutate") == "ok"  # a new probe segment in the other slot
    before = Probe.loads  # (/mutate read it)
    previous = data_dir / "previous"
    previous.write_bytes(old)
    swap_segment(path, previous)
    assert get(app, c, "/probe") == "NoneType"
    assert Probe.loads == before


# -- upgrade from version 2 ---------------------------------------------------------------


FIXTURES = Path(__file__).parent / "fixtures" / "records_v2"


@pytest.mark.parametrize("name", ["sealed", "plain"])
def test_version_2_and_1_records_load_and_are_rewritten_as_version_3(
    data_dir: Path, name: str
) -> None:
    """Records written by the code before this format (tests/fixtures/records_v2, made with
    the build on main before segmented records: ``make_fixtures.py`` there): read, then
    saved as version 3."""
    fixture = FIXTURES / name
    meta = json.loads((fixture / "meta.json").read_text())
    sid = meta["sid"]
    target = record_path(data_dir, sid)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((fixture / "record").read_bytes())
    target.chmod(0o600)
    app = large_app(data_dir, SECRET_KEY=meta["secret"], SESSION_ENCRYPT=meta["encrypt"])
    (version,) = struct.unpack_from("<H", target.read_bytes(), 4)
    assert version == meta["version"]
    assert get(app, sid, "/n") == "0"
    assert get(app, sid, "/blob") == str(meta["blob_len"])
    data = target.read_bytes()
    size = len(data) // 2
    base = newest_offset(bytearray(data), size)
    (version,) = struct.unpack_from("<H", data, base + 4)
    assert version == 3
    assert get(app, sid, "/n") == "1"


def test_rekey_leaves_a_0_3_record_for_its_next_save(data_dir: Path) -> None:
    """A version 1 record (0.3, unencrypted) is bound to the id itself, which a walk does
    not know: ``rekey`` counts it as unencrypted; its next save seals it as version 3."""
    meta = json.loads((FIXTURES / "plain" / "meta.json").read_text())
    sid = meta["sid"]
    target = record_path(data_dir, sid)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((FIXTURES / "plain" / "record").read_bytes())
    target.chmod(0o600)
    app = large_app(data_dir, SECRET_KEY=meta["secret"])
    result = app.test_cli_runner().invoke(args=["beaker-session", "rekey"])
    assert result.exit_code == 0, result.output
    assert "1 unencrypted sessions" in result.output
    assert get(app, sid, "/bump") == "1"
    blob = bytes(range(256)) * (meta["blob_len"] // 256)
    assert blob[:600] not in all_bytes(data_dir)


def test_non_locking_sessions_merge_with_large_values(data_dir: Path) -> None:
    """Without locking the handle is given up after loading: large values are still read
    on demand, and a save merges key by key into what is stored then."""
    app = large_app(data_dir, SESSION_LOCKING=False)
    sid = filled(app)
    before = Probe.loads
    assert get(app, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    assert get(app, sid, "/bump") == "2"
    assert get(app, sid, "/probe") == "Probe"
    assert get(app, sid, "/mutate") == "ok"
    assert get(app, sid, "/fill-len") == str(3 * LARGE)
    assert get(app, sid, "/n") == "2"
    assert Probe.loads > before


def test_the_size_limit_counts_large_values_kept_as_stored(data_dir: Path) -> None:
    """A large value reused as stored still counts towards ``SESSION_MAX_SIZE``: a record
    bigger than the limit would read back as no session."""
    app = large_app(data_dir, SESSION_MAX_SIZE=100_000, TESTING=True)

    @app.route("/put/<key>/<int:size>")
    def put(key: str, size: int) -> str:
        flask_session[key] = b"x" * size
        return "ok"

    client = app.test_client()
    assert client.get("/put/a/60000").status_code == 200
    with pytest.raises(SessionTooLargeError):
        client.get("/put/b/60000")
    assert client.get("/has/a").get_data(as_text=True) == "True"
    assert client.get("/has/b").get_data(as_text=True) == "False"


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_rekey_reseals_the_head_and_every_large_segment(
    data_dir: Path, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    extra: dict[str, Any] = {}
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        extra = {
            "SESSION_TYPE": "redis",
            "SESSION_REDIS_URL": server.url,
            "SESSION_REDIS_PREFIX": f"rekey-{tmp_path.name}:",
        }
    old = large_app(data_dir, SECRET_KEY="old-key", **extra)
    sid = filled(old)
    rotated = large_app(data_dir, SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"], **extra)
    result = rotated.test_cli_runner().invoke(args=["beaker-session", "rekey"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1 of 1 sessions" in result.output
    new_only = large_app(data_dir, SECRET_KEY="new-key", **extra)
    assert get(new_only, sid, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    assert get(new_only, sid, "/probe") == "Probe"
    assert get(large_app(data_dir, SECRET_KEY="old-key", **extra), sid, "/n") == "None"


def test_regenerate_id_rewrites_large_values_under_the_new_id(
    data_dir: Path, backend: dict[str, Any]
) -> None:
    """A new id is a new record: large values never read in the request are read from the
    old record and sealed anew (a segment is bound to its record's id)."""
    app = large_app(data_dir, **backend)
    sid = filled(app)
    new = get(app, sid, "/regenerate")
    assert new != sid
    assert get(app, new, "/blob") == str(BLOB_LEN - BLOB_LEN % 256)
    assert get(app, new, "/probe") == "Probe"
    assert get(app, sid, "/n") == "None"
