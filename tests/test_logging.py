"""The ``flask_beaker_session`` logger: recurring problems are reported once, not per
request (corrupt records, lock timeouts, legacy migrations once per app; insecure settings
once per process), repeats go to DEBUG, and no log line contains a session id."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask import session as flask_session
from flask_beaker_session import session as fbs
from helpers import (
    FIXTURES,
    TESTS_DIR,
    MakeApp,
    build_app,
    client_with,
    cookie_of,
    record_files,
)

LOGGER = "flask_beaker_session"


def _explode() -> None:
    raise RuntimeError("this value cannot be loaded any more")


class Unloadable:
    """Pickles fine; unpickling it raises (like an object whose class was removed)."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return (_explode, ())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    yield caplog


def ours(caplog: pytest.LogCaptureFixture, level: int, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == level and needle in r.getMessage()
    ]


def new_session(app: Flask, **values: str) -> str:
    client = app.test_client()
    for key, value in values.items():
        client.get(f"/set/{key}/{value}")
    sid = cookie_of(client)
    assert sid is not None
    return sid


def garble(data_dir: Path) -> None:
    """Overwrites every record with bytes that are not a record."""
    for path in record_files(data_dir):
        path.write_bytes(b"\x00garbage" * (path.stat().st_size // 8 + 1))


def visit(app: Flask, sid: str, path: str = "/get/a") -> str:
    client = client_with(app, sid)
    return client.get(path).text


def test_two_corrupt_records_one_warning(
    make_app: MakeApp, data_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Two corrupt records read by two requests: one WARNING, the repeat at DEBUG; both
    visitors get a fresh session; the log names neither id."""
    app = make_app()
    first, second = new_session(app, a="1"), new_session(app, a="2")
    garble(data_dir)
    logs.clear()
    assert visit(app, first) == "None"
    assert visit(app, second) == "None"
    warnings = ours(logs, logging.WARNING, "corrupt")
    assert len(warnings) == 1, warnings
    assert "reported once" in warnings[0]
    assert len(ours(logs, logging.DEBUG, "corrupt")) == 1
    text = "\n".join(r.getMessage() for r in logs.records)
    assert first not in text and second not in text


def test_unloadable_data_counts_as_the_same_kind(
    make_app: MakeApp, data_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A record that verifies but cannot be unpickled and a garbled one are one kind of
    problem: a single warning for the app; both records are removed."""
    app = make_app()

    @app.route("/unloadable")
    def unloadable() -> str:
        flask_session["x"] = Unloadable()
        return "ok"

    client = app.test_client()
    client.get("/unloadable")
    broken = cookie_of(client)
    assert broken is not None
    before = set(record_files(data_dir))
    garbled = new_session(app, a="1")
    (path,) = set(record_files(data_dir)) - before
    path.write_bytes(b"\x00" * path.stat().st_size)
    logs.clear()
    assert visit(app, broken) == "None"
    assert visit(app, garbled) == "None"
    warnings = ours(logs, logging.WARNING, "")
    assert len(warnings) == 1, warnings
    assert "cannot be loaded" in warnings[0]
    assert len(ours(logs, logging.DEBUG, "corrupt")) == 1
    assert record_files(data_dir) == []


def test_once_per_app(data_dir: Path, logs: pytest.LogCaptureFixture) -> None:
    """Each app reports its own first corrupt record (several apps, several stores)."""
    apps = [build_app(data_dir / str(i)) for i in range(2)]
    sids = [new_session(app, a="1") for app in apps]
    for i in range(2):
        garble(data_dir / str(i))
    logs.clear()
    for app, sid in zip(apps, sids):
        visit(app, sid)
        visit(app, sid)
    assert len(ours(logs, logging.WARNING, "corrupt")) == 2


def test_lock_timeouts_one_warning(make_app: MakeApp, logs: pytest.LogCaptureFixture) -> None:
    """While one request holds a session, two others time out (503 each): one WARNING."""
    app = make_app(SESSION_LOCK_TIMEOUT=0.2)
    holding, release = threading.Event(), threading.Event()

    @app.route("/hold")
    def hold() -> str:
        flask_session["held"] = "yes"
        holding.set()
        release.wait(30)
        return "held"

    sid = new_session(app, a="1")
    holder_client = client_with(app, sid)
    holder = threading.Thread(target=holder_client.get, args=("/hold",))
    holder.start()
    try:
        assert holding.wait(30)
        logs.clear()
        for _ in range(2):
            client = client_with(app, sid)
            response = client.get("/get/a")
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
    finally:
        release.set()
        holder.join(30)
    warnings = ours(logs, logging.WARNING, "lock timeout")
    assert len(warnings) == 1, warnings
    assert len(ours(logs, logging.DEBUG, "lock timeout")) == 1
    assert visit(app, sid, "/get/held") == "yes"


def test_legacy_migrations_one_info(
    make_app: MakeApp, data_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Two sessions of the original package migrated by two requests: one INFO line."""
    for label in ("beaker110", "beaker114"):
        shutil.copytree(FIXTURES / "legacy" / label, data_dir, dirs_exist_ok=True)
    app = make_app()
    logs.clear()
    assert visit(app, "a" * 30 + "01", "/get/user") == "alice"
    assert visit(app, "b" * 30 + "01", "/get/user") == "alice"
    infos = ours(logs, logging.INFO, "migrating")
    assert len(infos) == 1, infos
    assert len(ours(logs, logging.DEBUG, "migrating")) == 1
    assert len(record_files(data_dir)) == 2


def test_normal_use_logs_no_warning(app: Flask, logs: pytest.LogCaptureFixture) -> None:
    """Creating, reading, changing and deleting sessions logs nothing at WARNING."""
    client = app.test_client()
    client.get("/set/a/1")
    client.get("/inc")
    client.get("/regenerate")
    client.get("/delete")
    client.get("/get/a")
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []


_INIT_SCRIPT = """
import logging, os, sys
sys.path.insert(0, {tests!r})
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s",
                    stream=sys.stdout)
from helpers import build_app

for i, (data_dir, config) in enumerate({apps!r}):
    app = build_app(data_dir, **config)
    client = app.test_client()
    client.get("/set/a/1")
    client.get("/get/a")
"""


def run_apps(tmp_path: Path, apps: list[tuple[str, dict[str, object]]]) -> list[str]:
    """Builds the apps in a fresh interpreter; returns the package's WARNING lines."""
    script = tmp_path / "apps.py"
    script.write_text(textwrap.dedent(_INIT_SCRIPT.format(tests=str(TESTS_DIR), apps=apps)))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    ).stdout
    return [line for line in out.splitlines() if line.startswith(f"WARNING {LOGGER}")]


def test_no_secret_key_warned_once_per_process(tmp_path: Path) -> None:
    """Three apps without SECRET_KEY in one process: one warning; memory stores (records
    never leave the process) and apps with a key: none."""
    no_key = {"SECRET_KEY": None}
    lines = run_apps(
        tmp_path,
        [(str(tmp_path / f"d{i}"), no_key) for i in range(3)]
        + [(str(tmp_path / "m"), {**no_key, "SESSION_TYPE": "memory"})],
    )
    assert len([line for line in lines if "SECRET_KEY" in line]) == 1, lines
    assert "generated in" in lines[0] and "session.key" in lines[0]
    assert run_apps(tmp_path, [(str(tmp_path / "k"), {})]) == []
    assert run_apps(tmp_path, [(str(tmp_path / "m2"), {**no_key, "SESSION_TYPE": "memory"})]) == []


@pytest.mark.posix_only(reason="mode bits (the check is POSIX-only)")
def test_data_dir_writable_by_others_warned_once(tmp_path: Path) -> None:
    """A data dir writable by other users is reported once per process, naming it; a
    private one is not reported."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    lines = run_apps(tmp_path, [(str(shared), {}), (str(shared), {}), (str(private), {})])
    assert len(lines) == 1, lines
    assert str(shared) in lines[0] and "writable by other users" in lines[0]
    assert run_apps(tmp_path, [(str(private), {})]) == []


def test_unwritable_data_dir_is_reported_at_init(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A data dir this process cannot write to is reported at init_app. Root can write
    anywhere permissions say no, so the test mounts a read-only tmpfs (skipped where
    mounting is not allowed)."""
    data_dir = tmp_path / "readonly"
    data_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(data_dir)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr!r}")
    try:
        app = Flask(__name__)
        app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="k")
        fbs.init_app(app)
        assert any("is not writable by this process" in r.getMessage() for r in logs.records)
    finally:
        subprocess.run(["umount", str(data_dir)], check=False)


def test_garbled_and_foreign_key_records_are_told_apart(
    make_app: MakeApp, data_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A garbled record is reported as corrupt; a whole record whose tag fails (written
    under another SECRET_KEY) names the likely causes instead."""
    app = make_app()
    garbled = new_session(app, a="1")
    garble(data_dir)
    foreign = new_session(build_app(data_dir, SECRET_KEY="another-worker's-key"), a="2")
    logs.clear()
    assert visit(app, garbled) == "None"
    assert visit(app, foreign) == "None"
    (corrupt,) = ours(logs, logging.WARNING, "torn or garbled")
    assert "different key" not in corrupt
    (unauthentic,) = ours(logs, logging.WARNING, "written with a different key")
    assert "SECRET_KEY" in unauthentic
    assert record_files(data_dir) == []
