"""What the extension integration tests (``test_ext_*.py``) share: the
fixture ``backend``, which installs a session on an app built by the test, parametrized over

* ``cookie``: Flask's own cookie session (the baseline: each test asserts what the
  extension does with it, and the same assertions must hold for this package);
* ``file-locking``, ``file-nonlocking``, ``redis-locking``, ``redis-nonlocking``: this
  package on the file and Redis backends, with ``SESSION_LOCKING`` True and False.

Import the fixture into a test module (``from ext_support import backend_fixture``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_beaker_session import session as fbs

BACKENDS = ["cookie", "file-locking", "file-nonlocking", "redis-locking", "redis-nonlocking"]


class SessionBackend:
    """Sets a session up on an app (``install(app)``) the way the current parameter says."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, data_dir: Path, prefix: str):
        self.kind = kind
        self._request = request
        self._data_dir = data_dir
        self._prefix = prefix

    @property
    def ours(self) -> bool:
        """Whether this package (not Flask's cookie session) serves the sessions."""
        return self.kind != "cookie"

    def xfail_ours(self, reason: str) -> None:
        """Marks the running test strict-xfail on this package's backends (an open item)."""
        if self.ours:
            self._request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    def install(self, app: Flask) -> Flask:
        """Configures the session store on ``app`` (after its own config) and returns it."""
        if not self.ours:
            return app
        backend, mode = self.kind.split("-")
        app.config["SESSION_LOCKING"] = mode == "locking"
        if backend == "file":
            app.config.update(SESSION_TYPE="file", SESSION_DATA_DIR=str(self._data_dir))
        else:
            server = self._request.getfixturevalue("redis_server")
            app.config.update(
                SESSION_TYPE="redis",
                SESSION_REDIS_URL=server.url,
                SESSION_REDIS_PREFIX=self._prefix,
            )
        fbs.init_app(app)
        return app

    @staticmethod
    def cookie_name(app: Flask) -> str:
        return app.session_interface.get_cookie_name(app)

    def session_cookie(self, client: Any, app: Flask) -> str | None:
        """The value of the session cookie the client holds, or None."""
        cookie = client.get_cookie(self.cookie_name(app))
        return None if cookie is None else cookie.value

    def sets_session_cookie(self, response: Any, app: Flask) -> bool:
        """Whether the response sets (or deletes) the session cookie."""
        name = self.cookie_name(app) + "="
        return any(h.startswith(name) for h in response.headers.getlist("Set-Cookie"))

    def drop_session_cookie(self, client: Any, app: Flask) -> None:
        """Forgets the session cookie, as a browser does at restart."""
        client.delete_cookie(self.cookie_name(app))


@pytest.fixture(params=BACKENDS, name="backend")
def backend_fixture(request: pytest.FixtureRequest, data_dir: Path, prefix: str) -> SessionBackend:
    return SessionBackend(request.param, request, data_dir, prefix)
