"""The CLI tells the truth (issue 15, item 11): ``stats`` counts a record overwritten with
random bytes as corrupt at once and foreign files not as sessions, says so when the data
dir does not exist (instead of all zeros), prints a documented ``--json`` object without
sweep-only fields, and ``sweep --dry-run`` says what a sweep would remove."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from click.testing import Result
from flask import Flask
from helpers import (
    FakeClock,
    build_app,
    cookie_of,
    plant,
    record_files,
    record_path,
    set_age,
    store_of,
)

#: The documented ``stats --json`` keys (docs/cli.md; tests/test_docs.py compares).
SCHEMA_KEYS = {
    "schema",
    "backend",
    "store",
    "exists",
    "records",
    "bytes",
    "live",
    "expired",
    "corrupt",
    "temp",
    "legacy",
    "legacy_expired",
    "legacy_locks",
    "errors",
    "symlinks",
    "foreign",
    "sizes",
}


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["beaker-session", *args])


def stats(app: Flask) -> dict[str, Any]:
    result = cli(app, "stats", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert isinstance(out, dict)
    return out


def live_sessions(app: Flask, count: int) -> list[str]:
    sids = []
    for i in range(count):
        client = app.test_client()
        client.get(f"/set/k/{i}")
        sid = cookie_of(client)
        assert sid is not None
        sids.append(sid)
    return sids


def test_stats_json_schema(tmp_path: Path) -> None:
    """Exactly the documented keys: no sweep-only counts (removed, bytes_freed)."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir)
    live_sessions(app, 2)
    out = stats(app)
    assert set(out) == SCHEMA_KEYS
    assert out["schema"] == 1 and out["backend"] == "file"
    assert out["store"] == str(data_dir) and out["exists"] is True
    assert out["records"] == out["live"] == 2
    assert len(out["sizes"]) == 7 and sum(out["sizes"]) == 2
    memory = build_app(tmp_path / "m", SESSION_TYPE="memory")
    live_sessions(memory, 1)
    out = stats(memory)
    assert set(out) == SCHEMA_KEYS and out["backend"] == "memory" and out["records"] == 1


def test_random_bytes_count_as_corrupt_at_once(tmp_path: Path) -> None:
    """A record overwritten with random bytes (same size, fresh mtime) is corrupt in
    ``stats`` right away, not live until it expires; a foreign file is not a session."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir, SESSION_TIMEOUT=3600)
    sids = live_sessions(app, 3)
    victim = record_path(data_dir, sids[0])
    victim.write_bytes(os.urandom(victim.stat().st_size))
    (victim.parent / "notes.txt").write_text("not ours")
    (data_dir / "fbs1" / "README").write_text("not ours either")
    out = stats(app)
    assert out["corrupt"] == 1
    assert out["live"] == 2
    assert out["records"] == 3
    assert out["foreign"] == 2
    text = cli(app, "stats")
    assert "  corrupt:       1" in text.output.splitlines()
    assert "  live:          2" in text.output.splitlines()
    assert "2 entries this package did not write" in text.output


def test_stats_on_a_data_dir_that_does_not_exist(tmp_path: Path) -> None:
    """The data dir removed after init_app: stats says it does not exist (text), and
    ``exists: false`` (JSON), instead of all zeros."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir)
    live_sessions(app, 1)
    shutil.rmtree(data_dir)
    text = cli(app, "stats")
    assert text.exit_code == 0
    assert f"the data directory {data_dir} does not exist" in text.output
    assert "SESSION_DATA_DIR" in text.output
    assert "sessions:" not in text.output and "live:" not in text.output
    out = stats(app)
    assert out["exists"] is False and out["records"] == 0
    swept = cli(app, "sweep")
    assert swept.exit_code == 0 and "nothing to sweep" in swept.output
    assert not data_dir.exists()  # neither command recreated it


def test_stats_on_a_data_dir_created_just_now_by_init_app(tmp_path: Path, monkeypatch: Any) -> None:
    """A relative SESSION_DATA_DIR resolved against another working directory: init_app
    (run by ``flask``) creates it empty, and stats says so rather than printing zeros."""
    monkeypatch.chdir(tmp_path)
    app = build_app("sessions")
    text = cli(app, "stats")
    assert "did not exist (init_app created it empty just now)" in text.output
    assert "relative path" in text.output
    assert stats(app)["exists"] is False
    live_sessions(app, 1)
    assert stats(app)["exists"] is True


def test_sweep_dry_run_shows_what_would_go(tmp_path: Path) -> None:
    """``sweep --dry-run`` counts what a sweep removes (expired, corrupt past the grace
    period, temporary files) and removes nothing; the real sweep then removes that."""
    data_dir = tmp_path / "d"
    app = build_app(data_dir, SESSION_TIMEOUT=600)
    live = live_sessions(app, 2)
    expired = plant(store_of(app), data_dir, 3, age=3600)
    shard = record_path(data_dir, live[0]).parent
    old_tmp = shard / (shard.name + "e" * 62 + ".0000000a.tmp")
    corrupt = shard / (shard.name + "d" * 62)
    for path in (old_tmp, corrupt):
        path.write_bytes(os.urandom(1024))
        set_age(path, 7200)
    before = sorted(p for p in data_dir.rglob("*") if p.is_file())
    dry = cli(app, "sweep", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert (
        "would remove 5 files: 3 expired, 1 corrupt, 1 temporary, 0 legacy; "
        "would keep 2 live sessions" in dry.output
    )
    assert sorted(p for p in data_dir.rglob("*") if p.is_file()) == before
    real = cli(app, "sweep")
    assert "removed 5 files (" in real.output
    assert "3 expired, 1 corrupt, 1 temporary, 0 legacy; kept 2 live sessions" in real.output
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, s) for s in live)
    assert not any(record_path(data_dir, s).exists() for s in expired)
    again = cli(app, "sweep", "--dry-run")
    assert "would remove 0 files" in again.output


def test_sweep_dry_run_on_memory_follows_the_app_clock(tmp_path: Path) -> None:
    app = build_app(tmp_path / "m", SESSION_TYPE="memory", SESSION_TIMEOUT=60)
    clock = FakeClock()
    clock.install(app)
    live_sessions(app, 2)
    clock.advance(61)
    live_sessions(app, 1)
    dry = cli(app, "sweep", "--dry-run")
    assert "would remove 2 files: 2 expired" in dry.output
    assert "would keep 1 live sessions" in dry.output
    assert stats(app)["records"] == 3
