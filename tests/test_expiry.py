"""Expiry lifecycle (SPEC §8): the Rust sweeper, the absolute lifetime and the automatic
sweep policy.

Records are made to look old without sleeping: either they are created through the core
with old ``created``/``now`` times and their mtime is set back with ``os.utime``, or the
sweep is run with a ``now`` in the future, or the app runs on a fake clock. Everything runs
on real files with real apps.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
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
    LEGACY,
    TESTS_DIR,
    FakeClock,
    MakeApp,
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

SWEEPER_THREAD = "flask-beaker-session-sweeper"


# -- helpers ---------------------------------------------------------------------------


def new_session(app: Flask, key: str = "k", value: str = "v") -> str:
    client = app.test_client()
    assert client.get(f"/set/{key}/{value}").status_code == 200
    sid = cookie_of(client)
    assert sid is not None
    return sid


def get_with(app: Flask, sid: str, key: str = "k") -> str:
    return client_with(app, sid).get(f"/get/{key}").text


def sweep(app: Flask, now: float | None = None) -> _core.Report:
    return store_of(app).walk(time.time() if now is None else now, _core.WalkMode.Sweep)


def sweeper_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == SWEEPER_THREAD}


@pytest.fixture
def stop_sweepers() -> Iterator[list[Flask]]:
    """Apps appended to the yielded list get their sweeper thread stopped at teardown."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        interface = interface_of(app)
        if interface.sweeper is not None:
            interface.sweeper.stop()


# -- the sweeper -------------------------------------------------------------------------


def test_sweep_removes_expired_and_keeps_live(make_app: MakeApp, data_dir: Path) -> None:
    """Expired records go, live ones stay with their data; counts are exact."""
    app = make_app(SESSION_TIMEOUT=60)
    live = [new_session(app, "k", str(i)) for i in range(5)]
    expired = plant(store_of(app), data_dir, 7, age=3600)

    report = sweep(app)
    assert report.records == 12
    assert report.expired == 7
    assert report.live == 5
    assert report.removed == 7
    assert report.corrupt == report.temp == report.errors == 0
    assert report.bytes_freed > 0
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, s) for s in live)
    for i, sid in enumerate(live):
        assert get_with(app, sid) == str(i)
    for sid in expired:
        assert get_with(app, sid) == "None"

    again = sweep(app)
    assert (again.records, again.expired, again.removed) == (5, 0, 0)


def test_sweep_uses_header_not_only_mtime(make_app: MakeApp, data_dir: Path) -> None:
    """A record with an old mtime but a recent save in its header is live, and the
    reverse: a fresh mtime (a touch) keeps a record whose header is old."""
    app = make_app(SESSION_TIMEOUT=60)
    store = store_of(app)
    recent_header = plant(store, data_dir, 1, age=10)[0]
    set_age(record_path(data_dir, recent_header), 3600)
    touched = plant(store, data_dir, 1, age=3600)[0]
    set_age(record_path(data_dir, touched), 5)

    report = sweep(app)
    assert (report.live, report.expired, report.removed) == (2, 0, 0)
    assert get_with(app, recent_header) == "v"
    assert get_with(app, touched) == "v"


def test_stats_counts_without_removing(make_app: MakeApp, data_dir: Path) -> None:
    """'stats' walks the same tree, reports expired records and removes nothing."""
    app = make_app(SESSION_TIMEOUT=60)
    new_session(app)
    plant(store_of(app), data_dir, 3, age=3600)
    before = record_files(data_dir)

    report = store_of(app).walk(time.time(), _core.WalkMode.Stats)
    assert (report.records, report.live, report.expired) == (4, 1, 3)
    assert report.removed == 0
    assert report.bytes == sum(p.stat().st_size for p in before)
    assert sum(report.sizes) == 4
    assert record_files(data_dir) == before


