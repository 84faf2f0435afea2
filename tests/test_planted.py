"""Files planted in the data dir by someone else (issue 14, items 2, 3 and 7d; issue 15,
item 2): a legacy Beaker pickle is only unpickled if nobody but this user can have written
it, a huge record with a plausible header costs little and reads as no session, a data dir
writable by its group is reported, and a legacy tree that appears after ``init_app`` is read.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from helpers import LEGACY, MANIFEST, build_app, client_with, record_files, record_path

NOBODY = 65534
BEAKER = "beaker114"
#: How long the store reuses its answer to "is there a legacy tree?" (legacy::PROBE_TTL).
PROBE_TTL = 1.0


class Bomb:
    """Unpickling this creates ``marker`` (a stand-in for ``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


def legacy_bomb(marker: Path) -> bytes:
    """A Beaker >= 1.11 file whose inner pickle runs ``Bomb`` (the layout we read)."""
    import base64

    inner = pickle.dumps(
        {"_accessed_time": time.time(), "_creation_time": time.time(), "evil": Bomb(marker)},
        protocol=2,
    )
    return pickle.dumps({"session": base64.b64encode(inner).decode()}, protocol=2)


def fixture(name: str = "plain") -> dict[str, Any]:
    return dict(MANIFEST["labels"][BEAKER]["sessions"][name])


def install_legacy(data_dir: Path) -> None:
    shutil.copytree(LEGACY / BEAKER, data_dir, dirs_exist_ok=True)


def legacy_path(data_dir: Path, name: str = "plain") -> Path:
    return data_dir / Path(fixture(name)["path"]).relative_to(BEAKER)


def app_with_keys(data_dir: Path, **config: Any) -> Flask:
    """``build_app`` plus ``/keys``: the sorted user keys of the session."""
    app = build_app(data_dir, **config)

    @app.route("/keys")
    def keys() -> Any:
        return jsonify(sorted(k for k in flask_session if not k.startswith("_")))

    return app


def dump(app: Flask, sid: str) -> list[str]:
    """The user keys a request carrying ``sid`` sees."""
    response = client_with(app, sid).get("/keys")
    assert response.status_code == 200
    keys: list[str] = response.get_json()
    return keys


# -- item 2: planted legacy pickles ----------------------------------------------------


def plant(path: Path, how: str, marker: Path) -> None:
    """Replaces the legacy file at ``path`` by a pickle bomb planted ``how``."""
    path.unlink()
    if how == "fifo":
        os.mkfifo(path, 0o600)
        return
    if how == "directory":
        path.mkdir()
        return
    path.write_bytes(legacy_bomb(marker))
    if how == "other-owner":
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o600)
    elif how == "group-writable":
        path.chmod(0o664)
    elif how == "world-writable":
        path.chmod(0o646)


#: Whether this process runs as root (never on Windows, which has no ``geteuid``).
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

HOW = ["other-owner", "group-writable", "world-writable", "fifo", "directory"]


@pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")
@pytest.mark.posix_only(reason="owners, mode bits and FIFOs")
@pytest.mark.parametrize("how", HOW)
def test_planted_legacy_file_is_never_unpickled(
    how: str, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A legacy file owned by another user, writable by group or others, or not a regular
    file, reads as no session: nothing runs, the file is left in place, one warning."""
    marker = tmp_path / "PWNED"
    install_legacy(data_dir)
    path = legacy_path(data_dir)
    plant(path, how, marker)
    app = app_with_keys(data_dir)
    sid = fixture()["id"]
    with caplog.at_level(logging.DEBUG, logger="flask_beaker_session"):
        for _ in range(3):
            assert dump(app, sid) == []
    assert not marker.exists()
    assert path.exists() or path.is_dir()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if how != "directory":  # a directory is simply not a session file
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "legacy" in warnings[0].getMessage()
    # A trusted file next to it is still read (the rule is per file).
    other = fixture("object")
    assert dump(app, other["id"]) != []


def test_trusted_legacy_bomb_is_the_remaining_trust(data_dir: Path, tmp_path: Path) -> None:
    """The rule's limit, as documented: a pickle written by this user itself (0644, ours)
    is trusted, as the original package trusted it."""
    marker = tmp_path / "PWNED"
    install_legacy(data_dir)
    path = legacy_path(data_dir)
    path.write_bytes(legacy_bomb(marker))
    path.chmod(0o644)
    dump(app_with_keys(data_dir), fixture()["id"])
    assert marker.is_dir()


@pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")
@pytest.mark.posix_only(reason="owners, mode bits and FIFOs")
@pytest.mark.parametrize("how", ["other-owner", "group-writable", "fifo"])
def test_migrate_applies_the_same_rule(how: str, data_dir: Path, tmp_path: Path) -> None:
    """``flask beaker-session migrate`` never unpickles an untrusted file: it migrates the
    trusted ones, reports the others and leaves them in place."""
    marker = tmp_path / "PWNED"
    install_legacy(data_dir)
    path = legacy_path(data_dir)
    plant(path, how, marker)
    app = app_with_keys(data_dir, SESSION_TIMEOUT=None)
    result = app.test_cli_runner().invoke(args=["beaker-session", "migrate"])
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert path.exists()
    migrated = len(MANIFEST["labels"][BEAKER]["sessions"]) - 1
    assert f"migrated {migrated} of" in result.output
    if how != "fifo":  # (a FIFO is not even listed as a session file)
        assert "1 not trusted" in result.output
    assert len(record_files(data_dir)) == migrated


# -- issue 15 item 2: a legacy tree that appears after init_app ------------------------


def test_legacy_tree_appearing_after_init_app_is_read(data_dir: Path) -> None:
    """Rolling deploy: the new workers start on an empty data dir, the old ones then write
    Beaker files. A miss in our store looks in the legacy layout, whenever it appeared
    (within the probe's cache time, one second)."""
    app = app_with_keys(data_dir)
    sid = fixture()["id"]
    assert dump(app, sid) == []  # no tree yet: a fresh session
    install_legacy(data_dir)
    time.sleep(PROBE_TTL + 0.1)
    assert dump(app, sid) == ["blob", "items", "n", "nested", "user"]
    # ... and the tree going away stops the probing without an error.
    shutil.rmtree(data_dir / "container_file")
    time.sleep(PROBE_TTL + 0.1)
    assert dump(app, fixture("object")["id"]) == []


_PROBE_COST = """
import sys, time
sys.path.insert(0, sys.argv[1])
from helpers import file_store
store = file_store(sys.argv[2], read_legacy=sys.argv[3] == "1")
ids = [store.new_id() for _ in range(20000)]
t = time.perf_counter()
for sid in ids:
    store.open(sid, time.time())
print((time.perf_counter() - t) / len(ids) * 1e6)
"""


def test_legacy_probing_cost_on_a_miss(tmp_path: Path) -> None:
    """Measured, not asserted tightly: an unknown id with legacy reading on and no tree
    costs one cached lstat per second on top of the miss itself."""
    data = tmp_path / "d"
    data.mkdir()
    costs = {}
    for flag in ("0", "1"):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE_COST, str(Path(__file__).parent), str(data), flag],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        costs[flag] = float(out)
    print(f"miss, legacy off: {costs['0']:.2f} µs; legacy on, no tree: {costs['1']:.2f} µs")
    assert costs["1"] < costs["0"] * 1.5 + 2.0


# -- item 3: no allocation from an unauthenticated length ------------------------------


def sparse_record(path: Path, payload_len: int, size: int = 8 << 30) -> None:
    """A sparse file of ``size`` bytes whose two slot headers look valid (magic, version,
    keyed flag, times) and announce ``payload_len`` bytes; the tag is garbage."""
    now = time.time()
    header = struct.pack(
        "<4sHHQddI12s16s", b"FBSR", 1, 1, 1, now, now, payload_len, b"", b"\x01" * 16
    )
    assert len(header) == 64
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(header)
        f.seek(size // 2)
        f.write(header)


_SPARSE_PROBE = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
sys.path.insert(0, sys.argv[1])
from helpers import build_app, client_with
app = build_app(sys.argv[2])
client = client_with(app, sys.argv[3])
client.get("/none")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
response = client.get("/dump")
elapsed = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
body = response.get_data(as_text=True).strip()
print(response.status_code, body, elapsed, (after - before) / 1024)
"""


@pytest.mark.parametrize("announced", ["4GiB", "max-size"])
@pytest.mark.posix_only(reason="RLIMIT_AS, and sparse files (NTFS would write 8 GiB)")
def test_planted_sparse_8gib_record_costs_little(announced: str, data_dir: Path) -> None:
    """Regression: an 8 GiB sparse file with a valid-looking header at a session's record
    path made one request take 49 s and 4.1 GiB of RSS (the payload length was allocated
    before the tag was checked). Now: a few MB and milliseconds, then no session. Measured
    in a child with 2 GiB of address space."""
    app = app_with_keys(data_dir)
    client = app.test_client()
    client.get("/set/k/v")
    sid = client.get_cookie("beaker.session.id").value
    path = record_path(data_dir, sid)
    length = (4 << 30) - 128 if announced == "4GiB" else 4 << 20
    sparse_record(path, length)
    done = subprocess.run(
        [sys.executable, "-c", _SPARSE_PROBE, str(Path(__file__).parent), str(data_dir), sid],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status, body, elapsed, grew_mib = done.stdout.split()
    print(f"announced {announced}: {float(elapsed) * 1e3:.1f} ms, RSS +{float(grew_mib):.1f} MiB")
    assert status == "200" and json.loads(body) == {}
    assert float(elapsed) < 0.5
    assert float(grew_mib) < 16
    assert not path.exists()  # read as corrupt, removed


# -- item 7d: a data dir writable by its group -----------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o775, 0o777, 0o700, 0o755])
@pytest.mark.posix_only(reason="mode bits (the check is POSIX-only, docs/platforms.md)")
def test_group_writable_data_dir_is_reported(
    mode: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning covers a data dir writable by its group (0770/0775), not only by
    everyone; private or read-only-for-others dirs are not reported."""
    data = tmp_path / f"d{mode:o}"
    data.mkdir()
    data.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="flask_beaker_session"):
        build_app(data)
    lines = [r.getMessage() for r in caplog.records if "writable by other users" in r.getMessage()]
    if mode & 0o022:
        assert len(lines) == 1 and str(data) in lines[0] and f"{mode:o}" in lines[0], lines
    else:
        assert lines == []
