"""``flask beaker-session ...`` (SPEC §11), driven through Flask's ``CliRunner`` against
real data dirs (and the run's ``redis-server`` when one is installed)."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask import session as flask_session
from helpers import (
    LEGACY,
    MANIFEST,
    TESTS_DIR,
    MakeApp,
    build_app,
    client_with,
    cookie_of,
    plant,
    record_files,
    record_path,
    set_age,
    store_of,
)
from legacy_objects import LegacyThing
from redis_server import RedisServer, free_port

COMMANDS = ["sweep", "stats", "clear", "migrate", "rekey"]


# -- helpers ---------------------------------------------------------------------------


def cli(app: Flask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["beaker-session", *args], input=input)


def plant_expired(app: Flask, data_dir: Path, count: int) -> list[str]:
    """Records last used an hour ago (header and mtime)."""
    return plant(store_of(app), data_dir, count, age=3600, data={"k": "old"})


def install_legacy(data_dir: Path) -> dict[str, Path]:
    """Copies both Beaker fixture trees; the 'expired' ones get an old mtime, the others
    a fresh one (the repository's mtimes are those of the checkout)."""
    for label in ("beaker110", "beaker114"):
        shutil.copytree(LEGACY / label, data_dir, dirs_exist_ok=True)
    files = {p.name[:32]: p for p in (data_dir / "container_file").rglob("*.cache")}
    for sid, path in files.items():
        set_age(path, 7200 if sid.endswith("03") else 0)
    return files


def expected_data(sid: str) -> dict[str, Any]:
    for label in MANIFEST["labels"].values():
        for entry in label["sessions"].values():
            if entry["id"] == sid:
                value = eval(entry["python_repr"], {"LegacyThing": LegacyThing})
                assert isinstance(value, dict)
                return value
    raise KeyError(sid)


def add_probe(app: Flask) -> dict[str, Any]:
    """Adds ``/probe``, which captures the session's user data and flags."""
    seen: dict[str, Any] = {}

    @app.route("/probe")
    def probe() -> str:
        seen.clear()
        seen.update({k: v for k, v in flask_session.items() if not k.startswith("_")})
        seen["__new"] = flask_session.is_new
        seen["__created"] = flask_session.created
        return "ok"

    return seen


def probe(app: Flask, seen: dict[str, Any], sid: str) -> dict[str, Any]:
    assert client_with(app, sid).get("/probe").status_code == 200
    return dict(seen)


def write_legacy(data_dir: Path, sid: str, data: dict[str, Any]) -> Path:
    """A Beaker <= 1.10 file (``pickle({'session': {...}})``) in Beaker's layout."""
    now = time.time()
    session = {"_creation_time": now, "_accessed_time": now, **data}
    path = data_dir / "container_file" / sid[0] / sid[:2] / f"{sid}.cache"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"session": session}, protocol=2))
    return path


# -- help --------------------------------------------------------------------------------


def test_group_and_commands_have_help(app: Flask) -> None:
    """The group is registered on the app and every command documents itself."""
    top = app.test_cli_runner().invoke(args=["--help"])
    assert top.exit_code == 0 and "beaker-session" in top.output
    group = cli(app, "--help")
    assert group.exit_code == 0
    for command in COMMANDS:
        assert command in group.output
    for command, words in [
        ("sweep", "Remove expired sessions"),
        ("stats", "--json"),
        ("clear", "--yes"),
        ("migrate", "Beaker"),
    ]:
        result = cli(app, command, "--help")
        assert result.exit_code == 0, command
        assert words in result.output, command


# -- stats and sweep -------------------------------------------------------------------


