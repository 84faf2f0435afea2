"""Faults of the file backend: file too big (``RLIMIT_FSIZE``), disk full (a small tmpfs),
data dir deleted, read-only or replaced by a file while running, the clock stepping
backwards, records written by a newer format version.

Each gives a clear error (a 500 whose logged exception names the errno and the path) or a
fresh session — never a 500 from a read of a missing session, never a corrupted or silently
lost previously-stored session, never a temp file left behind. The mount-based tests need
root (``mount -t tmpfs``) and skip with the reason otherwise.

Run as a script (``python test_faults.py fsize DATA_DIR LIMIT``) this module is also the
child process of the ``RLIMIT_FSIZE`` test, since that limit applies to a whole process.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import _core
from flask_beaker_session.errors import ConfigurationError
from helpers import (
    FakeClock,
    all_files,
    build_app,
    client_with,
    cookie_of,
    record_files,
    store_of,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux-specific faults")


def fault_app(data_dir: Path | str, **config: Any) -> Flask:
    """``build_app`` plus ``/big/<tag>/<n>`` (stores ``tag * n`` under ``big``)."""
    app = build_app(data_dir, **config)

    @app.route("/big/<tag>/<int:n>")
    def big(tag: str, n: int) -> str:
        flask_session["big"] = tag * n
        return "ok"

    return app


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.endswith(".tmp")]


def logged_oserrors(caplog: pytest.LogCaptureFixture) -> list[OSError]:
    """The OSErrors behind the 500s Flask logged."""
    return [
        r.exc_info[1] for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], OSError)
    ]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted for the test (unmounted afterwards)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> None:
    """Writes ``path`` until the filesystem is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\1" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


# -- file too big (RLIMIT_FSIZE) -------------------------------------------------------


def _fsize_child(data_dir: str, sid: str, limit: int) -> None:
    """Child: with writes past ``limit`` bytes failing (EFBIG, SIGXFSZ ignored), tries
    an in-place save, a save that grows the record, and a new session; prints the
    statuses as JSON."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource = __import__("resource")
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    app = fault_app(data_dir)
    out = {
        "in_place": client_with(app, sid).get("/big/b/100000").status_code,
        "grow": client_with(app, sid).get("/big/c/400000").status_code,
        "read": client_with(app, sid).get("/dump").status_code,
    }
    fresh = app.test_client()
    out["new"] = fresh.get("/big/d/400000").status_code
    out["new_cookie"] = cookie_of(fresh) is not None
    print(json.dumps(out))


def test_file_too_big_fails_loudly_and_keeps_previous_version(tmp_path: Path) -> None:
    """RLIMIT_FSIZE (150 kB) below the end of a stored 100 kB session's second slot, in a
    child process: an in-place save (torn write into the older slot), a save that must
    grow the record, and a new big session each give a 500; afterwards the session
    loads as its previous version, no temp file or half-made record is left, and saves
    work again without the limit."""
    data_dir = tmp_path / "sessions"
    app = fault_app(data_dir)
    client = app.test_client()
    assert client.get("/big/a/100000").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    [record] = record_files(data_dir)
    assert record.stat().st_size > 150_000  # slot 1 lies past the limit
    before = record.read_bytes()
    done = subprocess.run(
        [sys.executable, __file__, "fsize", str(data_dir), sid, "150000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"in_place": 500, "grow": 500, "read": 200, "new": 500, "new_cookie": False}
    assert "File too large" in done.stderr  # the logged OSError (EFBIG) names the cause
    assert record_files(data_dir) == [record]
    assert temp_files(data_dir) == []
    assert record.read_bytes()[:512] == before[:512]  # the current slot is untouched
    assert client_with(app, sid).get("/dump").get_json() == {"big": "a" * 100000}
    assert client_with(app, sid).get("/big/e/100000").status_code == 200
    assert client_with(app, sid).get("/dump").get_json() == {"big": "e" * 100000}


# -- disk full (ENOSPC on a small tmpfs) -----------------------------------------------


def test_disk_full_fails_loudly_and_keeps_previous_version(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a 256 KiB tmpfs: a save too big for the free space gives a 500 (ENOSPC) and no
    temp file; with the disk filled up, an in-place save (into the record's unallocated
    second slot) and a new session give 500s too. The stored session always loads as its
    last good version, and saves work once space is freed."""
    data_dir = tmpfs / "sessions"
    app = fault_app(data_dir)
    client = app.test_client()
    assert client.get("/big/a/10000").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    [record] = record_files(data_dir)

    assert client.get("/big/x/1000000").status_code == 500
    assert temp_files(tmpfs) == []
    assert client.get("/dump").get_json() == {"big": "a" * 10000}

    fill(tmpfs / "filler")
    assert client.get("/big/b/10000").status_code == 500
    assert client.get("/dump").get_json() == {"big": "a" * 10000}
    fresh = app.test_client()
    assert fresh.get("/big/n/10000").status_code == 500
    assert cookie_of(fresh) is None
    assert record_files(data_dir) == [record]
    assert temp_files(tmpfs) == []
    errors = logged_oserrors(caplog)
    assert len(errors) == 3
    assert all(e.errno == errno.ENOSPC and e.filename for e in errors)

    (tmpfs / "filler").unlink()
    assert client.get("/big/c/10000").status_code == 200
    assert client_with(app, sid).get("/dump").get_json() == {"big": "c" * 10000}


