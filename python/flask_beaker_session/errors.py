"""Exceptions raised by flask-beaker-session.

:class:`ConfigurationError` is the original package's only exception and keeps its name and
base class. The others are new: the Rust core raises :class:`LockTimeoutError` (a request
waited longer than ``SESSION_LOCK_TIMEOUT`` for another request of the same session, or too
many already wait) and :class:`StoreUnavailableError` (it imports these classes, so each has
exactly one owner); :class:`SessionTooLargeError` refuses a session over
``SESSION_MAX_SIZE``.
"""

from __future__ import annotations


class ConfigurationError(Exception):
    """A bad application object or configuration value, raised by ``init_app``.

    The message names the offending config key and the accepted values.
    """


class LockTimeoutError(Exception):
    """Another request of the same session held it for longer than ``SESSION_LOCK_TIMEOUT``.

    Inside a request the extension turns it into a ``503 Service Unavailable`` response with
    ``Retry-After: 1``; register your own error handler for this class to change that.
    """


class SessionTooLargeError(ValueError):
    """A session's pickled data is larger than ``SESSION_MAX_SIZE``.

    Raised when the session is saved, at the end of the request: nothing is written, the
    stored session keeps its previous version, and the request fails (a 500 unless the app
    handles it: Flask passes it to the ``500`` / ``InternalServerError`` handler as
    ``original_exception``). :attr:`size` and :attr:`limit` are in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"session is too large to store: its data pickles to {size} bytes, more than "
            f"SESSION_MAX_SIZE ({limit} bytes); the stored session is unchanged"
        )
        #: Pickled size of the session that was refused.
        self.size = size
        #: ``SESSION_MAX_SIZE``.
        self.limit = limit


class StoreUnavailableError(Exception):
    """The session store (Redis) could not be reached or did not answer in time.

    Inside a request the extension turns it into a ``503 Service Unavailable`` response
    with ``Retry-After: 1`` and no internal details; register your own error handler for
    this class to change that. Requests recover by themselves when the store is back.
    """