@pytest.fixture
def populated(make_app: MakeApp, data_dir: Path) -> tuple[Flask, dict[str, Any]]:
    """3 live sessions (one of ~20 KB), 2 expired records, 1 old and 1 young temp file,
    1 old corrupt record, the 6 legacy fixtures (2 expired by mtime)."""
    app = make_app(SESSION_TIMEOUT=600)
    live = []
    for value in ("a", "b", "x" * 20_000):
        client = app.test_client()
        client.get(f"/set/k/{value}")
        live.append(str(cookie_of(client)))
    expired = plant_expired(app, data_dir, 2)
    shard = record_path(data_dir, live[0]).parent
    # Names the package writes (`<shard><62 hex>`, `<record>.<8 hex>.tmp`): others are foreign.
    old_tmp = shard / (shard.name + "e" * 62 + ".0000000a.tmp")
    young_tmp = shard / (shard.name + "e" * 62 + ".0000000b.tmp")
    corrupt = shard / (shard.name + "d" * 62)
    for path, age in ((old_tmp, 120), (young_tmp, 0), (corrupt, 7200)):
        path.write_bytes(os.urandom(1000))
        set_age(path, age)
    legacy = install_legacy(data_dir)
    return app, {
        "live": live,
        "expired": expired,
        "old_tmp": old_tmp,
        "young_tmp": young_tmp,
        "corrupt": corrupt,
        "legacy": legacy,
    }


def test_stats_json_and_text(populated: tuple[Flask, dict[str, Any]], data_dir: Path) -> None:
    """stats reports sessions, bytes, expired, legacy and sizes, and changes nothing."""
    app, parts = populated
    before = sorted(p for p in data_dir.rglob("*") if p.is_file())
    records = [p for p in record_files(data_dir)]
    result = cli(app, "stats", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["records"] == 6  # 3 live + 2 expired + 1 corrupt
    assert report["live"] == 3
    assert report["expired"] == 2
    assert report["corrupt"] == 1
    assert report["temp"] == 1
    assert report["legacy"] == 6 and report["legacy_expired"] == 2
    assert report["bytes"] == sum(p.stat().st_size for p in records)
    assert "removed" not in report and "bytes_freed" not in report  # sweep-only counts
    assert sum(report["sizes"]) == 6
    big = record_path(data_dir, parts["live"][2]).stat().st_size
    assert 16 * 1024 < big <= 64 * 1024
    assert report["sizes"][3] == 1  # the ~20 KB session, in the <=64K bucket

    text = cli(app, "stats")
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert f"store:           {data_dir}" in lines
    assert any(line.startswith("sessions:        6 (") for line in lines)
    assert "  live:          3" in lines
    assert "  expired:       2" in lines
    assert "  corrupt:       1" in lines
    assert "temporary files: 1" in lines
    assert "legacy (Beaker): 6 (2 expired)" in lines
    assert "≤64K: 1" in text.output
    assert sorted(p for p in data_dir.rglob("*") if p.is_file()) == before


def test_sweep_prints_counts(populated: tuple[Flask, dict[str, Any]], data_dir: Path) -> None:
    """sweep removes exactly the expired and leftover files and says how many."""
    app, parts = populated
    result = cli(app, "sweep")
    assert result.exit_code == 0, result.output
    assert "removed 6 files (" in result.output
    assert "2 expired, 1 corrupt, 1 temporary, 2 legacy; kept 3 live sessions" in result.output
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, s) for s in parts["live"])
    assert not parts["old_tmp"].exists() and parts["young_tmp"].exists()
    assert sorted(p.name[:32] for p in (data_dir / "container_file").rglob("*.cache")) == sorted(
        sid for sid in parts["legacy"] if not sid.endswith("03")
    )
    again = cli(app, "sweep")
    assert "removed 0 files" in again.output and "kept 3 live sessions" in again.output
    assert client_with(app, parts["live"][0]).get("/get/k").text == "a"


# -- clear -------------------------------------------------------------------------------