# -- data dir deleted, read-only, or a file --------------------------------------------


@pytest.mark.parametrize("locking", [True, False])
def test_data_dir_deleted_while_running(tmp_path: Path, locking: bool) -> None:
    """The whole data dir removed under a running app: a request with the old cookie
    gets an empty session (200, nothing recreated by a read); the next write stores a
    new session under a new id and recreates the dir (0700)."""
    data_dir = tmp_path / "sessions"
    app = build_app(data_dir, SESSION_LOCKING=locking)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    shutil.rmtree(data_dir)
    resp = client.get("/dump")
    assert resp.status_code == 200
    assert resp.get_json() == {}
    assert not data_dir.exists()
    assert client.get("/set/b/2").status_code == 200
    assert cookie_of(client) not in (None, sid)
    assert client.get("/dump").get_json() == {"b": "2"}
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_data_dir_made_read_only(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The data dir's filesystem remounted read-only while running: requests that use a
    session get a 500 whose logged OSError is EROFS naming the path (a clear error,
    never a silent loss), requests that do not touch the session are unaffected, and
    once writable again the stored session is intact and usable."""
    data_dir = tmpfs / "sessions"
    app = build_app(data_dir)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    [record] = record_files(data_dir)
    before = record.read_bytes()
    done = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    assert client.get("/dump").status_code == 500
    assert client.get("/set/a/2").status_code == 500
    fresh = app.test_client()
    assert fresh.get("/set/n/1").status_code == 500
    assert cookie_of(fresh) is None
    assert fresh.get("/none").status_code == 200
    errors = logged_oserrors(caplog)
    assert len(errors) == 3
    assert all(e.errno == errno.EROFS and str(data_dir) in str(e.filename) for e in errors)
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert record.read_bytes() == before
    assert client_with(app, sid).get("/dump").get_json() == {"a": "1"}
    assert client_with(app, sid).get("/set/a/3").status_code == 200
    assert client_with(app, sid).get("/dump").get_json() == {"a": "3"}


def test_data_dir_that_is_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data dir that is a regular file: refused at init_app (ConfigurationError naming
    the path). One replaced by a file while running: a request using a stored session
    gets a 500 whose logged OSError is ENOTDIR naming the path (a broken store is not
    passed off as a missing session), as does storing a new session; a visitor without
    a cookie still reads an empty session; the file is never changed."""
    as_file = tmp_path / "not-a-dir"
    as_file.write_text("keep me")
    with pytest.raises(ConfigurationError, match="not-a-dir"):
        build_app(as_file)

    data_dir = tmp_path / "sessions"
    app = build_app(data_dir)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    shutil.rmtree(data_dir)
    data_dir.write_text("keep me")
    assert client.get("/dump").status_code == 500
    fresh = app.test_client()
    resp = fresh.get("/dump")
    assert resp.status_code == 200
    assert resp.get_json() == {}
    assert fresh.get("/set/b/2").status_code == 500
    assert cookie_of(fresh) is None
    errors = logged_oserrors(caplog)
    assert len(errors) == 2
    assert all(e.errno == errno.ENOTDIR and str(data_dir) in str(e.filename) for e in errors)
    assert data_dir.read_text() == "keep me"
    assert as_file.read_text() == "keep me"


# -- clock stepping backwards ----------------------------------------------------------


@pytest.mark.parametrize("locking", [True, False])
def test_clock_stepping_backwards(tmp_path: Path, clock: FakeClock, locking: bool) -> None:
    """The clock steps back two hours (far beyond the 60 s idle and 600 s absolute
    timeouts) and later forward again: the session is never expired or lost, reads and
    writes keep working at each step, and a sweep with the stepped-back clock removes
    nothing."""
    data_dir = tmp_path / "sessions"
    app = build_app(
        data_dir, SESSION_TIMEOUT=60, SESSION_ABSOLUTE_TIMEOUT=600, SESSION_LOCKING=locking
    )
    clock.install(app)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    sid = cookie_of(client)
    assert sid is not None

    clock.advance(-7200)
    assert client.get("/dump").get_json() == {"a": "1"}
    assert client.get("/set/b/2").status_code == 200
    assert client.get("/dump").get_json() == {"a": "1", "b": "2"}
    report = store_of(app).walk(clock(), _core.WalkMode.Sweep)
    assert report.expired == 0
    assert len(record_files(data_dir)) == 1

    clock.advance(7200)
    assert client.get("/set/c/3").status_code == 200
    assert cookie_of(client) == sid
    assert client_with(app, sid).get("/dump").get_json() == {"a": "1", "b": "2", "c": "3"}


# -- records from a newer format version -----------------------------------------------


@pytest.mark.parametrize("locking", [True, False])
def test_newer_format_version_gives_fresh_session_and_keeps_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, locking: bool
) -> None:
    """A record whose slot headers say format version 9 (written by a future release):
    reads get an empty session (200, warning logged, no new cookie), a write stores a new
    session under a new id, the version-9 record stays in place byte for byte, and the
    sweeper leaves it alone."""
    data_dir = tmp_path / "sessions"
    app = build_app(data_dir, SESSION_LOCKING=locking)
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    assert client.get("/set/a/2").status_code == 200  # both slots written
    sid = cookie_of(client)
    assert sid is not None
    [record] = record_files(data_dir)
    raw = bytearray(record.read_bytes())
    half = len(raw) // 2
    for slot in (0, half):
        assert raw[slot : slot + 4] == b"FBSR"
        raw[slot + 4 : slot + 6] = (9).to_bytes(2, "little")
    record.write_bytes(bytes(raw))

    with caplog.at_level(logging.WARNING, logger="flask_beaker_session"):
        resp = client_with(app, sid).get("/dump")
    assert resp.status_code == 200
    assert resp.get_json() == {}
    # At most the stale cookie is expired; no new session id is handed out.
    assert all("Max-Age=0" in c for c in resp.headers.getlist("Set-Cookie"))
    assert any("newer version" in r.getMessage() for r in caplog.records)
    assert record.read_bytes() == bytes(raw)

    writer = client_with(app, sid)
    assert writer.get("/set/b/1").status_code == 200
    assert cookie_of(writer) not in (None, sid)
    assert writer.get("/dump").get_json() == {"b": "1"}
    assert record.read_bytes() == bytes(raw)
    store_of(app).walk(time.time() + 10 * 86400, _core.WalkMode.Sweep)
    assert record.exists()
    assert record.read_bytes() == bytes(raw)


if __name__ == "__main__":
    if sys.argv[1] == "fsize":
        _fsize_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
