"""No secret, no trust (issue 14, item 8): Redis without ``SECRET_KEY`` is refused at
``init_app``; the file backend without one tags records with a key it generates in the
data dir (0600, created once, shared by every worker), so a record planted by someone who
cannot read that key is rejected before unpickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import _core
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError
from helpers import build_app, client_with, cookie_of, record_path

KEY = "session.key"


class Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


def no_key_app(data_dir: Path, **config: Any) -> Flask:
    return build_app(data_dir, SECRET_KEY=None, **config)


@pytest.mark.parametrize("secret", [None, ""])
def test_redis_without_secret_key_is_a_configuration_error(secret: Any) -> None:
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="redis", SECRET_KEY=secret)
    with pytest.raises(ConfigurationError, match="SESSION_TYPE='redis' needs a SECRET_KEY"):
        fbs.init_app(app)


@pytest.mark.posix_only(reason="mode bits and owners")
def test_key_is_generated_on_first_save_private_and_reused(data_dir: Path) -> None:
    app = no_key_app(data_dir)
    client = app.test_client()
    assert client.get("/get/k").status_code == 200
    assert not (data_dir / KEY).exists(), "a read creates nothing"
    assert client.get("/set/k/v").status_code == 200
    key = data_dir / KEY
    st = key.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_size == 32 and st.st_uid == os.geteuid()
    first = key.read_bytes()
    # Another app (another worker) on the same dir reads the session: same key.
    sid = cookie_of(client)
    assert sid is not None
    assert client_with(no_key_app(data_dir), sid).get("/get/k").get_data(as_text=True) == "v"
    assert key.read_bytes() == first


def test_planted_record_without_the_key_is_rejected_before_unpickling(
    data_dir: Path, tmp_path: Path
) -> None:
    """Regression: without SECRET_KEY the tag was a public checksum, so a record planted in
    the data dir (here by the core's checksum-only mode, exactly what 0.2 wrote) was
    unpickled. Now the generated key is required: nothing runs, a fresh session."""
    marker = tmp_path / "PWNED"
    app = no_key_app(data_dir)
    victim = app.test_client()
    victim.get("/set/k/v")
    sid = cookie_of(victim)
    assert sid is not None
    path = record_path(data_dir, sid)
    path.unlink()
    forger = _core.Store(
        _core.StoreConfig(backend=_core.FileBackend(data_dir=data_dir, generate_key=False), keys=[])
    )
    forger.create(sid, pickle.dumps({"evil": Bomb(marker)}), 1.0, 1.0)
    assert client_with(app, sid).get("/get/evil").get_data(as_text=True) == "None"
    assert not marker.exists()
    # A record forged with another key (someone who guessed wrong) fares no better.
    path.unlink(missing_ok=True)
    other = _core.Store(
        _core.StoreConfig(backend=_core.FileBackend(data_dir=data_dir), keys=[b"guess"])
    )
    other.create(sid, pickle.dumps({"evil": Bomb(marker)}), 1.0, 1.0)
    assert client_with(app, sid).get("/get/evil").get_data(as_text=True) == "None"
    assert not marker.exists()


_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
from helpers import build_app, cookie_of
app = build_app(sys.argv[2], SECRET_KEY=None)
sids = []
for i in range(5):
    client = app.test_client()
    client.get(f"/set/w/{i}")
    sids.append(cookie_of(client))
print(" ".join(sids))
"""


def test_workers_starting_together_share_one_key(data_dir: Path) -> None:
    """Eight processes create their first sessions at once on an empty data dir: one key
    file wins, and every session is readable by every worker."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(Path(__file__).parent), str(data_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    sids = [sid for p in procs for sid in p.communicate(timeout=60)[0].split()]
    assert len(sids) == 40
    assert sorted(p.name for p in data_dir.iterdir() if p.is_file()) == [KEY]
    reader = no_key_app(data_dir)
    for sid in sids:
        assert client_with(reader, sid).get("/get/w").get_data(as_text=True) != "None"


@pytest.mark.posix_only(reason="mode bits and owners (not checked on Windows)")
@pytest.mark.parametrize("problem", ["readable", "other-owner"])
def test_untrusted_key_file_fails_loudly(problem: str, data_dir: Path) -> None:
    """A key file others can read (or that another user owns) is never used: saving fails
    with an error naming the file, instead of trusting a key an attacker may know."""
    if problem == "other-owner" and os.geteuid() != 0:
        pytest.skip("chown needs root")
    data_dir.mkdir(mode=0o700)
    key = data_dir / KEY
    key.write_bytes(b"k" * 32)
    if problem == "readable":
        key.chmod(0o644)
    else:
        key.chmod(0o600)
        os.chown(key, 65534, 65534)
    app = no_key_app(data_dir, TESTING=True)
    with pytest.raises(OSError, match=KEY):
        app.test_client().get("/set/k/v")


def test_secret_key_means_no_generated_key(data_dir: Path) -> None:
    build_app(data_dir).test_client().get("/set/k/v")
    assert not (data_dir / KEY).exists()