def test_clear_asks_for_confirmation(
    populated: tuple[Flask, dict[str, Any]], data_dir: Path
) -> None:
    """Answering no aborts (exit 1) and removes nothing; yes removes every session."""
    app, parts = populated
    before = sorted(p for p in data_dir.rglob("*") if p.is_file())
    refused = cli(app, "clear", input="n\n")
    assert refused.exit_code == 1
    assert "Remove every session" in refused.output and "Aborted" in refused.output
    assert sorted(p for p in data_dir.rglob("*") if p.is_file()) == before

    accepted = cli(app, "clear", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "removed 14 files" in accepted.output  # 6 records, 2 temp, 6 legacy
    assert record_files(data_dir) == []
    assert list((data_dir / "container_file").rglob("*.cache")) == []
    assert not parts["young_tmp"].exists()
    assert client_with(app, parts["live"][0]).get("/get/k").text == "None"


def test_clear_yes_skips_the_question(make_app: MakeApp, data_dir: Path) -> None:
    """--yes removes everything without prompting."""
    app = make_app()
    for i in range(4):
        app.test_client().get(f"/set/k/{i}")
    result = cli(app, "clear", "--yes")
    assert result.exit_code == 0
    assert "?" not in result.output
    assert "removed 4 files" in result.output
    assert record_files(data_dir) == []


# -- migrate -----------------------------------------------------------------------------


def test_migrate_converts_legacy_fixtures(make_app: MakeApp, data_dir: Path) -> None:
    """Every live Beaker session becomes one of our records with the same data and
    creation time; the expired ones are removed; no legacy file is left."""
    legacy = install_legacy(data_dir)
    app = make_app(SESSION_TIMEOUT=600)
    result = cli(app, "migrate")
    assert result.exit_code == 0, result.output
    assert "migrating" in result.output
    assert "migrated 4 of 6 legacy sessions; 2 expired" in result.output
    assert list((data_dir / "container_file").rglob("*.cache")) == []
    live = sorted(sid for sid in legacy if not sid.endswith("03"))
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, s) for s in live)

    # A new app without any legacy tree reads the converted records.
    shutil.rmtree(data_dir / "container_file")
    reader = build_app(data_dir, SESSION_TIMEOUT=600)
    seen = add_probe(reader)
    created = {
        e["id"]: e["_creation_time"]
        for label in MANIFEST["labels"].values()
        for e in label["sessions"].values()
    }
    for sid in live:
        data = probe(reader, seen, sid)
        assert data.pop("__new") is False, sid
        assert data.pop("__created") == created[sid], sid
        assert data == expected_data(sid), sid
    assert probe(reader, seen, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02")["obj"] == LegacyThing(7)


def test_migrate_many_shows_progress_and_converts_all(make_app: MakeApp, data_dir: Path) -> None:
    """300 legacy files (copies of a fixture under new ids) are all converted."""
    source = LEGACY / "beaker114/container_file/b/bb/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb02.cache"
    sids = [secrets.token_hex(16) for _ in range(300)]
    for sid in sids:
        path = data_dir / "container_file" / sid[0] / sid[:2] / f"{sid}.cache"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
    app = make_app(SESSION_TIMEOUT=600)
    result = cli(app, "migrate")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("migrating")
    assert "migrated 300 of 300 legacy sessions" in result.output
    assert len(record_files(data_dir)) == 300
    assert list((data_dir / "container_file").rglob("*.cache")) == []
    seen = add_probe(app)
    for sid in sids[:3]:
        assert probe(app, seen, sid)["obj"] == LegacyThing(7)


@pytest.mark.posix_only(reason="a pseudo-terminal (pty)")
def test_migrate_progress_bar_on_a_terminal(data_dir: Path, tmp_path: Path) -> None:
    """Run by ``flask`` on a terminal, migrate draws a progress bar with its position."""
    source = LEGACY / "beaker110/container_file/a/aa/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01.cache"
    for _ in range(300):
        sid = secrets.token_hex(16)
        path = data_dir / "container_file" / sid[0] / sid[:2] / f"{sid}.cache"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
    module = tmp_path / "cli_app.py"
    module.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\n"
        f"from helpers import build_app\napp = build_app({str(data_dir)!r})\n"
    )
    import pty  # POSIX only (posix_only in conftest.py): imported here, for collection

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", str(module), "beaker-session", "migrate"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=tmp_path,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert proc.wait(60) == 0, output
    text = output.decode()
    assert "150/300" in text and "300/300" in text
    assert "migrated 300 of 300 legacy sessions" in text
    assert len(record_files(data_dir)) == 300


