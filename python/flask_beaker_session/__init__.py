"""Server-side sessions for Flask with a Rust core.

A drop-in replacement for Flask-Beaker-Session::

    from flask_beaker_session import session
    session.init_app(app)

Importing this package does not import Flask; ``flask_beaker_session.session`` does.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time ``__getattr__`` imports it lazily
    from .session import Session

try:
    __version__: str = version("flask-beaker-session")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["Session", "__version__"]


def __getattr__(name: str) -> Any:
    # ``Session`` is re-exported lazily so that ``import flask_beaker_session`` stays
    # Flask-free; the submodule ``session`` is imported by the normal machinery.
    if name == "Session":
        from .session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
