"""The Flask side: :class:`BeakerSessionInterface`, Flask's hook into the session store.

Life of a session in one request:

1. ``open_session`` returns a :class:`~flask_beaker_session.beaker_session.BeakerSession`
   without any I/O (SPEC §5: a view that never touches the session costs no syscall, even
   when the request carries a cookie). Its first real use loads it
   (:class:`~flask_beaker_session.stored.StoredSession`).
2. ``save_session`` asks the session to persist itself, which gives an
   :class:`~flask_beaker_session.stored.Outcome`, and makes the one cookie decision from it
   through Flask's own hooks (:meth:`~BeakerSessionInterface.get_cookie_name`,
   :meth:`~BeakerSessionInterface.should_set_cookie`,
   :meth:`~BeakerSessionInterface.get_expiration_time` and the ``get_cookie_*`` attribute
   hooks), so an application can override them as with Flask's own interface. Then the lock
   is released. Teardown releases it too (:func:`release_request_sessions`), for requests
   that never get to ``save_session`` (an exception with ``PROPAGATE_EXCEPTIONS``).

Responses with a 5xx status do not save the request's changes (as Django): a request that
failed half-way must not commit half its work. Explicit ``delete()`` / ``invalidate()`` take
effect at once, whatever the response.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask.sessions import SessionInterface, SessionMixin

from . import _core
from ._fork import FORKS
from .beaker_session import BeakerSession
from .config import COOKIE_NAME, PERSISTENT_COOKIE_SECONDS, SessionConfig
from .errors import LockTimeoutError, StoreUnavailableError
from .responses import retry_later
from .store import AppState, Clock, system_clock
from .stored import Outcome
from .sweeper import AutoSweeper
from .time_keys_session import TimeKeysSession
from .users import index_grace

if TYPE_CHECKING:
    from flask import Flask, Request, Response

__all__ = ["BeakerSession", "BeakerSessionInterface", "release_request_sessions", "system_clock"]

#: Key under which the request environ lists the sessions opened for it (for teardown).
_ENVIRON_KEY = "flask_beaker_session.sessions"
#: Outcomes after which a refreshing (persistent) cookie is re-sent.
_WRITTEN = (Outcome.SAVED, Outcome.TOUCHED)
_UNCHANGED, _SAVED, _TOUCHED = Outcome.UNCHANGED, Outcome.SAVED, Outcome.TOUCHED


class BeakerSessionInterface(SessionInterface):
    """Stores sessions server-side through the Rust core; the cookie holds only the id.

    Time is injected: replace :attr:`clock` in tests. Every "now" of this application's
    sessions — loading, expiry, saving, cookie expiry dates and its sweeper thread — comes
    from it, read at each use, so ``app.session_interface.clock = fake`` takes effect from
    the next request on. The default, :func:`system_clock`, calls ``time.time()`` at each
    use, so freezegun works too. (The core applies the rules; Python only tells it the time.)
    """

    #: Sessions are ``BeakerSession`` objects (``TimeKeysSession``, its subclass, with
    #: ``SESSION_TIME_KEYS = True``).
    session_class: type[BeakerSession] = BeakerSession

    def __init__(self, config: SessionConfig, clock: Clock = system_clock) -> None:
        #: The validated settings of the application.
        self.config = config
        if config.time_keys:
            self.session_class = TimeKeysSession
        #: What this application's sessions share: the store, the clock, the log.
        self.state = AppState(config, clock)
        #: Whether ``should_set_cookie`` is this class's own (not a subclass's): then an
        #: unchanged, non-permanent session is answered without calling it.
        self._own_should_set_cookie = (
            type(self).should_set_cookie is BeakerSessionInterface.should_set_cookie
        )
        #: Whether a non-permanent session's cookie is never refreshed by a save
        #: (``SESSION_EXPIRES`` is not False: only the 400-day cookie is renewed).
        self._fixed_cookie = config.expires is not False
        #: The automatic sweeper (``SESSION_SWEEP_INTERVAL``), or None.
        self.sweeper = (
            AutoSweeper(
                self.state.store,
                config.sweep_interval,
                self.state.now,
                self.state.metrics,
                None if config.user_key is None else index_grace(config.lock_timeout),
            )
            if config.sweep_interval
            else None
        )

    @property
    def clock(self) -> Clock:
        """A zero-argument callable returning epoch seconds (float): this app's "now"."""
        return self.state.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.state.clock = clock

    @property
    def store(self) -> _core.Store:
        """The native store (for tools and tests)."""
        return self.state.store

    # -- request start -----------------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> BeakerSession:
        # No I/O here: the session loads itself on first use. The sweeper's thread is
        # started at the first request of each process (compared without a call).
        sweeper = self.sweeper
        if sweeper is not None and sweeper.thread.started_in != FORKS.generation:
            sweeper.ensure_started()
        environ = request.environ
        value = _cookie_value(environ.get("HTTP_COOKIE"), self.get_cookie_name(app))
        session = self.session_class(self.state, value)
        environ.setdefault(_ENVIRON_KEY, []).append(session)
        return session

    def is_null_session(self, obj: object) -> bool:
        return not isinstance(obj, BeakerSession)

    # -- Flask's cookie hooks ----------------------------------------------------------

    def get_cookie_name(self, app: Flask) -> str:
        """``beaker.session.id``, the original's name, so that its users stay logged in
        (Flask's ``SESSION_COOKIE_NAME`` does not rename it)."""
        return COOKIE_NAME

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        """When the cookie expires: ``PERMANENT_SESSION_LIFETIME`` from now for a permanent
        session, else by ``SESSION_EXPIRES`` (``True``: with the browser session;
        ``False``: 400 days from now; N: N seconds after the session's creation)."""
        if session.permanent:
            return datetime.fromtimestamp(self.clock(), timezone.utc) + (
                app.permanent_session_lifetime
            )
        expires = self.config.expires
        if expires is True:
            return None
        if expires is False:
            return datetime.fromtimestamp(self.clock() + PERSISTENT_COOKIE_SECONDS, timezone.utc)
        created = session.created if isinstance(session, BeakerSession) else self.clock()
        return datetime.fromtimestamp(created + expires, timezone.utc)

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        """Whether to send the cookie, from what saving did: always for a session just
        created; with ``SESSION_REFRESH_EACH_REQUEST`` on (Flask's default), for a stored
        session that is ``permanent`` on every request that used it (so that its expiry
        slides, as with Flask's own sessions; nothing is written for that), and for one
        saved or touched when ``SESSION_EXPIRES = False`` (a 400-day cookie, renewed
        when the record is)."""
        if not isinstance(session, BeakerSession):
            return False
        outcome = session.outcome
        if outcome is Outcome.CREATED:
            return True
        # (dict.get: ``session.permanent`` without two Python calls per request)
        permanent = bool(dict.get(session, "_permanent", False))
        if outcome is Outcome.UNCHANGED:
            return permanent and bool(app.config.get("SESSION_REFRESH_EACH_REQUEST", True))
        if outcome not in _WRITTEN:
            return False
        if permanent != session.was_permanent:
            # Made permanent or not any more: the cookie's kind of expiry changes (as
            # Flask re-sends a modified session's cookie).
            return True
        return (permanent or self.config.expires is False) and bool(
            app.config.get("SESSION_REFRESH_EACH_REQUEST", True)
        )

    def _cookie_attributes(self, app: Flask) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app) or "Lax",
        }
        partitioned = getattr(self, "get_cookie_partitioned", None)  # Flask >= 3.1
        if partitioned is not None and partitioned(app):
            attributes["partitioned"] = True
        return attributes

    # -- request end -------------------------------------------------------------------

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, BeakerSession):
            return
        try:
            if session.accessed or session.loaded:
                _vary_cookie(response)
            if not session.loaded or response.status_code >= 500:
                return
            try:
                outcome = session.persist(self.state.clock())
            except (StoreUnavailableError, LockTimeoutError) as exc:
                # Flask's error handlers do not run for errors raised here.
                retry_later(response, exc)
                return
            metrics = self.state.metrics
            if metrics is not None:
                metrics.saved(outcome, session.written_size())
            # The most common ends of a request, answered as should_set_cookie would
            # without calling it: a non-permanent session left unchanged, or rewritten
            # with a cookie that does not refresh (it expires with the browser or at a
            # fixed time after creation), needs no cookie.
            if self._own_should_set_cookie and not dict.get(session, "_permanent", False):
                if outcome is _UNCHANGED:
                    return
                if (
                    (outcome is _SAVED or outcome is _TOUCHED)
                    and self._fixed_cookie
                    and not session.was_permanent
                ):
                    return
            # The one place a session cookie is set or expired.
            if outcome is Outcome.DELETED:
                response.delete_cookie(self.get_cookie_name(app), **self._cookie_attributes(app))
            elif self.should_set_cookie(app, session):
                response.set_cookie(
                    self.get_cookie_name(app),
                    session.id,
                    expires=self.get_expiration_time(app, session),
                    **self._cookie_attributes(app),
                )
        finally:
            if not session.finished:  # (a successful persist finished it)
                session.finish()


