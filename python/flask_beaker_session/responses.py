"""The ``503 Service Unavailable`` responses for a busy session or an unreachable store.

They are used twice: as Flask error handlers (``init_app`` registers them, for the errors a
view raises when it first uses the session), and by ``save_session`` through
:func:`retry_later` (Flask's error handlers do not run for errors raised while saving, so
the response is turned into the same 503 they would give). Internals (addresses, errors) go
to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import current_app, has_app_context

from ._log import LOCK_TIMEOUT, OUTAGES, PROCESS, Once
from .errors import LockTimeoutError, StoreUnavailableError
from .store import AppState

if TYPE_CHECKING:
    from flask import Response

__all__ = ["lock_timeout_response", "retry_later", "unavailable_response"]

#: A plain-text 503 the client may retry in a second.
Body = tuple[str, int, dict[str, str]]

_RETRY = {"Retry-After": "1", "Content-Type": "text/plain; charset=utf-8"}


def _state() -> AppState | None:
    """The current app's session state (None outside an app, or for another interface)."""
    if has_app_context():
        state = getattr(current_app.session_interface, "state", None)
        if isinstance(state, AppState):
            return state
    return None


def lock_timeout_response(error: LockTimeoutError) -> Body:
    """Another request of the same session held it too long (logged once per app)."""
    state = _state()
    once: Once = PROCESS if state is None else state.once
    once.log(LOCK_TIMEOUT, logging.WARNING, "session lock timeout: %s", error)
    if state is not None and state.metrics is not None:
        state.metrics.count("lock_timeouts")
    return ("The session is busy with another request; please retry.", 503, _RETRY)


def unavailable_response(error: StoreUnavailableError) -> Body:
    """The store (Redis) cannot be reached: logged as an ERROR at most every 10 s per
    process, with the number of failures left out meanwhile (an outage fails every request:
    one line each would flood the log)."""
    OUTAGES.log("unavailable", logging.ERROR, "session store unavailable: %s", error)
    state = _state()
    if state is not None and state.metrics is not None:
        state.metrics.count("store_unavailable")
    return ("The session store is unavailable; please retry.", 503, _RETRY)


def retry_later(response: Response, error: LockTimeoutError | StoreUnavailableError) -> None:
    """Turns ``response`` into the 503 the error handlers give, without any cookie."""
    if isinstance(error, LockTimeoutError):
        body, status, headers = lock_timeout_response(error)
    else:
        body, status, headers = unavailable_response(error)
    response.set_data(body)
    response.status_code = status
    response.headers.update(headers)
    response.headers.pop("Set-Cookie", None)
