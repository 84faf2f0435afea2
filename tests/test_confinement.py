"""Nothing outside ``SESSION_DATA_DIR`` is ever walked, created, opened or deleted (issue 14,
items 1, 7a, 7e; issue 15, item 11): symlinks where the store's directories belong are
reported and skipped, only names this package writes are removed, a directory at a record
path gives a fresh session, a directory at ``sweep.stamp`` does not stop the automatic
sweep, and ``stats`` counts garbage as corrupt at once and foreign files not at all.

Every scenario runs through the public API: Flask test clients and the
``flask beaker-session`` CLI, against real files."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from helpers import (
    SID_RE,
    FakeClock,
    build_app,
    client_with,
    cookie_of,
    interface_of,
    plant,
    record_files,
    record_path,
    set_age,
    store_of,
)

DAY = 86400.0
LEGACY_ID = "a" * 32


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["beaker-session", *args])


def make_victim(root: Path) -> dict[Path, bytes]:
    """A directory outside the data dir with files old and fresh, some with names a sweep
    might like; every one must survive."""
    victim = root / "victim"
    files = {
        victim / "report.pdf": b"report",
        victim / ".ssh" / "id_rsa": b"private key",
        victim / "authorized_keys": b"ssh-ed25519 AAAA",
        victim / "x.cache": b"cache",
        victim / "x.lock": b"",
        victim / "x.tmp": b"tmp",
        victim / "a" / "aa" / f"{LEGACY_ID}.cache": b"not a pickle",
        victim / "a" / "aa" / ("aa" + "0" * 38 + ".lock"): b"",
    }
    for i, (path, content) in enumerate(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        set_age(path, 30 * DAY if i % 2 == 0 else 0)
    return files


def assert_intact(files: dict[Path, bytes]) -> None:
    for path, content in files.items():
        assert path.is_file() and path.read_bytes() == content, path


def everything_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def app_at(data_dir: Path, clock: FakeClock, **config: Any) -> Flask:
    return clock.install(build_app(data_dir, SESSION_TIMEOUT=600, **config))


def new_session(app: Flask) -> str:
    client = app.test_client()
    assert client.get("/set/k/v").status_code == 200
    sid = cookie_of(client)
    assert sid is not None and SID_RE.fullmatch(sid)
    return sid


def run_all_commands(app: Flask) -> dict[str, Any]:
    """stats (JSON), sweep and clear, each a week later; the stats report."""
    interface_of(app).clock.advance(7 * DAY)  # type: ignore[attr-defined]
    stats = cli(app, "stats", "--json")
    assert stats.exit_code == 0, stats.output
    report = json.loads(stats.stdout)
    for args in (("sweep",), ("clear", "--yes")):
        result = cli(app, *args)
        assert result.exit_code == 0, result.output
    return report


# -- item 1: symlinks where directories belong ---------------------------------------------


@pytest.mark.posix_only(reason="symlinks (need privileges on Windows)")
def test_symlinked_shard_is_reported_and_never_followed(tmp_path: Path) -> None:
    """``fbs1/<xx>`` a symlink to a victim dir: sweep, clear and stats leave the victim's
    files (old and fresh) alone and count the link; new sessions are never created
    through it."""
    data_dir, clock = tmp_path / "data", FakeClock()
    files = make_victim(tmp_path)
    app = app_at(data_dir, clock)
    mine = new_session(app)
    own_shard = record_path(data_dir, mine).parent.name
    # Every other shard is a link to the victim: each new session lands in one.
    for n in range(256):
        shard = f"{n:02x}"
        if shard != own_shard:
            (data_dir / "fbs1" / shard).symlink_to(tmp_path / "victim")
    before = everything_under(tmp_path / "victim")
    # Requests that create sessions: never through a link. A link where one of the
    # store's directories belongs is removed (the link, not its target) and the
    # directory made, so every request gets its session.
    created = [app.test_client().get("/set/k/v") for _ in range(20)]
    assert all(r.status_code == 200 for r in created)
    assert everything_under(tmp_path / "victim") == before
    assert client_with(app, mine).get("/get/k").data == b"v"
    links = sum(p.is_symlink() for p in (data_dir / "fbs1").iterdir())
    assert 255 - 20 <= links < 255

    report = run_all_commands(app)
    assert report["symlinks"] == links
    assert report["records"] == 1 + len(created)
    assert_intact(files)
    assert everything_under(tmp_path / "victim") == before


@pytest.mark.posix_only(reason="symlinks (need privileges on Windows)")
def test_symlinked_records_dir_is_reported_and_never_followed(tmp_path: Path) -> None:
    """``fbs1`` itself a symlink to a directory shaped like a store: nothing in it is
    read, counted, created or removed."""
    data_dir, clock = tmp_path / "data", FakeClock()
    files = make_victim(tmp_path)
    # The victim holds a shard with record-like names, as if it were a store.
    fake_shard = tmp_path / "victim" / "ab"
    fake_shard.mkdir()
    fake = fake_shard / ("ab" + "0" * 62)
    fake.write_bytes(b"precious")
    set_age(fake, 30 * DAY)
    files[fake] = b"precious"
    data_dir.mkdir()
    (data_dir / "fbs1").symlink_to(tmp_path / "victim")
    app = app_at(data_dir, clock)
    before = everything_under(tmp_path / "victim")
    for _ in range(5):
        assert app.test_client().get("/set/k/v").status_code == 200
    assert everything_under(tmp_path / "victim") == before
    # The link was replaced by the store's own directory (its target untouched).
    assert not (data_dir / "fbs1").is_symlink()

    report = run_all_commands(app)
    assert report["symlinks"] == 0
    assert report["records"] == 5
    assert_intact(files)
    assert everything_under(tmp_path / "victim") == before


@pytest.mark.posix_only(reason="symlinks (need privileges on Windows)")
@pytest.mark.parametrize("where", ["container_file", "container_file/a", "container_file/a/aa"])
def test_symlinked_legacy_tree_is_never_followed(tmp_path: Path, where: str) -> None:
    """A symlink at or below ``container_file/`` (and at ``container_file_lock/``): the
    sweep deletes no ``*.cache``/``*.lock`` below its target, a request with the legacy
    id reads nothing there, ``migrate`` finds nothing."""
    data_dir, clock = tmp_path / "data", FakeClock()
    files = make_victim(tmp_path)
    victim = tmp_path / "victim"
    target = {"container_file": victim, "container_file/a": victim / "a"}.get(
        where, victim / "a" / "aa"
    )
    link = data_dir / where
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    (data_dir / "container_file_lock").symlink_to(victim)
    app = app_at(data_dir, clock)
    client = client_with(app, LEGACY_ID)
    assert client.get("/get/user").data == b"None"
    assert cookie_of(client) != LEGACY_ID
    migrate = cli(app, "migrate")
    assert migrate.exit_code == 0, migrate.output
    assert "migrated 0 of 0" in migrate.output

    report = run_all_commands(app)
    assert report["symlinks"] == 2
    assert report["legacy"] == 0 and report["legacy_locks"] == 0
    assert_intact(files)


def test_only_names_this_package_writes_are_removed(tmp_path: Path) -> None:
    """Foreign files inside the store (old, with tempting suffixes) survive sweep and
    clear, and ``stats`` counts them as foreign, not as sessions."""
    data_dir, clock = tmp_path / "data", FakeClock()
    app = app_at(data_dir, clock)
    sid = new_session(app)
    shard = record_path(data_dir, sid).parent
    foreign = {
        shard / "report.pdf": b"report",
        shard / "x.tmp": b"tmp",
        shard / "authorized_keys": b"keys",
        data_dir / "fbs1" / "README": b"readme",
        data_dir / "container_file" / "a" / "aa" / "x.cache": b"cache",
        data_dir / "container_file_lock" / "a" / "aa" / "x.lock": b"",
    }
    for path, content in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        set_age(path, 30 * DAY)
    stats = cli(app, "stats", "--json")
    report = json.loads(stats.stdout)
    assert report["foreign"] == len(foreign)
    assert report["records"] == 1 and report["live"] == 1
    assert report["temp"] == 0 and report["legacy"] == 0 and report["legacy_locks"] == 0
    assert "left alone: 6 entries" in cli(app, "stats").output
    run_all_commands(app)
    assert_intact(foreign)
    assert not record_path(data_dir, sid).exists()


# -- item 7a: a directory at a record path ----------------------------------------------------


@pytest.mark.parametrize("content", [False, True], ids=["empty", "not-empty"])
def test_directory_at_record_path_gives_a_fresh_session(tmp_path: Path, content: bool) -> None:
    """A directory where a session's record belongs: the session's requests get a fresh
    session (not a 500, not twice); the sweeper removes an empty one and reports the
    other."""
    data_dir, clock = tmp_path / "data", FakeClock()
    app = app_at(data_dir, clock)
    sid = new_session(app)
    path = record_path(data_dir, sid)
    path.unlink()
    path.mkdir()
    if content:
        (path / "inside").write_bytes(b"precious")
    client = client_with(app, sid)
    for _ in range(3):
        response = client.get("/inc")
        assert response.status_code == 200
    assert response.data == b"3"
    assert cookie_of(client) != sid
    sweep = cli(app, "sweep")
    assert sweep.exit_code == 0, sweep.output
    if content:
        assert (path / "inside").read_bytes() == b"precious"
        assert "left alone: 1 entries" in sweep.output
    else:
        assert not path.exists()


# -- item 7e: a directory at sweep.stamp ------------------------------------------------------


def test_directory_at_sweep_stamp_does_not_stop_the_automatic_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A (non-empty) directory planted at ``sweep.stamp``: the background sweep still
    removes expired records, and the obstacle is logged once."""
    data_dir = tmp_path / "data"
    (data_dir / "sweep.stamp" / "planted").mkdir(parents=True)
    app = build_app(data_dir, SESSION_TIMEOUT=60, SESSION_SWEEP_INTERVAL=0.3)
    sweeper = interface_of(app).sweeper
    assert sweeper is not None
    try:
        live = plant(store_of(app), data_dir, 1, age=5)
        plant(store_of(app), data_dir, 10, age=3600)
        with caplog.at_level(logging.WARNING, logger="flask_beaker_session"):
            app.test_client().get("/none")  # starts the sweeper thread
            deadline = time.time() + 5
            while len(record_files(data_dir)) > 1 and time.time() < deadline:
                time.sleep(0.05)
            assert record_files(data_dir) == [record_path(data_dir, live[0])]
            # And it goes on sweeping, once per interval.
            first = sweeper.last_report
            assert first is not None and first.foreign == 1
            while sweeper.last_report is first and time.time() < deadline:
                time.sleep(0.05)
            assert sweeper.last_report is not first
        # Reported at WARNING at most once per process (earlier tests of this process may
        # have had it), then at DEBUG.
        warnings = [r for r in caplog.records if "did not write" in r.getMessage()]
        assert len(warnings) <= 1
    finally:
        sweeper.stop()
    assert (data_dir / "sweep.stamp" / "planted").is_dir()


# -- issue 15 item 11: what stats counts --------------------------------------------------------


def test_stats_counts_a_garbled_record_as_corrupt_at_once(tmp_path: Path) -> None:
    """A record overwritten with random bytes is corrupt in ``stats`` right away (not live
    until it expires); its next use gives a fresh session."""
    data_dir, clock = tmp_path / "data", FakeClock()
    app = app_at(data_dir, clock)
    good, bad = new_session(app), new_session(app)
    path = record_path(data_dir, bad)
    path.write_bytes(os.urandom(path.stat().st_size))
    report = json.loads(cli(app, "stats", "--json").stdout)
    assert (report["records"], report["live"], report["corrupt"]) == (2, 1, 1)
    client = client_with(app, bad)
    assert client.get("/get/k").data == b"None"
    assert cookie_of(client) != bad
    assert client_with(app, good).get("/get/k").data == b"v"