def test_migrate_keeps_sessions_it_cannot_unpickle(make_app: MakeApp, data_dir: Path) -> None:
    """A legacy session whose classes are not importable where the command runs is left
    for the app to migrate on first use, never deleted (that would log its user out)."""
    module = types.ModuleType("fbs_cli_vanishing")

    class Thing:
        def __init__(self, value: int) -> None:
            self.value = value

    Thing.__module__ = module.__name__
    Thing.__qualname__ = "Thing"
    module.Thing = Thing  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        sid = "c" * 32
        path = write_legacy(data_dir, sid, {"obj": Thing(3)})
        write_legacy(data_dir, "d" * 32, {"user": "plain"})
        del sys.modules[module.__name__]
        app = make_app(SESSION_TIMEOUT=600)
        result = cli(app, "migrate")
        assert result.exit_code == 0, result.output
        assert "migrated 1 of 2 legacy sessions" in result.output
        assert "1 skipped" in result.output
        assert path.exists()
        assert record_files(data_dir) == [record_path(data_dir, "d" * 32)]

        # Where the class can be imported, the app migrates it on first use.
        sys.modules[module.__name__] = module
        seen = add_probe(app)
        assert probe(app, seen, sid)["obj"].value == 3
        assert not path.exists()
    finally:
        sys.modules.pop(module.__name__, None)


# -- other backends ----------------------------------------------------------------------


def test_cli_on_memory_app(make_app: MakeApp) -> None:
    """With the memory backend the commands act on the app's own in-process store."""
    app = make_app(SESSION_TYPE="memory")
    clients = [app.test_client() for _ in range(3)]
    for i, client in enumerate(clients):
        client.get(f"/set/k/{i}")
    report = json.loads(cli(app, "stats", "--json").output)
    assert report["records"] == 3
    assert "kept 3 live sessions" in cli(app, "sweep").output
    assert "migrated 0 of 0" in cli(app, "migrate").output
    cleared = cli(app, "clear", "--yes")
    assert cleared.exit_code == 0 and "removed 3 files" in cleared.output
    assert clients[0].get("/get/k").text == "None"
    assert json.loads(cli(app, "stats", "--json").output)["records"] == 0


def test_cli_on_redis_app(make_app: MakeApp, redis_server: RedisServer, prefix: str) -> None:
    """stats, sweep and clear work against Redis (this test's keys, under its prefix)."""
    app = make_app(
        SESSION_TYPE="redis", SESSION_REDIS_URL=redis_server.url, SESSION_REDIS_PREFIX=prefix
    )
    clients = [app.test_client() for _ in range(2)]
    for i, client in enumerate(clients):
        client.get(f"/set/k/{i}")
    stats = cli(app, "stats", "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["records"] == 2
    swept = cli(app, "sweep")
    assert swept.exit_code == 0 and "kept 2 live sessions" in swept.output
    assert clients[1].get("/get/k").text == "1"
    cleared = cli(app, "clear", "--yes")
    assert cleared.exit_code == 0 and "removed 2 files" in cleared.output
    assert clients[0].get("/get/k").text == "None"


@pytest.mark.parametrize("command", [["stats"], ["sweep"], ["clear", "--yes"]])
def test_cli_reports_unreachable_redis(make_app: MakeApp, command: list[str]) -> None:
    """An unreachable Redis gives a one-line error and exit status 1, not a traceback."""
    app = make_app(
        SESSION_TYPE="redis",
        SESSION_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        SESSION_REDIS_CONNECT_TIMEOUT=0.5,
    )
    result = cli(app, *command)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Error:" in result.output and "unavailable" in result.output
    assert "Traceback" not in result.output
