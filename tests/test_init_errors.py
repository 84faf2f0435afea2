"""What ``init_app`` says when the data dir or the secret is wrong (issue 15, items 8 and 9):
``SESSION_DATA_DIR`` problems are a ``ConfigurationError`` naming the key at start-up
(never a raw ``OSError``, never a 500 at the first save), a missing data dir is created
(0700), ``SECRET_KEY`` is read as Flask reads it (``app.secret_key``), and records that
fail authentication say what usually causes it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_beaker_session import session as fbs
from flask_beaker_session._log import Once
from flask_beaker_session.errors import ConfigurationError
from helpers import build_app, client_with, cookie_of, interface_of, plain_app, record_files

NOBODY = 65534


def init(data_dir: Path | str, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="k", **config)
    fbs.init_app(app)
    return app


def refused(data_dir: Path | str) -> str:
    """The ConfigurationError message init_app gives for ``data_dir`` ('' if accepted)."""
    try:
        init(data_dir)
    except ConfigurationError as exc:
        return str(exc)
    return ""


def unprivileged(fn: Callable[[], str]) -> str:
    """``fn()`` in a forked child running as an unprivileged user (root bypasses the
    permission bits these tests are about), its result through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result = fn()
        except BaseException as exc:  # reported to the parent
            result = f"raised {type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir an unprivileged user can enter (pytest's are private to their user)."""
    path = Path(tempfile.mkdtemp(prefix="fbs-init-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path)


# -- SESSION_DATA_DIR ------------------------------------------------------------------


@pytest.mark.posix_only(reason="mode bits and umask")
def test_missing_data_dir_is_created_private_at_init(tmp_path: Path) -> None:
    """A missing data dir (and its missing parents) is created at init_app, mode 0700
    whatever the umask; the first request finds it."""
    data_dir = tmp_path / "var" / "lib" / "app" / "sessions"
    old = os.umask(0)
    try:
        app = build_app(data_dir)
    finally:
        os.umask(old)
    assert data_dir.is_dir()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert record_files(data_dir) == []
    client = app.test_client()
    client.get("/set/a/1")
    assert client.get("/get/a").text == "1"


def test_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    """A path below a regular file: ConfigurationError naming the key and the file (not a
    raw NotADirectoryError); the file is left alone."""
    blocker = tmp_path / "config.ini"
    blocker.write_text("x")
    for data_dir in (blocker / "sessions", blocker / "a" / "b"):
        app = Flask(__name__)
        app.config.update(SESSION_DATA_DIR=str(data_dir), SECRET_KEY="k")
        with pytest.raises(ConfigurationError) as info:
            fbs.init_app(app)
        message = str(info.value)
        assert "SESSION_DATA_DIR" in message and str(blocker) in message
        assert "not a directory" in message
        assert not isinstance(app.session_interface, fbs.BeakerSessionInterface)
    assert blocker.read_text() == "x"


@pytest.mark.posix_only(reason="os.fork, setuid and mode bits")
def test_data_dir_behind_a_directory_that_cannot_be_entered(shared_tmp: Path) -> None:
    """A parent without search permission: ConfigurationError naming the key (not a raw
    PermissionError)."""
    closed = shared_tmp / "closed"
    closed.mkdir(mode=0o700)  # owned by root (or this user): no entry for others
    if os.geteuid() != 0:
        closed.chmod(0o600)
    message = unprivileged(lambda: refused(closed / "sessions"))
    assert message.startswith("SESSION_DATA_DIR="), message
    assert "permission denied" in message and "parent" in message


@pytest.mark.posix_only(reason="os.fork, setuid and mode bits")
def test_data_dir_that_cannot_be_created(shared_tmp: Path) -> None:
    """A parent that can be entered but not written (the README's
    ``/var/lib/myapp/sessions`` for a non-root user): ConfigurationError at init_app naming
    the key and the path, instead of a 500 at the first save."""
    readonly = shared_tmp / "lib"
    readonly.mkdir(mode=0o755)
    if os.geteuid() != 0:
        readonly.chmod(0o555)
    target = readonly / "myapp" / "sessions"
    message = unprivileged(lambda: refused(target))
    assert message.startswith("SESSION_DATA_DIR="), message
    assert "cannot create" in message and "Permission denied" in message
    assert not (readonly / "myapp").exists()


@pytest.mark.posix_only(reason="mode bits")
def test_existing_data_dir_is_left_as_it_is(tmp_path: Path) -> None:
    """An existing data dir is used as it is (its mode is the operator's choice; init_app
    only warns about one writable by others)."""
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o711)
    data_dir.chmod(0o711)
    init(data_dir)
    assert data_dir.stat().st_mode & 0o777 == 0o711


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_other_backends_do_not_touch_the_data_dir(tmp_path: Path, backend: str) -> None:
    """Only the file backend checks or creates SESSION_DATA_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for data_dir in (tmp_path / "missing", blocker / "below"):
        init(data_dir, SESSION_TYPE=backend)
    assert not (tmp_path / "missing").exists()


# -- SECRET_KEY ------------------------------------------------------------------------


class KeyedFlask(Flask):
    """A Flask subclass that sets its secret as a class attribute (Flask honours it)."""

    secret_key = "class-attribute-secret"


def keyed_app(data_dir: Path, **config: object) -> Flask:
    app = KeyedFlask(__name__)
    app.config.update(SESSION_DATA_DIR=str(data_dir), SESSION_SWEEP_INTERVAL=None, **config)

    @app.route("/set/<value>")
    def set_value(value: str) -> str:
        from flask import session

        session["a"] = value
        return "ok"

    @app.route("/get")
    def get_value() -> str:
        from flask import session

        return str(session.get("a"))

    fbs.init_app(app)
    return app


def test_secret_key_as_class_attribute_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``app.secret_key`` is what Flask signs with; records are authenticated with it:
    an app configured with the same SECRET_KEY reads them, one with another key does not,
    and no "no SECRET_KEY" warning is logged."""
    monkeypatch.setattr(fbs, "PROCESS", Once())  # a fresh "once per process"
    caplog.set_level(logging.WARNING, logger="flask_beaker_session")
    data_dir = tmp_path / "d"
    app = keyed_app(data_dir)
    assert app.config["SECRET_KEY"] is None and app.secret_key == "class-attribute-secret"
    assert interface_of(app).config.secret_keys == (b"class-attribute-secret",)
    assert not [r for r in caplog.records if "SECRET_KEY" in r.getMessage()]
    client = app.test_client()
    client.get("/set/1")
    sid = cookie_of(client)
    assert sid is not None
    assert not (data_dir / "session.key").exists()  # keyed by the secret, not generated

    same = build_app(data_dir, SECRET_KEY="class-attribute-secret")
    assert client_with(same, sid).get("/get/a").text == "1"
    other = build_app(data_dir, SECRET_KEY="another")
    assert client_with(other, sid).get("/get/a").text == "None"


def test_fallbacks_read_from_config_with_class_attribute_secret(tmp_path: Path) -> None:
    """SECRET_KEY_FALLBACKS (from app.config, as Flask reads it) still verify old records
    when the secret comes from the class attribute."""
    data_dir = tmp_path / "d"
    old = build_app(data_dir, SECRET_KEY="old-secret")
    client = old.test_client()
    client.get("/set/a/1")
    sid = cookie_of(client)
    assert sid is not None
    rotated = keyed_app(data_dir, SECRET_KEY_FALLBACKS=["old-secret"])
    assert interface_of(rotated).config.secret_keys == (
        b"class-attribute-secret",
        b"old-secret",
    )
    assert client_with(rotated, sid).get("/get").text == "1"


def test_record_with_another_key_names_the_likely_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record written under another SECRET_KEY (two workers with different keys):
    the reader gets a fresh session and one warning that says the key may differ and
    names the usual causes; repeats go to DEBUG (rate-limited per app)."""
    caplog.set_level(logging.DEBUG, logger="flask_beaker_session")
    data_dir = tmp_path / "d"
    writer = build_app(data_dir, SECRET_KEY="worker-1-key")
    sids = []
    for value in ("1", "2"):
        client = writer.test_client()
        client.get(f"/set/a/{value}")
        sids.append(cookie_of(client))
    reader = plain_app(data_dir, SECRET_KEY="worker-2-key")
    fbs.init_app(reader)
    caplog.clear()
    for sid in sids:
        assert sid is not None
        assert client_with(reader, sid).get("/get/a").text == "None"
    ours = [r for r in caplog.records if r.name == "flask_beaker_session"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert "different key" in warning
    assert "different SECRET_KEY values" in warning
    assert "generated at start-up" in warning
    assert "SECRET_KEY_FALLBACKS" in warning
    repeats = [r for r in ours if r.levelno == logging.DEBUG and "different key" in r.getMessage()]
    assert len(repeats) == 1
    assert all(sid not in r.getMessage() for r in ours for sid in sids if sid)
