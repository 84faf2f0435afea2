"""The public API kept from the original package (SPEC §2)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import flask_beaker_session
import pytest
from flask import Flask
from flask import session as flask_session
from flask.sessions import SecureCookieSessionInterface
from flask_beaker_session import config as fbs_config
from flask_beaker_session import session as fbs
from flask_beaker_session.errors import ConfigurationError
from flask_beaker_session.session_interface import BeakerSessionInterface
from helpers import COOKIE, cookie_of, plain_app, record_files


def assert_sessions_work(app: Flask, data_dir: Path) -> None:
    client = app.test_client()
    assert client.get("/set/user/alice").status_code == 200
    assert cookie_of(client) is not None
    assert client.get("/get/user").text == "alice"
    assert len(record_files(data_dir)) == 1


class FakeApp:
    """Quacks like a Flask app (config, extensions, hooks) but is not one."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"SESSION_DATA_DIR": "/nonexistent"}
        self.extensions: dict[str, Any] = {}
        self.session_interface: Any = None

    def teardown_request(self, f: Any) -> Any:
        return f

    def register_error_handler(self, exc: Any, f: Any) -> None:
        pass


def test_session_is_a_module_with_class_and_init_app() -> None:
    """``from flask_beaker_session import session`` is a module, as originally."""
    assert isinstance(fbs, types.ModuleType)
    assert fbs.__name__ == "flask_beaker_session.session"
    assert inspect.isclass(fbs.Session)
    assert callable(fbs.init_app)
    assert callable(fbs.Session.init_app)


def test_module_level_init_app(tmp_path: Path) -> None:
    """The original README's ``session.init_app(app)`` works."""
    app = plain_app(tmp_path / "d")
    fbs.init_app(app)
    assert isinstance(app.session_interface, BeakerSessionInterface)
    assert_sessions_work(app, tmp_path / "d")


def test_session_without_app_defers_init(tmp_path: Path) -> None:
    """``Session()`` touches no app; ``init_app`` later installs the interface."""
    app = plain_app(tmp_path / "d")
    ext = fbs.Session()
    assert isinstance(app.session_interface, SecureCookieSessionInterface)
    ext.init_app(app)
    assert isinstance(app.session_interface, BeakerSessionInterface)
    assert_sessions_work(app, tmp_path / "d")


def test_session_with_app_inits_at_once(tmp_path: Path) -> None:
    """``Session(app)`` installs the interface immediately."""
    app = plain_app(tmp_path / "d")
    fbs.Session(app)
    assert isinstance(app.session_interface, BeakerSessionInterface)
    assert_sessions_work(app, tmp_path / "d")


_factory_ext = fbs.Session()


def create_app(data_dir: Path) -> Flask:
    """The application-factory pattern with a module-level extension object."""
    app = plain_app(data_dir)
    _factory_ext.init_app(app)
    return app


def test_factory_pattern(tmp_path: Path) -> None:
    """A module-level ``Session()`` initialised inside an app factory works."""
    app = create_app(tmp_path / "d")
    assert_sessions_work(app, tmp_path / "d")


def test_one_extension_several_apps_each_with_its_own_config(tmp_path: Path) -> None:
    """One ``Session`` object serves several apps, each keeping its own settings."""
    ext = fbs.Session()
    dir1, dir2 = tmp_path / "one", tmp_path / "two"
    app1 = plain_app(dir1)
    app2 = plain_app(dir2, SESSION_EXPIRES=False)
    ext.init_app(app1)
    ext.init_app(app2)
    c1, c2 = app1.test_client(), app2.test_client()
    r1 = c1.get("/set/who/one")
    r2 = c2.get("/set/who/two")
    h1 = r1.headers["Set-Cookie"]
    h2 = r2.headers["Set-Cookie"]
    assert h1.startswith(f"{COOKIE}=") and h2.startswith(f"{COOKIE}=")
    assert "Expires=" not in h1  # app1: browser-session cookie (default)
    assert "Expires=" in h2  # app2: SESSION_EXPIRES=False, persistent cookie
    assert len(record_files(dir1)) == 1
    assert len(record_files(dir2)) == 1
    assert c1.get("/get/who").text == "one"
    assert c2.get("/get/who").text == "two"
    # The sessions are separate stores: app2 does not know app1's id.
    c2.set_cookie(COOKIE, cookie_of(c1) or "")
    assert c2.get("/get/who").text == "None"


