"""The extension object, as in the original package::

    from flask_beaker_session import session
    session.init_app(app)                  # the original README's form (module-level)

    from flask_beaker_session.session import Session
    Session(app)                           # or: ext = Session(); ext.init_app(app)

``init_app`` reads and validates the configuration once, installs
:class:`~flask_beaker_session.session_interface.BeakerSessionInterface` on the app, and
registers the teardown that releases session locks and the 503 response for lock timeouts.
It opens no file and starts no thread, so it is safe before a pre-fork server forks.
"""

from __future__ import annotations

import logging
import stat
from typing import Any

from flask import Flask, request

from . import config as _config
from .cli import group as cli_group
from .errors import ConfigurationError, LockTimeoutError
from .session_interface import (
    BeakerSessionInterface,
    _lock_timeout_response,
    release_request_sessions,
)

__all__ = ["Session", "init_app"]

logger = logging.getLogger("flask_beaker_session")

#: Key under ``app.extensions``.
EXTENSION_KEY = "flask_beaker_session"


def _teardown(exc: BaseException | None) -> None:
    release_request_sessions(request.environ)


def _check_data_dir(cfg: _config.SessionConfig) -> None:
    try:
        mode = cfg.data_dir.stat().st_mode
    except FileNotFoundError:
        return
    if mode & stat.S_IWOTH:
        logger.warning(
            "SESSION_DATA_DIR %s is writable by other users: anyone who can write there "
            "can plant session records",
            cfg.data_dir,
        )


class Session:
    """Server-side sessions for one or several Flask applications."""

    def __init__(self, app: Any = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        """Validates ``app.config`` and installs the session interface on ``app``.

        :raises ConfigurationError: ``app`` is not a :class:`flask.Flask`, or a
            ``SESSION_*`` value is invalid (the message names the key).
        """
        if not app or not isinstance(app, Flask):
            raise ConfigurationError("Invalid Flask application instance")
        cfg = _config.load(app.config)
        _check_data_dir(cfg)
        if not cfg.secret_keys:
            logger.info(
                "no SECRET_KEY: session records are checksummed but not authenticated"
            )
        app.session_interface = BeakerSessionInterface(cfg)
        if EXTENSION_KEY not in app.extensions:
            app.teardown_request(_teardown)
            app.register_error_handler(LockTimeoutError, _lock_timeout_response)
            app.cli.add_command(cli_group)
        app.extensions[EXTENSION_KEY] = self


_default = Session()


def init_app(app: Any) -> None:
    """Module-level form of :meth:`Session.init_app` (the original README's usage)."""
    _default.init_app(app)
