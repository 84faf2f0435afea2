"""The extension object, as in the original package::

    from flask_beaker_session import session
    session.init_app(app)                  # the original README's form (module-level)

    from flask_beaker_session.session import Session
    Session(app)                           # or: ext = Session(); ext.init_app(app)

``init_app`` reads and validates the configuration once, installs
:class:`~flask_beaker_session.session_interface.BeakerSessionInterface` on the app, and
registers the teardown that releases session locks, the 503 responses for lock timeouts and
an unavailable store, and the ``flask beaker-session`` commands.
For the file backend it creates the data dir (0700) if it is missing, so that a path that
cannot be used fails here rather than at the first save; it keeps no file open and starts
no thread, so it is safe before a pre-fork server forks.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import types
import weakref
from typing import Any

from flask import Flask, current_app, request
from flask import session as flask_session

from . import _fork
from . import config as _config
from . import users as _users
from ._log import PROCESS, logger
from .beaker_session import BeakerSession
from .cli import group as cli_group
from .errors import ConfigurationError, LockTimeoutError, StoreUnavailableError
from .responses import lock_timeout_response, unavailable_response
from .session_interface import BeakerSessionInterface, release_request_sessions
from .store import AppState
from .users import MetadataHook, UserSession

__all__ = ["Session", "init_app"]

#: Key under ``app.extensions``.
EXTENSION_KEY = "flask_beaker_session"


def _teardown(exc: BaseException | None) -> None:
    release_request_sessions(request.environ)


def _check_data_dir(cfg: _config.SessionConfig) -> None:
    """Creates the data dir if missing (``ConfigurationError`` if it cannot be) and warns
    about one this process cannot write to or that other users can."""
    _config.ensure_data_dir(cfg.data_dir)
    try:
        mode = cfg.data_dir.stat().st_mode
    except OSError:  # pragma: no cover - checked just above
        return
    if not os.access(cfg.data_dir, os.W_OK | os.X_OK):
        # Not fatal at start-up (permissions may be fixed before the first save), but
        # every save would fail: say so now rather than at the first request.
        PROCESS.log(
            f"unwritable-data-dir:{cfg.data_dir}",
            logging.WARNING,
            "SESSION_DATA_DIR %s is not writable by this process: saving sessions will fail",
            cfg.data_dir,
        )
    # Windows has no mode bits: stat reports every writable directory as 0777, and who
    # may write is its ACL's business (docs/platforms.md), which this does not read.
    if os.name == "posix" and mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if mode & stat.S_IWOTH else "its group"
        PROCESS.log(
            f"insecure-data-dir:{cfg.data_dir}",
            logging.WARNING,
            "SESSION_DATA_DIR %s is writable by other users (mode %o: %s can write "
            "there): they can delete or replace session records, and plant legacy files "
            "(which are then refused); use mode 0700",
            cfg.data_dir,
            stat.S_IMODE(mode),
            who,
        )


def _declared_workers() -> int:
    """Worker processes a pre-fork server was asked for, if we can tell (else 1)."""
    if "uwsgi" in sys.modules:
        return int(getattr(sys.modules["uwsgi"], "numproc", 1) or 1)
    if "gunicorn" not in sys.modules:
        return 1
    args = [*sys.argv, *os.environ.get("GUNICORN_CMD_ARGS", "").split()]
    count = os.environ.get("WEB_CONCURRENCY", "1")
    for i, arg in enumerate(args):
        if arg in ("-w", "--workers") and i + 1 < len(args):
            count = args[i + 1]
        elif arg.startswith("--workers="):
            count = arg.split("=", 1)[1]
        elif arg.startswith("-w") and arg[2:].isdigit():
            count = arg[2:]
    return int(count) if count.isdigit() else 1


_memory_forked_warned = False
_memory_apps: weakref.WeakSet[Flask] = weakref.WeakSet()


@_fork.on_fork_in_child
def _warn_memory_after_fork() -> None:
    global _memory_forked_warned
    if _memory_apps and not _memory_forked_warned:
        _memory_forked_warned = True
        logger.warning(
            "SESSION_TYPE='memory' in a forked worker: every worker process keeps its "
            "own sessions, so users lose them when their requests reach another worker; "
            "use 'file', 'redis' or 'postgresql'"
        )


class Session:
    """Server-side sessions for one or several Flask applications."""

    #: The application's metadata function (:meth:`user_metadata`), or None.
    metadata_hook: MetadataHook | None = None

    def __init__(self, app: Any = None) -> None:
        if app is not None:
            self.init_app(app)

    # -- a user's sessions (SESSION_USER_KEY; flask_beaker_session.users) ----------------

    def user_metadata(self, hook: MetadataHook) -> MetadataHook:
        """Registers (as a decorator) a function that, given the session's data when a user
        logs in, returns extra ``str`` fields to keep in the index entry and show in
        :meth:`user_sessions` (e.g. an OpenID Connect ``sid``, a device name)."""
        self.metadata_hook = hook
        return hook

    def user_sessions(self, user: Any, *, app: Flask | None = None) -> list[UserSession]:
        """The live sessions of ``user`` (the value of ``SESSION_USER_KEY``), oldest first.

        :raises ConfigurationError: ``SESSION_USER_KEY`` is not set.
        """
        state = _user_state(app)
        return _users.list_sessions(state, user, state.now())

    def revoke_session(self, user: Any, handle: str, *, app: Flask | None = None) -> bool:
        """Ends ``user``'s session named ``handle`` (from :meth:`user_sessions`) at once;
        False if ``user`` has no such session. Revoking the current request's session
        deletes it as :meth:`BeakerSession.delete
        <flask_beaker_session.beaker_session.BeakerSession.delete>` does."""
        state = _user_state(app)
        return _users.revoke(state, user, handle, state.now())

    def revoke_user_sessions(
        self,
        user: Any,
        *,
        except_current: bool = False,
        except_handle: str | None = None,
        app: Flask | None = None,
    ) -> int:
        """Ends every session of ``user`` at once ("log out everywhere"), but the current
        request's with ``except_current`` and the one named ``except_handle``; returns
        how many were ended."""
        state = _user_state(app)
        return _users.revoke_all(
            state,
            user,
            state.now(),
            except_current=except_current,
            except_handle=except_handle,
        )

    def session_handle(self, *, app: Flask | None = None) -> str | None:
        """The handle of the current request's session, if it is stored (else None)."""
        state = _user_state(app)
        session = flask_session._get_current_object()  # type: ignore[attr-defined]
        if not isinstance(session, BeakerSession) or session.is_new:
            return None
        return state.store.handle_of(session.id)

    def init_app(self, app: Any) -> None:
        """Validates ``app.config`` and installs the session interface on ``app``.

        :raises ConfigurationError: ``app`` is not a :class:`flask.Flask`, or a
            ``SESSION_*`` value is invalid (the message names the key).
        """
        if not app or not isinstance(app, Flask):
            raise ConfigurationError("Invalid Flask application instance")
        # ``app.secret_key``, as Flask reads it: a subclass may set it as a class attribute.
        cfg = _config.load(app.config, app.secret_key)
        if cfg.type == "file":
            _check_data_dir(cfg)
        if not cfg.secret_keys and cfg.type == "file":
            # (Redis without SECRET_KEY is a ConfigurationError; memory needs no key.)
            PROCESS.log(
                "no-secret-key",
                logging.WARNING,
                "no SECRET_KEY: session records are authenticated with a key generated in "
                "%s (mode 0600) on the first save, so records planted by anyone who cannot "
                "read that file are rejected; this user and root can still read it, and "
                "losing the file logs everybody out; set SECRET_KEY to choose the key",
                cfg.data_dir / "session.key",
            )
        if cfg.type == "memory":
            _memory_apps.add(app)
            if _declared_workers() > 1:
                logger.warning(
                    "SESSION_TYPE='memory' with %d worker processes: sessions are not "
                    "shared between workers; use 'file', 'redis' or 'postgresql'",
                    _declared_workers(),
                )
        app.session_interface = BeakerSessionInterface(cfg)
        if EXTENSION_KEY not in app.extensions:
            app.teardown_request(_teardown)
            app.register_error_handler(LockTimeoutError, lock_timeout_response)
            app.register_error_handler(StoreUnavailableError, unavailable_response)
            app.cli.add_command(cli_group)
        app.extensions[EXTENSION_KEY] = self


