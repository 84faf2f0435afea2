"""Typical use of the public API, for ``mypy --strict`` (never imported or run by pytest).

``make typecheck`` checks this file: if an annotation of the package regresses (a method
disappears, a property changes type), this file stops type-checking. Flask types
:data:`flask.session` as a ``SessionMixin`` (a ``MutableMapping[str, Any]``), so mapping
use needs nothing; the Beaker methods need the session's own type, via ``cast``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from flask import Flask, session
from flask_beaker_session import Session, __version__
from flask_beaker_session import session as beaker_session
from flask_beaker_session.errors import (
    ConfigurationError,
    LockTimeoutError,
    StoreUnavailableError,
)
from flask_beaker_session.session_interface import BeakerSession, BeakerSessionInterface

version: str = __version__


class Config:
    SECRET_KEY = "a long random string"
    SESSION_EXPIRES = False
    SESSION_TIMEOUT = 3600
    SESSION_DATA_DIR = Path("/var/lib/myapp/sessions")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_object(Config)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=7)
    try:
        beaker_session.init_app(app)  # the original package's module-level form
    except ConfigurationError as exc:
        raise SystemExit(str(exc)) from exc
    return app


def create_app_with_extension_object() -> Flask:
    app = Flask(__name__)
    ext: Session = Session()
    ext.init_app(app)
    Session(Flask("other"))
    assert isinstance(app.session_interface, BeakerSessionInterface)
    return app


def freeze_session_time(app: Flask, now: float) -> float:
    """Tests move the sessions' time through the interface's injected clock (a
    zero-argument callable returning epoch seconds), not by patching ``time``."""
    interface = app.session_interface
    assert isinstance(interface, BeakerSessionInterface)
    interface.clock = lambda: now
    current: float = interface.clock()
    return current


app = create_app()


def beaker() -> BeakerSession:
    """The current request's session with its Beaker methods typed."""
    return cast(BeakerSession, session)


@app.route("/login/<name>")
def login(name: str) -> str:
    beaker().regenerate_id()
    session["user"] = name
    session.permanent = True
    user: str | None = session.get("user")
    return f"hello {user}"


@app.route("/cart/<item>")
def add_to_cart(item: str) -> str:
    cart: list[str] = session.setdefault("cart", [])
    cart.append(item)
    return ", ".join(session["cart"])


@app.route("/whoami")
def whoami() -> dict[str, object]:
    s = beaker()
    sid: str = s.id
    new: bool = s.is_new
    created: float = s.created
    last: float | None = s.last_accessed
    flags: tuple[bool, bool, bool] = (s.new, s.modified, s.permanent)
    return {"id": sid, "new": new, "created": created, "last": last, "flags": flags}


@app.route("/logout")
def logout() -> str:
    beaker().delete()
    return "bye"


@app.route("/reset")
def reset() -> str:
    s = beaker()
    s.invalidate()
    s.revert()
    s.save()
    return str(len(session))


def without_cast() -> None:
    # Flask's own type has no Beaker methods: this is an error without the cast. (If it
    # ever type-checked, ``--strict`` would report the ignore as unused.)
    session.regenerate_id()  # type: ignore[attr-defined]


@app.errorhandler(LockTimeoutError)
def busy(error: LockTimeoutError) -> tuple[str, int]:
    return "busy, retry", 503


@app.errorhandler(StoreUnavailableError)
def down(error: StoreUnavailableError) -> tuple[str, int]:
    return "store down", 503


def users_devices(ext: Session, user_id: str) -> list[str]:
    """A user's sessions (``SESSION_USER_KEY``): list, revoke one, revoke the others."""
    from flask_beaker_session.users import UserSession

    listed: list[UserSession] = ext.user_sessions(user_id)
    lines = [
        f"{s.handle} {s.created} {s.last_access} {s.expires} {s.metadata.get('ip')} {s.current}"
        for s in listed
    ]
    if listed:
        ok: bool = ext.revoke_session(user_id, listed[0].handle)
        assert isinstance(ok, bool)
    ended: int = ext.revoke_user_sessions(user_id, except_current=True)
    mine: str | None = ext.session_handle()

    @ext.user_metadata
    def device_name(data: Mapping[str, Any]) -> dict[str, str]:
        return {"device": str(data.get("device", ""))}

    return [*lines, str(ended), str(mine)]