def test_orphan_temp_files_removed_after_grace(make_app: MakeApp, data_dir: Path) -> None:
    """Temp files of an install that never finished go after 60 s, younger ones stay."""
    app = make_app(SESSION_TIMEOUT=1800)
    sid = new_session(app)
    shard = record_path(data_dir, sid).parent
    digest = shard.name + "f" * 62  # a record name of this shard
    old_tmp = shard / f"{digest}.1a2b1a2b.tmp"
    young_tmp = shard / f"{digest}.3c4d3c4d.tmp"
    almost_tmp = shard / f"{digest}.5e6f5e6f.tmp"
    for path, age in ((old_tmp, 120), (young_tmp, 0), (almost_tmp, 30)):
        path.write_bytes(b"\0" * 1024)
        set_age(path, age)

    report = sweep(app)
    assert report.temp == 1
    assert report.removed == 1
    assert not old_tmp.exists()
    assert young_tmp.exists() and almost_tmp.exists()
    assert report.records == 1 and report.live == 1
    assert get_with(app, sid) == "v"


def test_corrupt_records_removed_after_grace(make_app: MakeApp, data_dir: Path) -> None:
    """Unparseable record files past the idle timeout go once older than 60 s."""
    app = make_app(SESSION_TIMEOUT=30)
    sid = new_session(app)
    shard = record_path(data_dir, sid).parent
    old, recent, odd = (shard / (shard.name + c * (64 - len(shard.name))) for c in "123")
    for path, age, size in ((old, 120, 1024), (recent, 45, 1024), (odd, 300, 777)):
        path.write_bytes(os.urandom(size))
        set_age(path, age)

    report = sweep(app)
    assert report.corrupt == 2
    assert report.removed == 2
    assert not old.exists() and not odd.exists()
    assert recent.exists()
    assert get_with(app, sid) == "v"


def _held_by_view(app: Flask, sid: str) -> tuple[threading.Thread, threading.Event]:
    """Starts a request of ``sid`` that loads its session then blocks until released."""
    loaded = threading.Event()
    release = threading.Event()

    @app.route("/hold")
    def hold() -> str:
        flask_session["held"] = "yes"
        loaded.set()
        assert release.wait(30)
        return "ok"

    def run() -> None:
        assert client_with(app, sid).get("/hold").status_code == 200

    thread = threading.Thread(target=run)
    thread.start()
    assert loaded.wait(10)
    return thread, release


@pytest.mark.parametrize("holder", ["view", "handle"])
def test_locked_session_never_removed(make_app: MakeApp, data_dir: Path, holder: str) -> None:
    """A session held by a request (or an open handle) is live, however old it looks;
    the same sweep removes it once it is released."""
    app = make_app(SESSION_TIMEOUT=100)
    store = store_of(app)
    sid = plant(store, data_dir, 1, age=50)[0]
    path = record_path(data_dir, sid)
    later = time.time() + 1000  # every record is past its idle timeout then
    if holder == "view":
        thread, release = _held_by_view(app, sid)
    else:
        status, handle = store.open(sid, time.time())
        assert status == _core.OpenStatus.Found and handle is not None
    set_age(path, 5000)

    report = sweep(app, later)
    assert path.exists()
    assert (report.live, report.expired, report.removed) == (1, 0, 0)

    if holder == "view":
        release.set()
        thread.join(30)
        assert not thread.is_alive()
        assert get_with(app, sid, "held") == "yes"
    else:
        handle.release()
    report = sweep(app, later)
    assert (report.expired, report.removed) == (1, 1)
    assert not path.exists()


