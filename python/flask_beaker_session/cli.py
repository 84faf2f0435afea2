"""``flask beaker-session``: maintenance commands (SPEC §11).

``sweep`` removes expired sessions and leftovers (``--dry-run``: says what it would
remove), ``stats`` describes the store, ``clear`` removes every session, ``migrate``
converts the original package's Beaker files, ``rekey`` re-encrypts every record under the
current ``SECRET_KEY`` (``--dry-run``: counts only), ``init-db`` creates the PostgreSQL table
(idempotent; a deploy step for roles that should not run DDL at request time); with
``SESSION_USER_KEY``, ``sessions USER`` lists a user's sessions and ``revoke USER``
ends them. Each runs
against the data directory of the app that ``flask`` loads, with that app's configuration.

``stats --json`` prints one object, :data:`STATS_SCHEMA` (documented in the README); it
never holds the sweep-only counts (``removed``, ``bytes_freed``).
"""

from __future__ import annotations

import datetime
import functools
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from . import _core, users
from ._log import log_id, logger
from .codec import PayloadError, encode
from .config import CREATED_DATA_DIRS, _redacted
from .errors import LockTimeoutError, SessionTooLargeError, StoreUnavailableError
from .session_interface import BeakerSessionInterface
from .store import build_store
from .stored import decode_or_remove
from .sweeper import report_obstacles

group = AppGroup("beaker-session", help="Maintain the server-side session store.")

_SIZE_LABELS = ["≤1K", "≤4K", "≤16K", "≤64K", "≤256K", "≤1M", ">1M"]

#: Version of the ``stats --json`` object; bumped when a field changes meaning or goes.
STATS_SCHEMA = 1
#: The counts ``stats --json`` prints, in the order of the text output (see README).
_STATS_COUNTS = (
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
)


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
    if _interface().config.type == "postgresql":
        return _database_where()
    return str(store.data_dir) if store.data_dir else f"the {_interface().config.type} store"


def _database_where() -> str:
    """The PostgreSQL table, with the URL's password masked."""
    config = _interface().config
    table = config.database_table
    if config.database_schema:
        table = f"{config.database_schema}.{table}"
    return f"{_redacted(config.database_url or '')} table {table}"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _missing_data_dir(store: _core.Store) -> str | None:
    """Why the file store's counts would mean nothing (its data dir did not exist before
    this command: missing, or created empty by ``init_app`` just now), else None."""
    data_dir = store.data_dir
    if data_dir is None:
        return None
    if not data_dir.is_dir():
        why = "does not exist"
    elif data_dir in CREATED_DATA_DIRS and not any(data_dir.iterdir()):
        why = "did not exist (init_app created it empty just now)"
    else:
        return None
    return (
        f"the data directory {data_dir} {why}: no session is stored there. Check "
        "SESSION_DATA_DIR (a relative path is resolved against the working directory "
        "of the process that calls init_app)"
    )


@group.command("sweep")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed (removes nothing).")
@_store_errors
def sweep_command(dry_run: bool) -> None:
    """Remove expired sessions, orphaned temporary files and stale legacy files."""
    store = _store()
    missing = _missing_data_dir(store)
    if missing is not None:
        click.echo(f"nothing to sweep: {missing}")
        return
    if dry_run:
        _dry_run(store)
        return
    now = _interface().clock()
    report = store.walk(now, _core.WalkMode.Sweep)
    click.echo(
        f"removed {report.removed} files ({_human(report.bytes_freed)}): "
        f"{report.expired} expired, {report.corrupt} corrupt, "
        f"{report.temp} temporary, {report.legacy_expired} legacy; "
        f"kept {report.live} live sessions"
    )
    config = _interface().config
    if config.user_key is not None:
        stale = store.index_sweep(now, users.index_grace(config.lock_timeout))
        click.echo(f"removed {stale} stale per-user index entries")
    if report.errors:
        click.echo(f"{report.errors} files could not be read or removed", err=True)
    _obstacles(store, report)


def _dry_run(store: _core.Store) -> None:
    """What a sweep now would remove, from a counting walk (nothing is changed)."""
    if store.kind == _core.BackendKind.Redis:
        click.echo("dry run: Redis expires sessions itself; a sweep removes nothing")
        return
    report = store.walk(_interface().clock(), _core.WalkMode.Stats)
    total = report.expired + report.corrupt + report.temp + report.legacy_expired
    click.echo(
        f"dry run: would remove {total} files: "
        f"{report.expired} expired, {report.corrupt} corrupt, "
        f"{report.temp} temporary, {report.legacy_expired} legacy; "
        f"would keep {report.live} live sessions (nothing was removed)"
    )
    if report.corrupt:
        click.echo(
            "corrupt records younger than 60 s are left to a later sweep (they may be "
            "being written)",
            err=True,
        )
    if report.errors:
        click.echo(f"{report.errors} files could not be read", err=True)
    _obstacles(store, report)