def _user_state(app: Flask | None) -> AppState:
    """The session state of ``app`` (default: the current app), which must keep the
    per-user index."""
    target = app if app is not None else current_app
    interface = target.session_interface
    if not isinstance(interface, BeakerSessionInterface):
        raise ConfigurationError("this app does not use flask-beaker-session (call init_app)")
    if interface.config.user_key is None:
        raise ConfigurationError(
            "SESSION_USER_KEY is not set: set it to the session key holding the user's id "
            "(e.g. '_user_id' with Flask-Login) to list and revoke a user's sessions"
        )
    return interface.state


_default = Session()


def init_app(app: Any) -> None:
    """Module-level form of :meth:`Session.init_app` (the original README's usage)."""
    _default.init_app(app)


# -- the original README's name clash ---------------------------------------------------

_CLASH = (
    "'session' here is the flask_beaker_session.session module (the extension: init_app, "
    "Session), not Flask's request session: 'from flask import session' and "
    "'from flask_beaker_session import session' in one module hide each other. Import the "
    "extension under another name ('from flask_beaker_session import session as "
    "beaker_session', or 'from flask_beaker_session import Session') and use "
    "flask.session for the data"
)


class _ExtensionModule(types.ModuleType):
    """This module's class: using the module as a mapping raises a ``TypeError`` that says
    which ``session`` is which, instead of "'module' object is not subscriptable"."""

    def __getitem__(self, key: Any) -> Any:
        raise TypeError(_CLASH)

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError(_CLASH)

    def __delitem__(self, key: Any) -> None:
        raise TypeError(_CLASH)

    def __contains__(self, key: Any) -> bool:
        raise TypeError(_CLASH)

    def get(self, key: Any, default: Any = None) -> Any:
        raise TypeError(_CLASH)

    def pop(self, key: Any, *default: Any) -> Any:
        raise TypeError(_CLASH)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        raise TypeError(_CLASH)

    def keys(self) -> Any:
        raise TypeError(_CLASH)

    def items(self) -> Any:
        raise TypeError(_CLASH)

    def values(self) -> Any:
        raise TypeError(_CLASH)

    def clear(self) -> None:
        raise TypeError(_CLASH)

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(_CLASH)


sys.modules[__name__].__class__ = _ExtensionModule