@pytest.mark.parametrize("timeout", [600, None])
def test_legacy_files_swept_by_mtime(make_app: MakeApp, data_dir: Path, timeout: Any) -> None:
    """Beaker files and Beaker lock files past the idle timeout (by mtime) are removed,
    younger ones kept; without an idle timeout legacy sessions never expire."""
    for label in ("beaker110", "beaker114"):
        shutil.copytree(LEGACY / label, data_dir, dirs_exist_ok=True)
    files = {p.name[:32]: p for p in (data_dir / "container_file").rglob("*.cache")}
    assert len(files) == 6
    for sid, path in files.items():
        set_age(path, 3600 if sid.endswith("03") else (100 if sid.endswith("02") else 0))
    locks = data_dir / "container_file_lock" / "a" / "aa"
    locks.mkdir(parents=True)
    # Beaker's lock names: sha1 hex (only those are ever removed).
    old_lock, young_lock = locks / f"aa{'0' * 38}.lock", locks / f"aa{'1' * 38}.lock"
    for path, age in ((old_lock, 3600), (young_lock, 10)):
        path.write_bytes(b"")
        set_age(path, age)

    app = make_app(SESSION_TIMEOUT=timeout)
    report = sweep(app)
    assert report.legacy == 6
    assert report.legacy_locks == 2
    expired = {sid for sid in files if sid.endswith("03")} if timeout else set()
    assert report.legacy_expired == len(expired)
    assert report.removed == len(expired) + 1
    for sid, path in files.items():
        assert path.exists() == (sid not in expired), sid
    assert not old_lock.exists() and young_lock.exists()
    # A kept legacy session still loads (and migrates).
    assert get_with(app, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01", "user") == "alice"


# -- absolute lifetime -------------------------------------------------------------------


def test_absolute_lifetime_ends_active_session(
    make_app: MakeApp, tmp_path: Path, clock: FakeClock
) -> None:
    """A session used every 30 s dies after SESSION_ABSOLUTE_TIMEOUT (new id, data and
    record gone) while the same activity under SESSION_TIMEOUT alone keeps it."""
    limited = clock.install(make_app(SESSION_TIMEOUT=600, SESSION_ABSOLUTE_TIMEOUT=140))
    control = clock.install(build_app(tmp_path / "control", SESSION_TIMEOUT=600))
    client, other = limited.test_client(), control.test_client()
    started = clock()
    client.get("/set/k/v")
    other.get("/set/k/v")
    sid = str(cookie_of(client))
    path = record_path(Path(limited.config["SESSION_DATA_DIR"]), sid)
    died_at = None
    while clock() - started < 240:
        value = client.get("/get/k").text
        assert other.get("/get/k").text == "v"
        if value != "v" and died_at is None:
            died_at = clock()
        clock.advance(30)
    assert died_at is not None, "the absolute lifetime did not end the session"
    assert died_at - started > 140
    assert not path.exists()
    client.get("/set/k/w")
    assert cookie_of(client) != sid
    assert get_with(limited, sid) == "None"


def test_sweep_applies_absolute_lifetime(make_app: MakeApp, data_dir: Path) -> None:
    """A record used a moment ago (fresh mtime and header) but created before the
    absolute lifetime is swept; the same tree under the idle timeout alone is kept."""
    idle_only = make_app(SESSION_TIMEOUT=1800)
    store = store_of(idle_only)
    old = plant(store, data_dir, 2, age=1, created_age=100)
    young = plant(store, data_dir, 3, age=1, created_age=10)
    report = store.walk(time.time(), _core.WalkMode.Stats)
    assert report.expired == 0

    absolute = make_app(SESSION_TIMEOUT=1800, SESSION_ABSOLUTE_TIMEOUT=50)
    report = sweep(absolute)
    assert (report.expired, report.live, report.removed) == (2, 3, 2)
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, s) for s in young)
    assert all(get_with(absolute, s) == "None" for s in old)


GOOD = [(1, 1.0), (0.5, 0.5), ("2.5", 2.5), (datetime.timedelta(minutes=5), 300.0)]
BAD = [0, -1, "soon", "", True, float("nan"), float("inf"), [5], {"s": 1}]


