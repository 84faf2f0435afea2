"""``flask beaker-session``: maintenance commands (SPEC §11).

``sweep`` removes expired sessions and leftovers, ``stats`` describes the store, ``clear``
removes every session, ``migrate`` converts the original package's Beaker files. Each runs
against the data directory of the app that ``flask`` loads, with that app's configuration.
"""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from . import _core
from ._log import log_id, logger
from .codec import encode
from .errors import LockTimeoutError, StoreUnavailableError
from .session_interface import BeakerSessionInterface
from .store import build_store
from .stored import decode_or_remove

group = AppGroup("beaker-session", help="Maintain the server-side session store.")

_SIZE_LABELS = ["≤1K", "≤4K", "≤16K", "≤64K", "≤256K", "≤1M", ">1M"]


def _interface() -> BeakerSessionInterface:
    interface = current_app.session_interface
    if not isinstance(interface, BeakerSessionInterface):
        raise click.ClickException(
            "this app does not use flask-beaker-session (call init_app first)"
        )
    return interface


def _store() -> _core.Store:
    interface = _interface()
    if interface.config.type == "memory":
        # Memory sessions live in the app's own store (this process only).
        return interface.store
    # A fresh store sees the data dir as it is now (e.g. a legacy tree copied in later).
    return build_store(interface.config)


_F = TypeVar("_F", bound=Callable[..., Any])


def _store_errors(fn: _F) -> _F:
    """Reports an unreachable store as a one-line error (exit status 1), not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreUnavailableError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _where(store: _core.Store) -> str:
    return str(store.data_dir) if store.data_dir else f"the {_interface().config.type} store"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


@group.command("sweep")
@_store_errors
def sweep_command() -> None:
    """Remove expired sessions, orphaned temporary files and stale legacy files."""
    store = _store()
    report = store.walk(_interface().clock(), _core.WalkMode.Sweep)
    click.echo(
        f"removed {report.removed} files ({_human(report.bytes_freed)}): "
        f"{report.expired} expired, {report.corrupt} corrupt, "
        f"{report.temp} temporary, {report.legacy_expired} legacy; "
        f"kept {report.live} live sessions"
    )
    if report.errors:
        click.echo(f"{report.errors} files could not be read or removed", err=True)


@group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_store_errors
def stats_command(as_json: bool) -> None:
    """Count sessions, bytes, expired and legacy files, and sizes."""
    store = _store()
    report = store.walk(_interface().clock(), _core.WalkMode.Stats)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    click.echo(f"store:           {_where(store)}")
    click.echo(f"sessions:        {report.records} ({_human(report.bytes)})")
    click.echo(f"  live:          {report.live}")
    click.echo(f"  expired:       {report.expired}")
    click.echo(f"  corrupt:       {report.corrupt}")
    click.echo(f"temporary files: {report.temp}")
    click.echo(f"legacy (Beaker): {report.legacy} ({report.legacy_expired} expired)")
    sizes = ", ".join(f"{label}: {count}" for label, count in zip(_SIZE_LABELS, report.sizes))
    click.echo(f"record sizes:    {sizes}")


@group.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_store_errors
def clear_command(yes: bool) -> None:
    """Remove every session (everybody is logged out)."""
    store = _store()
    if not yes:
        click.confirm(f"Remove every session stored in {_where(store)}?", abort=True)
    report = store.walk(_interface().clock(), _core.WalkMode.Clear)
    click.echo(f"removed {report.removed} files ({_human(report.bytes_freed)})")


@group.command("migrate")
@_store_errors
def migrate_command() -> None:
    """Convert the original package's Beaker session files to this package's format."""
    clock = _interface().clock
    store = _store()
    ids = store.legacy_ids()
    migrated = expired = failed = skipped = 0
    with click.progressbar(ids, label="migrating", show_pos=True) as bar:
        for sid in bar:
            now = clock()
            try:
                status, handle = store.open(sid, now)
            except LockTimeoutError:
                skipped += 1  # in use by a request: it migrates itself when saved
                continue
            if handle is None:
                expired += status == _core.OpenStatus.Expired
                failed += status == _core.OpenStatus.Corrupt
                continue
            try:
                legacy = handle.kind != _core.PayloadKind.Record
                if legacy and not _loadable(handle):
                    # Its classes are not importable here (but may be in the app, which
                    # migrates it on first use): removing it would log its user out.
                    skipped += 1
                    continue
                decoded = decode_or_remove(handle, store, now)
                if decoded is None:
                    expired += 1
                    continue
                data, created, _last = decoded
                if legacy:
                    if data:
                        handle.save(encode(data), now, created)
                        migrated += 1
                    else:
                        handle.delete()
            finally:
                handle.release()
    click.echo(
        f"migrated {migrated} of {len(ids)} legacy sessions; "
        f"{expired} expired or unreadable removed, {failed} corrupt removed"
        + (
            f"; {skipped} skipped (in use, or cannot be unpickled here; left in place)"
            if skipped
            else ""
        )
    )


def _loadable(handle: _core.Handle) -> bool:
    """Whether a legacy payload unpickles in this process (logs why not)."""
    try:
        pickle.loads(handle.payload)
    except Exception as exc:
        logger.warning(
            "legacy session %s cannot be unpickled by this command (%s: %s); "
            "left for the application to migrate on first use",
            log_id(handle.id),
            type(exc).__name__,
            exc,
        )
        return False
    return True