def _cookie_value(header: str | None, name: str) -> str | None:
    """The first ``name`` cookie's value in a Cookie header (as Werkzeug picks it).

    Parsing the whole header into ``request.cookies`` costs more than the rest of a
    session's request put together; we need one cookie, whose only acceptable values are
    32 lowercase hex characters (anything else is rejected by the core before any I/O, so
    unusual quoting or encoding can only make a value invalid, never select a session).
    """
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


def _vary_cookie(response: Response) -> None:
    """Adds ``Cookie`` to the Vary header (cheaper than building ``response.vary``)."""
    headers = response.headers
    # The first Vary header, found by iterating (headers.get("Vary") builds and raises an
    # exception when there is none, the usual case: three times the work).
    vary = None
    for key, value in headers:
        if key.lower() == "vary":
            vary = value
            break
    if vary is None:
        # (add, not set: there is no Vary header to replace, and set scans every header)
        headers.add("Vary", "Cookie")
    elif not vary:
        headers["Vary"] = "Cookie"
    elif "cookie" not in (v.strip().lower() for v in vary.split(",")):
        headers["Vary"] = f"{vary}, Cookie"


def release_request_sessions(environ: dict[str, Any]) -> None:
    """Releases every session lock taken for a request (called at teardown)."""
    sessions: Iterable[BeakerSession] = environ.pop(_ENVIRON_KEY, ())
    for session in sessions:
        if not session.finished:  # save_session released it already
            session.release()