@pytest.mark.parametrize("key", ["SESSION_ABSOLUTE_TIMEOUT", "SESSION_SWEEP_INTERVAL"])
def test_lifetime_and_interval_config(data_dir: Path, key: str) -> None:
    """Both keys take positive seconds (or None); anything else is a ConfigurationError
    naming the key."""
    attr = "absolute_timeout" if key == "SESSION_ABSOLUTE_TIMEOUT" else "sweep_interval"
    off = [(None, None)] + ([(0, None), (False, None)] if attr == "sweep_interval" else [])
    for value, expected in [*GOOD, *off]:
        app = build_app(data_dir, **{key: value})
        interface = interface_of(app)
        assert getattr(interface.config, attr) == expected
        assert (interface.sweeper is not None) == (
            key == "SESSION_SWEEP_INTERVAL" and expected is not None
        )
    for bad in BAD:
        if attr == "sweep_interval" and bad == 0:
            continue  # 0 turns the automatic sweep off
        with pytest.raises(ConfigurationError, match=key):
            build_app(data_dir, **{key: bad})


# -- sweeping while requests run -------------------------------------------------------


@pytest.mark.parametrize("absolute", [None, 3600])
def test_sweep_racing_live_requests(
    make_app: MakeApp, data_dir: Path, absolute: float | None
) -> None:
    """Repeated sweeps during requests on live sessions lose no session and no update,
    and remove every expired record. (With an absolute lifetime the sweeper opens and
    locks every record, live ones included.)"""
    app = make_app(SESSION_TIMEOUT=60, SESSION_ABSOLUTE_TIMEOUT=absolute)
    expired = plant(store_of(app), data_dir, 400, age=3600)
    # At least `rounds` increments per client, and on until two sweeps have finished (a
    # loaded machine can sweep slowly: the race must still happen), at most `max_rounds`.
    n_threads, per_thread, rounds, max_rounds = 4, 2, 20, 5000
    clients = []
    for _ in range(n_threads * per_thread):
        client = app.test_client()
        assert client.get("/inc").text == "1"
        clients.append(client)
    sids = [cookie_of(c) for c in clients]
    done = threading.Event()
    errors: list[BaseException] = []
    reports: list[_core.Report] = []

    counts = [1] * len(clients)

    def worker(mine: list[int]) -> None:
        try:
            for i in range(2, max_rounds + 2):
                if i > rounds + 1 and len(reports) >= 2:
                    break
                for k in mine:
                    assert clients[k].get("/inc").text == str(i)
                    counts[k] = i
        except BaseException as exc:
            errors.append(exc)

    def sweeper() -> None:
        try:
            while not done.is_set():
                reports.append(sweep(app))
        except BaseException as exc:
            errors.append(exc)

    sweeping = threading.Thread(target=sweeper)
    sweeping.start()
    workers = [
        threading.Thread(target=worker, args=(list(range(len(clients)))[i::n_threads],))
        for i in range(n_threads)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join(90)
    done.set()
    sweeping.join(90)
    assert not errors, errors[0]
    assert len(reports) >= 2
    reports.append(sweep(app))
    assert sum(r.expired for r in reports) == len(expired)
    assert [cookie_of(c) for c in clients] == sids
    for client, count in zip(clients, counts):
        assert count >= rounds + 1
        assert client.get("/get/n").text == str(count)
    assert sorted(record_files(data_dir)) == sorted(record_path(data_dir, str(s)) for s in sids)


# -- automatic policy --------------------------------------------------------------------


def test_automatic_sweep_runs_in_background(
    make_app: MakeApp, data_dir: Path, stop_sweepers: list[Flask]
) -> None:
    """With SESSION_SWEEP_INTERVAL the background thread removes expired records while
    no request runs; init_app itself starts no thread."""
    before = sweeper_threads()
    app = make_app(SESSION_TIMEOUT=60, SESSION_SWEEP_INTERVAL=0.5)
    stop_sweepers.append(app)
    assert sweeper_threads() == before
    live = plant(store_of(app), data_dir, 1, age=5)
    app.test_client().get("/none")  # the first request of the process starts the thread
    assert len(sweeper_threads() - before) == 1
    plant(store_of(app), data_dir, 20, age=3600)

    deadline = time.time() + 5
    while len(record_files(data_dir)) > 1 and time.time() < deadline:
        time.sleep(0.05)
    assert record_files(data_dir) == [record_path(data_dir, live[0])]
    interface = interface_of(app)
    assert interface.sweeper is not None
    assert interface.sweeper.last_report is not None
    assert (data_dir / "sweep.stamp").is_file()
    assert get_with(app, live[0]) == "v"


_COORDINATED = """
import logging, os, sys, time
sys.path.insert(0, {tests!r})
from helpers import build_app

log = {log!r}

class Count(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("swept"):
            with open(log, "a") as f:
                f.write(f"sweep {{os.getpid()}} {{time.time()!r}}\\n")

logger = logging.getLogger("flask_beaker_session")
logger.setLevel(logging.INFO)
logger.addHandler(Count())
app = build_app({data_dir!r}, SESSION_TIMEOUT=60, SESSION_SWEEP_INTERVAL={interval!r})
with open(log, "a") as f:
    f.write(f"start {{os.getpid()}} {{time.time()!r}}\\n")
app.test_client().get("/none")
time.sleep({duration!r})
with open(log, "a") as f:
    f.write(f"end {{os.getpid()}} {{time.time()!r}}\\n")
"""


def test_automatic_sweep_at_most_once_per_interval_across_processes(
    data_dir: Path, tmp_path: Path
) -> None:
    """Four processes sharing a data dir, each with its sweeper thread: the store is
    swept about once per interval in total, not once per interval per process."""
    interval, duration, processes = 1.0, 3.0, 4
    log = tmp_path / "sweeps.log"
    expired = plant(store_of(build_app(data_dir, SESSION_TIMEOUT=60)), data_dir, 10, age=3600)
    script = tmp_path / "worker.py"
    script.write_text(
        _COORDINATED.format(
            tests=str(TESTS_DIR),
            log=str(log),
            data_dir=str(data_dir),
            interval=interval,
            duration=duration,
        )
    )
    procs = [subprocess.Popen([sys.executable, str(script)]) for _ in range(processes)]
    for proc in procs:
        assert proc.wait(60) == 0
    events = [line.split() for line in log.read_text().splitlines()]
    starts = [float(t) for kind, _, t in events if kind == "start"]
    ends = [float(t) for kind, _, t in events if kind == "end"]
    sweeps = sorted(float(t) for kind, _, t in events if kind == "sweep")
    assert len(starts) == len(ends) == processes
    span = max(ends) - min(starts)
    assert 2 <= len(sweeps) <= span / interval + 1, (len(sweeps), span)
    gaps = [b - a for a, b in zip(sweeps, sweeps[1:])]
    assert min(gaps) > 0.5 * interval, gaps
    assert not any(record_path(data_dir, s).exists() for s in expired)


_FORKED = """
import json, os, pickle, sys, threading, time
sys.path.insert(0, {tests!r})
from helpers import build_app, client_with

data_dir = {data_dir!r}
app = build_app(data_dir, SESSION_TIMEOUT=60, SESSION_SWEEP_INTERVAL=0.5)
store = app.session_interface.store
now = time.time()
live = store.new_id()
store.create(live, pickle.dumps({{"k": "v"}}), now, now)
expired = []
for _ in range(10):
    sid = store.new_id()
    store.create(sid, pickle.dumps({{"k": "old"}}), now - 3600, now - 3600)
    expired.append(sid)
result = {{"threads_before_fork": threading.active_count()}}
old = time.time() - 3600
for root, _, names in os.walk(os.path.join(data_dir, "fbs1")):
    for name in names:
        path = os.path.join(root, name)
        os.utime(path, (old, old))
# The live record was just written: its header keeps it live despite the old mtime.
pid = os.fork()
if pid == 0:
    deadline = time.time() + 5
    def count():
        return sum(len(n) for _, _, n in os.walk(os.path.join(data_dir, "fbs1")))
    while count() > 1 and time.time() < deadline:
        time.sleep(0.05)
    out = {{"files_left": count()}}
    out["live_value"] = client_with(app, live).get("/get/k").text
    fresh = app.test_client()
    out["set_status"] = fresh.get("/set/a/1").status_code
    out["new_value"] = fresh.get("/get/a").text
    out["child_sweeper_threads"] = sum(
        t.name == "flask-beaker-session-sweeper" for t in threading.enumerate()
    )
    with open({out!r}, "w") as f:
        json.dump(out, f)
    os._exit(0)
_, status = os.waitpid(pid, 0)
result["child_status"] = status
result["threads_after_fork"] = threading.active_count()
print(json.dumps(result))
"""


@pytest.mark.posix_only(reason="os.fork")
def test_automatic_sweep_is_fork_safe(data_dir: Path, tmp_path: Path) -> None:
    """An app set up in a parent that never served a request (a pre-fork master) has no
    thread; after fork the child sweeps in the background and serves requests."""
    out = tmp_path / "child.json"
    script = tmp_path / "forked.py"
    script.write_text(_FORKED.format(tests=str(TESTS_DIR), data_dir=str(data_dir), out=str(out)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    parent = json.loads(proc.stdout)
    assert parent == {"threads_before_fork": 1, "child_status": 0, "threads_after_fork": 1}
    child = json.loads(out.read_text())
    assert child["files_left"] == 1
    assert child["live_value"] == "v"
    assert child["set_status"] == 200 and child["new_value"] == "1"
    assert child["child_sweeper_threads"] == 1


_FORK_DURING_SWEEP = """
import json, os, pickle, signal, sys, threading, time
sys.path.insert(0, {tests!r})
from flask_beaker_session.errors import LockTimeoutError
from helpers import file_store

data_dir = {data_dir!r}
# An absolute lifetime makes the sweeper open and lock every record.
store = file_store(data_dir, idle=60.0, absolute=3600.0, lock=5.0)
now = time.time()
ids = []
for _ in range(3000):
    sid = store.new_id()
    store.create(sid, pickle.dumps({{"k": 1}}), now, now)
    ids.append(sid)
stop = threading.Event()
sweeps = []

def sweeping():
    while not stop.is_set():
        if store.sweep_if_due(time.time(), 1e-6) is not None:
            sweeps.append(1)

thread = threading.Thread(target=sweeping)
thread.start()
time.sleep(0.4)
pid = os.fork()  # mid-sweep: the child inherits the sweeper's open files
if pid == 0:
    time.sleep(60)
    os._exit(0)
stop.set()
thread.join()
out = {{"sweeps": len(sweeps)}}
out["parent_can_sweep"] = store.sweep_if_due(time.time() + 10, 1e-6) is not None
quick = file_store(data_dir, idle=60.0, absolute=3600.0, lock=0.01)
stuck = 0
for sid in ids:
    try:
        status, handle = quick.open(sid, time.time())
        handle.release()
    except LockTimeoutError:
        stuck += 1
out["stuck_sessions"] = stuck
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
print(json.dumps(out))
"""


@pytest.mark.posix_only(reason="os.fork and SIGKILL")
def test_fork_during_sweep_leaves_no_lock_behind(data_dir: Path, tmp_path: Path) -> None:
    """A process that forks while its sweeper thread is mid-sweep (e.g. a view using
    multiprocessing) must not leave the sweep stamp or any session locked by the files
    the child inherited: the parent keeps sweeping and every session stays usable."""
    script = tmp_path / "fork_during_sweep.py"
    script.write_text(_FORK_DURING_SWEEP.format(tests=str(TESTS_DIR), data_dir=str(data_dir)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sweeps"] > 0
    assert out["parent_can_sweep"] is True
    assert out["stuck_sessions"] == 0