def _obstacles(store: _core.Store, report: _core.Report) -> None:
    """Reports symlinks (never followed) and foreign entries (left alone), if any."""
    if report.symlinks or report.foreign:
        click.echo(
            f"not followed: {report.symlinks} symlinks where a directory or record belongs; "
            f"left alone: {report.foreign} entries this package did not write",
            err=True,
        )
        report_obstacles(store, report)


@group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_store_errors
def stats_command(as_json: bool) -> None:
    """Count sessions, bytes, expired and legacy files, and sizes."""
    store = _store()
    missing = _missing_data_dir(store)
    report = store.walk(_interface().clock(), _core.WalkMode.Stats)
    if as_json:
        click.echo(json.dumps(_stats_json(store, report, missing is None)))
        return
    click.echo(f"store:           {_where(store)}")
    if missing is not None:
        click.echo(missing)
        return
    click.echo(f"sessions:        {report.records} ({_human(report.bytes)})")
    click.echo(f"  live:          {report.live}")
    click.echo(f"  expired:       {report.expired}")
    click.echo(f"  corrupt:       {report.corrupt}")
    click.echo(f"temporary files: {report.temp}")
    click.echo(f"legacy (Beaker): {report.legacy} ({report.legacy_expired} expired)")
    sizes = ", ".join(f"{label}: {count}" for label, count in zip(_SIZE_LABELS, report.sizes))
    click.echo(f"record sizes:    {sizes}")
    if report.errors:
        click.echo(f"{report.errors} entries could not be read", err=True)
    _obstacles(store, report)


def _stats_json(store: _core.Store, report: _core.Report, exists: bool) -> dict[str, Any]:
    """The ``stats --json`` object (schema :data:`STATS_SCHEMA`, see the README)."""
    config = _interface().config
    if config.type == "redis":
        where = f"{_redacted(config.redis_url)} prefix {config.redis_prefix!r}"
    elif config.type == "postgresql":
        where = _database_where()
    else:
        where = _where(store)
    counts = report.to_dict()
    out: dict[str, Any] = {
        "schema": STATS_SCHEMA,
        "backend": config.type,
        "store": where,
        "exists": exists,
    }
    out.update((name, counts[name]) for name in _STATS_COUNTS)
    out["live"] = report.live
    out["sizes"] = list(report.sizes)
    return out


@group.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_store_errors
def clear_command(yes: bool) -> None:
    """Remove every session (everybody is logged out)."""
    store = _store()
    if not yes:
        click.confirm(f"Remove every session stored in {_where(store)}?", abort=True)
    now = _interface().clock()
    report = store.walk(now, _core.WalkMode.Clear)
    click.echo(f"removed {report.removed} files ({_human(report.bytes_freed)})")
    if _interface().config.user_key is not None:
        # No session is left: every entry of the per-user index is stale.
        store.index_sweep(now, 0.0)


def _user_state() -> Any:
    """The app's session state, which must keep the per-user index."""
    interface = _interface()
    if interface.config.user_key is None:
        raise click.ClickException(
            "SESSION_USER_KEY is not set: this app keeps no per-user index of sessions"
        )
    return interface.state


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


@group.command("sessions")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per session.")
@_store_errors
def sessions_command(user: str, as_json: bool) -> None:
    """List USER's live sessions (SESSION_USER_KEY): handle, times, metadata."""
    state = _user_state()
    listed = users.list_sessions(state, user, state.now())
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in listed]))
        return
    for s in listed:
        meta = " ".join(f"{k}={v!r}" for k, v in sorted(s.metadata.items()))
        click.echo(
            f"{s.handle}  created {_when(s.created)}  last access {_when(s.last_access)}  "
            f"expires {_when(s.expires)}" + (f"  {meta}" if meta else "")
        )


@group.command("revoke")
@click.argument("user")
@click.option("--except", "except_handle", help="Keep the session with this handle.")
@_store_errors
def revoke_command(user: str, except_handle: str | None) -> None:
    """End every session of USER at once (all but --except HANDLE)."""
    state = _user_state()
    count = users.revoke_all(state, user, state.now(), except_handle=except_handle)
    click.echo(f"revoked {count} session{'s' if count != 1 else ''} of {user}")


@group.command("init-db")
@_store_errors
def init_db_command() -> None:
    """Create the PostgreSQL sessions table and its index if missing (idempotent)."""
    config = _interface().config
    if config.type != "postgresql":
        click.echo(f"nothing to create: SESSION_TYPE={config.type!r} needs no table")
        return
    store = _store()
    created = store.init_schema()
    if created:
        click.echo(f"created {_where(store)} (and its expires_at index)")
    else:
        click.echo(f"{_where(store)} already exists (index checked)")


