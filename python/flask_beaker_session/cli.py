"""``flask beaker-session``: maintenance commands (SPEC §11).

``sweep`` removes expired sessions and leftovers, ``stats`` describes the store, ``clear``
removes every session, ``migrate`` converts the original package's Beaker files. Each runs
against the data directory of the app that ``flask`` loads, with that app's configuration.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from . import _core
from .config import SessionConfig
from .session_interface import (
    BeakerSessionInterface,
    _Backend,
    _pickle_user_data,
    decode_record,
)

group = AppGroup("beaker-session", help="Maintain the server-side session store.")

_SIZE_LABELS = ["≤1K", "≤4K", "≤16K", "≤64K", "≤256K", "≤1M", ">1M"]


def _config() -> SessionConfig:
    interface = current_app.session_interface
    if not isinstance(interface, BeakerSessionInterface):
        raise click.ClickException(
            "this app does not use flask-beaker-session (call init_app first)"
        )
    return interface.config


def _store() -> _core.Store:
    # A fresh store sees the data dir as it is now (e.g. a legacy tree copied in later).
    return _Backend(_config()).store


def _where(store: _core.Store) -> str:
    return str(store.data_dir) if store.data_dir else f"the {store.kind} store"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


@group.command("sweep")
def sweep_command() -> None:
    """Remove expired sessions, orphaned temporary files and stale legacy files."""
    store = _store()
    report: dict[str, Any] = store.walk(time.time(), "sweep")
    click.echo(
        f"removed {report['removed']} files ({_human(report['bytes_freed'])}): "
        f"{report['expired']} expired, {report['corrupt']} corrupt, "
        f"{report['temp']} temporary, {report['legacy_expired']} legacy; "
        f"kept {report['live']} live sessions"
    )
    if report["errors"]:
        click.echo(f"{report['errors']} files could not be read or removed", err=True)


@group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def stats_command(as_json: bool) -> None:
    """Count sessions, bytes, expired and legacy files, and sizes."""
    store = _store()
    report: dict[str, Any] = store.walk(time.time(), "stats")
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    click.echo(f"store:           {_where(store)}")
    click.echo(f"sessions:        {report['records']} ({_human(report['bytes'])})")
    click.echo(f"  live:          {report['live']}")
    click.echo(f"  expired:       {report['expired']}")
    click.echo(f"  corrupt:       {report['corrupt']}")
    click.echo(f"temporary files: {report['temp']}")
    click.echo(f"legacy (Beaker): {report['legacy']} ({report['legacy_expired']} expired)")
    sizes = ", ".join(f"{label}: {count}" for label, count in zip(_SIZE_LABELS, report["sizes"]))
    click.echo(f"record sizes:    {sizes}")


@group.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear_command(yes: bool) -> None:
    """Remove every session (everybody is logged out)."""
    store = _store()
    if not yes:
        click.confirm(f"Remove every session stored in {_where(store)}?", abort=True)
    report: dict[str, Any] = store.walk(time.time(), "clear")
    click.echo(f"removed {report['removed']} files ({_human(report['bytes_freed'])})")


@group.command("migrate")
def migrate_command() -> None:
    """Convert the original package's Beaker session files to this package's format."""
    cfg = _config()
    store = _store()
    ids = store.legacy_ids()
    migrated = expired = failed = 0
    with click.progressbar(ids, label="migrating", show_pos=True) as bar:
        for sid in bar:
            now = time.time()
            handle, status = store.open(sid, now)
            if handle is None:
                expired += status == _core.OPEN_EXPIRED
                failed += status == _core.OPEN_CORRUPT
                continue
            try:
                decoded = decode_record(handle, cfg, now)
                if decoded is None:
                    expired += 1
                    continue
                data, created, _last = decoded
                if handle.legacy:
                    if data:
                        handle.save(_pickle_user_data(data), now, created)
                        migrated += 1
                    else:
                        handle.delete()
            finally:
                handle.release()
    click.echo(
        f"migrated {migrated} of {len(ids)} legacy sessions; "
        f"{expired} expired or unreadable removed, {failed} corrupt removed"
    )
