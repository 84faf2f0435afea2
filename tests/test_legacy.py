"""Sessions written by the original package (Beaker 1.10 / 1.14) keep working (§6)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from helpers import (
    FIXTURES,
    LEGACY,
    MANIFEST,
    all_files,
    build_app,
    client_with,
    record_files,
    record_path,
)
from legacy_objects import LegacyThing

LABELS = sorted(MANIFEST["labels"])
LIVE = [
    (label, name)
    for label in LABELS
    for name in MANIFEST["labels"][label]["sessions"]
    if name != "expired"
]


def entry(label: str, name: str) -> dict[str, Any]:
    return dict(MANIFEST["labels"][label]["sessions"][name])


def expected_data(label: str, name: str) -> dict[str, Any]:
    """The user data of a fixture as Python objects (from the manifest's repr)."""
    value = eval(entry(label, name)["python_repr"], {"LegacyThing": LegacyThing})
    assert isinstance(value, dict)
    return value


def legacy_file(data_dir: Path, label: str, name: str) -> Path:
    rel = Path(entry(label, name)["path"]).relative_to(label)
    return data_dir / rel


def install_fixtures(data_dir: Path) -> None:
    """Copies both Beaker trees into ``data_dir`` (before the app is built)."""
    for label in LABELS:
        shutil.copytree(LEGACY / label, data_dir, dirs_exist_ok=True)


class Probe:
    """An app whose ``/probe`` route captures the session's items as objects."""

    def __init__(self, data_dir: Path, **config: Any) -> None:
        self.app: Flask = build_app(data_dir, **config)
        self.seen: dict[str, Any] = {}

        @self.app.route("/probe")
        def probe() -> str:
            self.seen = dict(flask_session.items())
            if not flask_session.is_new:  # (reading a new session's creation time stores it)
                self.seen["_creation_time"] = flask_session["_creation_time"]
            self.seen["__is_new"] = flask_session.is_new
            self.seen["__last"] = flask_session.last_accessed
            return "ok"

    def probe(self, sid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(user data, meta) seen by a request carrying ``sid``."""
        client = client_with(self.app, sid)
        assert client.get("/probe").status_code == 200
        seen = dict(self.seen)
        meta = {k: seen.pop(k) for k in list(seen) if k.startswith("_")}
        return seen, meta


MakeProbe = Callable[..., Probe]


@pytest.fixture
def make_probe(data_dir: Path) -> MakeProbe:
    def factory(*, fixtures: bool = True, **config: Any) -> Probe:
        if fixtures:
            install_fixtures(data_dir)
        return Probe(data_dir, **config)

    return factory


@pytest.mark.parametrize(("label", "name"), LIVE)
def test_legacy_session_read_and_migrated(
    label: str, name: str, make_probe: MakeProbe, data_dir: Path
) -> None:
    """A Beaker session is read with its data, then moves to our format."""
    fixture = entry(label, name)
    sid = fixture["id"]
    probe = make_probe()
    old = legacy_file(data_dir, label, name)
    assert old.is_file()
    assert not record_path(data_dir, sid).exists()

    data, meta = probe.probe(sid)
    assert data == expected_data(label, name)
    for key, value in expected_data(label, name).items():
        assert type(data[key]) is type(value), key
    assert "_domain" not in meta and "_path" not in meta
    assert meta["_creation_time"] == fixture["_creation_time"]
    assert meta["__is_new"] is False
    assert meta["__last"] == fixture["_accessed_time"]

    # Migrated on first use: the legacy file is gone, our record holds the session.
    assert not old.exists()
    assert record_files(data_dir) == [record_path(data_dir, sid)]

    data2, meta2 = probe.probe(sid)
    assert data2 == expected_data(label, name)
    assert meta2["_creation_time"] == fixture["_creation_time"]

    # It is now read from our format: a new app with no legacy tree at all sees it.
    shutil.rmtree(data_dir / "container_file")
    data3, meta3 = Probe(data_dir).probe(sid)
    assert data3 == expected_data(label, name)
    assert meta3["_creation_time"] == fixture["_creation_time"]


def test_all_fixtures_in_one_store(make_probe: MakeProbe, data_dir: Path) -> None:
    """Both layouts side by side: every live session is readable from one data dir."""
    probe = make_probe()
    for label, name in LIVE:
        data, _ = probe.probe(entry(label, name)["id"])
        assert data == expected_data(label, name), (label, name)
    assert len(record_files(data_dir)) == len(LIVE)
    remaining = [p.name for p in all_files(data_dir / "container_file")]
    assert sorted(remaining) == sorted(f"{entry(label, 'expired')['id']}.cache" for label in LABELS)


@pytest.mark.parametrize("label", LABELS)
def test_expired_legacy_session(label: str, make_probe: MakeProbe, data_dir: Path) -> None:
    """A legacy session idle for longer than SESSION_TIMEOUT is dropped and removed."""
    probe = make_probe(SESSION_TIMEOUT=3600)
    fixture = entry(label, "expired")
    old = legacy_file(data_dir, label, "expired")
    assert old.is_file()
    data, meta = probe.probe(fixture["id"])
    assert data == {}
    assert meta["__is_new"] is True
    assert not old.exists()
    assert record_files(data_dir) == []


@pytest.mark.parametrize("label", LABELS)
def test_old_legacy_session_without_timeout(
    label: str, make_probe: MakeProbe, data_dir: Path
) -> None:
    """With SESSION_TIMEOUT=None an old legacy session is still valid."""
    probe = make_probe(SESSION_TIMEOUT=None)
    data, _ = probe.probe(entry(label, "expired")["id"])
    assert data == expected_data(label, "expired")


def test_read_legacy_off_ignores_legacy(make_probe: MakeProbe, data_dir: Path) -> None:
    """SESSION_READ_LEGACY=False: legacy files are neither read nor touched."""
    probe = make_probe(SESSION_READ_LEGACY=False)
    before = {p: p.read_bytes() for p in all_files(data_dir / "container_file")}
    for label, name in LIVE:
        data, meta = probe.probe(entry(label, name)["id"])
        assert data == {}
        assert meta["__is_new"] is True
    assert {p: p.read_bytes() for p in all_files(data_dir / "container_file")} == before
    assert record_files(data_dir) == []


def test_no_legacy_tree(make_probe: MakeProbe, data_dir: Path) -> None:
    """Without a ``container_file`` tree an unknown id is simply a fresh session."""
    probe = make_probe(fixtures=False)
    for label, name in LIVE:
        data, meta = probe.probe(entry(label, name)["id"])
        assert data == {}
        assert meta["__is_new"] is True
    assert all_files(data_dir) == []


def test_legacy_session_written_then_saved(make_probe: MakeProbe, data_dir: Path) -> None:
    """Writing to a migrated legacy session keeps the old data alongside the new."""
    probe = make_probe()
    label, name = LABELS[0], "plain"
    sid = entry(label, name)["id"]
    client = client_with(probe.app, sid)
    assert client.get("/set/extra/1").status_code == 200
    assert not legacy_file(data_dir, label, name).exists()
    data, _ = probe.probe(sid)
    assert data == {**expected_data(label, name), "extra": "1"}


def test_revert_on_legacy_session_keeps_data(make_probe: MakeProbe, data_dir: Path) -> None:
    """``revert()`` on a just-loaded legacy session restores its data, loses nothing."""
    probe = make_probe()

    @probe.app.route("/revert")
    def revert() -> str:
        flask_session["junk"] = 1
        flask_session.revert()
        return "ok"

    for label in LABELS:
        sid = entry(label, "plain")["id"]
        client = client_with(probe.app, sid)
        assert client.get("/revert").status_code == 200
        data, _ = probe.probe(sid)
        assert data == expected_data(label, "plain"), label


def _nested_legacy_pickle(levels: int) -> bytes:
    """Beaker ≤ 1.10's layout, ``{'session': {'x': [[[…]]]}}`` nested ``levels`` lists deep,
    spelled as protocol-2 opcodes (``pickle.dumps`` itself refuses to go that deep)."""
    head = b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x"
    return head + b"]" * levels + b"a" * (levels - 1) + b"ss."


_PROBE_SCRIPT = """
import sys
try:  # 2 GiB of address space: a decoder that tries to build gigabytes fails this child.
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
except ImportError:  # Windows: no limit; a crash still fails only this child
    pass
sys.path.insert(0, sys.argv[1])
from helpers import build_app, client_with
client = client_with(build_app(sys.argv[2]), sys.argv[3])
response = client.get("/dump")
print(response.status_code, response.get_data(as_text=True).strip())
"""


def _copy_bomb_legacy_pickle() -> bytes:
    """``{'session': {'x': x}}`` where ``x = []`` then 40 times DUP + APPEND: Python would
    share one list, but a decoder that copies on DUP doubles it each time (2^40 values)."""
    head = b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x"
    return head + b"]" + b"2a" * 40 + b"ss."


@pytest.mark.parametrize("planted", ["nested-50", "nested-200000", "copy-bomb"])
def test_hostile_planted_legacy_file(planted: str, make_probe: MakeProbe, data_dir: Path) -> None:
    """Regressions: legacy files planted under a real session's id that took the worker
    down inside the Rust decoder. Nested 200,000 levels deep, it overflowed the stack
    (abort); a copy bomb found by cargo-fuzz made serde-pickle allocate gigabytes. Both
    now read as no session (200, a fresh session); a merely deep file (50 levels) still
    loads. Runs in a child process with 2 GiB of address space, so a crash or a runaway
    allocation fails this test instead of pytest."""
    import subprocess
    import sys

    make_probe()  # installs the fixture trees
    label, name = LABELS[0], "plain"
    sid = entry(label, name)["id"]
    path = legacy_file(data_dir, label, name)
    if planted == "copy-bomb":
        path.write_bytes(_copy_bomb_legacy_pickle())
    else:
        path.write_bytes(_nested_legacy_pickle(int(planted.split("-")[1])))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT, str(Path(__file__).parent), str(data_dir), sid],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status, body = done.stdout.split(" ", 1)
    assert status == "200"
    if planted == "nested-50":
        nested = json.loads(body)["x"]
        for _ in range(49):
            (nested,) = nested
        assert nested == []
    else:
        assert json.loads(body) == {}


@pytest.mark.parametrize("beaker", ["110", "114"])
def test_legacy_set_holding_nan_is_migrated(
    beaker: str, make_probe: MakeProbe, data_dir: Path
) -> None:
    """Regression (found by cargo-fuzz): a legacy session holding a set of floats with NaN
    among them made the Rust decoder panic (serde-pickle sorts sets with a non-total
    order), which surfaced as an uncatchable PanicException. The session now loads with
    the set intact and is migrated by its first write."""
    probe = make_probe(SESSION_TIMEOUT=None)
    label, name = LABELS[0], "plain"
    sid = entry(label, name)["id"]
    path = legacy_file(data_dir, label, name)
    path.write_bytes((FIXTURES / "fuzz" / f"beaker{beaker}-nan-in-a-set.pickle").read_bytes())

    def floats_seen() -> tuple[int, list[float]]:
        data, meta = probe.probe(sid)
        assert meta["__is_new"] is False
        values = data["floats"]
        assert isinstance(values, set)
        nans = sum(1 for v in values if v != v)
        return nans, sorted(v for v in values if v == v)

    before = floats_seen()
    assert before[0] == 11 and len(before[1]) == 11
    client = client_with(probe.app, sid)
    assert client.get("/set/extra/1").status_code == 200
    assert not path.exists()
    assert floats_seen() == before