def _walk_with_progress(
    store: _core.Store, now: float, mode: _core.WalkMode, label: str
) -> _core.Report:
    """``store.walk(now, mode)`` with a progress bar: the walk is one native call (GIL
    released), so it runs in a thread while this one samples the process's count of walked
    records against the total a counting walk (headers only) found first."""
    total = store.walk(now, _core.WalkMode.Stats).records
    start = _core.walked_records()
    outcome: list[_core.Report | BaseException] = []

    def run() -> None:
        try:
            outcome.append(store.walk(now, mode))
        except BaseException as exc:  # re-raised in the calling thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="flask-beaker-session-walk", daemon=True)
    worker.start()
    with click.progressbar(length=total, label=label, show_pos=True) as bar:
        shown = 0
        while worker.is_alive():
            worker.join(0.1)
            done = min(total, _core.walked_records() - start)
            bar.update(done - shown)
            shown = done
        bar.update(total - shown)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


@group.command("rekey")
@click.option(
    "--dry-run", is_flag=True, help="Only count what would be re-encrypted (writes nothing)."
)
@_store_errors
def rekey_command(dry_run: bool) -> None:
    """Re-encrypt every stored session under the current SECRET_KEY, so that the keys in
    SECRET_KEY_FALLBACKS can be removed afterwards."""
    config = _interface().config
    if config.type == "memory":
        click.echo("nothing to rekey: memory sessions never leave the process (never encrypted)")
        return
    store = _store()
    missing = _missing_data_dir(store)
    if missing is not None:
        click.echo(f"nothing to rekey: {missing}")
        return
    click.echo(f"{'checking' if dry_run else 're-encrypting'} the sessions in {_where(store)} ...")
    mode = _core.WalkMode.RekeyDryRun if dry_run else _core.WalkMode.Rekey
    # One native walk: each record is re-sealed under its lock, into the slot a save would
    # write (crash-safe), with its times kept; a run can be interrupted and repeated.
    label = "checking" if dry_run else "re-encrypting"
    report = _walk_with_progress(store, _interface().clock(), mode, label)
    verb = "would re-encrypt" if dry_run else "re-encrypted"
    click.echo(
        f"{verb} {report.rekeyed} of {report.records} sessions; "
        f"{report.current} already under the current key"
        + (" (nothing was written)" if dry_run else "")
    )
    if report.plain:
        click.echo(
            f"{report.plain} unencrypted sessions (written by 0.3, or with SESSION_ENCRYPT "
            "= False) are encrypted by their next save, not by this command: they are bound "
            "to their session id, which the store does not keep. Keep SECRET_KEY_FALLBACKS "
            "until they are saved or expire (SESSION_TIMEOUT)",
            err=True,
        )
    if report.unopenable:
        click.echo(
            f"{report.unopenable} records open under no configured key (left in place; a "
            "request or sweep removes them): if that is unexpected, check SECRET_KEY and "
            "SECRET_KEY_FALLBACKS before removing a key",
            err=True,
        )
    if report.corrupt:
        click.echo(f"{report.corrupt} corrupt records left to the sweeper", err=True)
    if report.errors:
        click.echo(
            f"{report.errors} records could not be read, or a request held them for longer "
            "than SESSION_LOCK_TIMEOUT: run the command again",
            err=True,
        )
        raise click.exceptions.Exit(1)


@group.command("migrate")
@_store_errors
def migrate_command() -> None:
    """Convert the original package's Beaker session files to this package's format."""
    clock = _interface().clock
    store = _store()
    ids = store.legacy_ids()
    migrated = expired = failed = skipped = untrusted = 0
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
                failed += status in (_core.OpenStatus.Corrupt, _core.OpenStatus.Unauthenticated)
                untrusted += status == _core.OpenStatus.Untrusted
                continue
            try:
                legacy = handle.kind != _core.PayloadKind.Record
                try:
                    decoded = decode_or_remove(handle, store, now, keep_unloadable_legacy=True)
                except PayloadError as exc:
                    # Its classes are not importable here (but may be in the app, which
                    # migrates it on first use): removing it would log its user out.
                    logger.warning(
                        "legacy session %s cannot be unpickled by this command (%s); "
                        "left for the application to migrate on first use",
                        log_id(handle.id),
                        exc,
                    )
                    skipped += 1
                    continue
                if decoded is None:
                    expired += 1
                    continue
                data, created = decoded.data, decoded.created
                if legacy:
                    if data:
                        try:
                            payload = encode(data, _interface().config.max_size)
                        except SessionTooLargeError as exc:
                            logger.warning("legacy session %s: %s", log_id(handle.id), exc)
                            skipped += 1  # left in place, as with SESSION_MAX_SIZE raised
                            continue
                        handle.save(payload, now, created)
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
        + (
            f"; {untrusted} not trusted (not a regular file owned by this user and "
            "writable only by it; left in place, unread)"
            if untrusted
            else ""
        )
    )
    if untrusted:
        logger.warning(
            "migrate: %d legacy session files were not read because they are not regular "
            "files owned by this user and writable only by it (see SECURITY.md)",
            untrusted,
        )