@pytest.mark.parametrize(
    "bad",
    [None, "", 0, "app", "flask.Flask", FakeApp(), Flask, object(), {"config": {}}],
    ids=[
        "None",
        "empty-str",
        "zero",
        "str",
        "dotted-str",
        "fake-app",
        "class",
        "obj",
        "dict",
    ],
)
def test_init_app_rejects_non_flask(bad: Any) -> None:
    """Anything that is not a ``flask.Flask`` instance raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="Invalid Flask application instance"):
        fbs.Session().init_app(bad)
    with pytest.raises(ConfigurationError, match="Invalid Flask application instance"):
        fbs.init_app(bad)


@pytest.mark.parametrize("bad", ["app", FakeApp(), 0.0])
def test_session_constructor_rejects_non_flask(bad: Any) -> None:
    """``Session(<not Flask>)`` raises, like the original's ``Session(app=Mock())``."""
    with pytest.raises(ConfigurationError, match="Invalid Flask application instance"):
        fbs.Session(bad)


def test_fake_app_left_untouched() -> None:
    """A rejected object is not half-initialised."""
    fake = FakeApp()
    with pytest.raises(ConfigurationError):
        fbs.init_app(fake)
    assert fake.session_interface is None
    assert fake.extensions == {}


def test_flask_subclass_accepted(tmp_path: Path) -> None:
    """Subclasses of ``flask.Flask`` are applications too."""

    class MyFlask(Flask):
        pass

    app = MyFlask(__name__)
    app.config.update(SESSION_DATA_DIR=str(tmp_path / "d"))

    @app.route("/set")
    def set_value() -> str:
        flask_session["x"] = 1
        return "ok"

    fbs.Session(app)
    assert isinstance(app.session_interface, BeakerSessionInterface)
    client = app.test_client()
    client.get("/set")
    assert cookie_of(client) is not None
    assert len(record_files(tmp_path / "d")) == 1


def test_session_interface_installed(tmp_path: Path) -> None:
    """Before init Flask's cookie interface is in place; after, ours."""
    app = plain_app(tmp_path / "d")
    assert type(app.session_interface) is SecureCookieSessionInterface
    fbs.init_app(app)
    assert isinstance(app.session_interface, BeakerSessionInterface)
    assert not isinstance(app.session_interface, SecureCookieSessionInterface)


def test_config_default_constants() -> None:
    """``flask_beaker_session.config`` exposes the original defaults."""
    assert fbs_config.SESSION_TYPE == "file"
    assert fbs_config.SESSION_EXPIRES is True
    assert fbs_config.SESSION_TIMEOUT == 1800
    assert fbs_config.SESSION_DATA_DIR == "./.sessions"
    assert fbs_config.SESSION_TESTING is False


def test_version_is_a_string() -> None:
    """``__version__`` is a non-empty version string."""
    assert isinstance(flask_beaker_session.__version__, str)
    assert flask_beaker_session.__version__
    assert flask_beaker_session.__version__[0].isdigit()


def test_errors_module() -> None:
    """``ConfigurationError`` keeps its place and base class."""
    from flask_beaker_session import errors

    assert issubclass(errors.ConfigurationError, Exception)
    assert errors.ConfigurationError is ConfigurationError


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_package_does_not_import_flask() -> None:
    """``import flask_beaker_session`` alone stays Flask-free (fresh interpreter)."""
    out = run_python(
        """
        import sys
        import flask_beaker_session
        print('flask' in sys.modules, isinstance(flask_beaker_session.__version__, str))
        """
    )
    assert out == "False True"


def test_session_reexported_lazily() -> None:
    """``flask_beaker_session.Session`` is the class of the ``session`` module,
    imported on first attribute access."""
    out = run_python(
        """
        import sys
        import flask_beaker_session
        before = 'flask' in sys.modules
        cls = flask_beaker_session.Session
        from flask_beaker_session.session import Session
        print(before, 'flask' in sys.modules, cls is Session)
        """
    )
    assert out == "False True True"
    from flask_beaker_session import Session

    assert Session is fbs.Session


def test_unknown_package_attribute() -> None:
    """The lazy re-export does not invent attributes."""
    with pytest.raises(AttributeError):
        _ = flask_beaker_session.NoSuchThing  # type: ignore[attr-defined]
