"""The native store of an application, and the state its sessions share.

:func:`build_store` turns the validated :class:`~flask_beaker_session.config.SessionConfig`
into one :class:`_core.StoreConfig` and the :class:`_core.Store` built from it. No file is
opened and no connection made: that happens on first use, so the store can be built before
a pre-fork server forks.

:class:`AppState` is what every session of one application shares: the configuration, the
store, the :class:`~flask_beaker_session._log.Once` that keeps recurring problems to one
log line, and the clock. Time is injected: everything in the package that needs "now" asks
:meth:`AppState.now`, which calls the current :attr:`AppState.clock` — replace it (through
``app.session_interface.clock``) and the sessions, the save and the sweeper thread of that
app all follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _core
from ._log import Once
from .config import SessionConfig
from .errors import ConfigurationError
from .metrics import process_metrics

if TYPE_CHECKING:
    from .stored import StoredSession

__all__ = ["AppState", "Clock", "build_store", "system_clock"]

#: A zero-argument callable returning epoch seconds.
Clock = Callable[[], float]


def system_clock() -> float:
    """The default clock: ``time.time()``, looked up at each call.

    Looking the function up at call time (rather than storing ``time.time``) is what lets
    freezegun and ``monkeypatch.setattr(time, "time", ...)`` reach it.
    """
    return time.time()


#: ``SESSION_DATABASE_LOCK`` (validated by ``config.load``) as the native enum.
_PG_LOCKS = {"row": _core.PostgresLock.Row, "advisory": _core.PostgresLock.Advisory}


def _backend(
    config: SessionConfig,
) -> _core.FileBackend | _core.MemoryBackend | _core.RedisBackend | _core.PostgresBackend:
    if config.type == "memory":
        return _core.MemoryBackend()
    if config.type == "postgresql":
        assert config.database_url is not None  # config.load requires it
        return _core.PostgresBackend(
            url=config.database_url,
            schema=config.database_schema,
            table=config.database_table,
            pool_size=config.database_pool_size,
            connect_timeout=config.database_connect_timeout,
            timeout=config.database_timeout,
            lock_ttl=config.database_lock_ttl,
            create=config.database_create,
            tls_ca_certs=config.database_tls_ca_certs,
            lock=_PG_LOCKS[config.database_lock],
        )
    if config.type == "redis":
        return _core.RedisBackend(
            url=config.redis_url,
            prefix=config.redis_prefix,
            connect_timeout=config.redis_connect_timeout,
            io_timeout=config.redis_timeout,
            lock_ttl=config.redis_lock_ttl,
            tls_ca_certs=config.redis_tls_ca_certs,
            tls_client=config.redis_tls_client,
            sentinel_password=config.redis_sentinel_password,
            wait_replicas=config.redis_wait_replicas,
            wait_timeout=config.redis_wait_timeout,
        )
    return _core.FileBackend(
        data_dir=config.data_dir, read_legacy=config.read_legacy, max_size=config.max_size
    )


def build_store(config: SessionConfig) -> _core.Store:
    """The native store for a configuration (no I/O, no connection).

    :raises ConfigurationError: the core refused the Redis URL or the TLS material (the
        message names the keys to look at; ``load`` already checked the files hold PEM
        blocks of the right kind, so what remains is what only the core can parse).
    """
    try:
        return _core.Store(
            _core.StoreConfig(
                backend=_backend(config),
                # Memory sessions never leave the process: nothing to authenticate.
                keys=() if config.type == "memory" else config.secret_keys,
                encrypt=config.encrypt,
                idle_timeout=config.timeout,
                absolute_timeout=config.absolute_timeout,
                lock_timeout=config.lock_timeout,
                # Without locking the lock is held only to load and to save: no crowd.
                max_waiters=config.max_waiters if config.locking else None,
            )
        )
    except ConfigurationError as exc:
        if config.type == "postgresql":
            keys = "SESSION_DATABASE_URL"
            if config.database_tls_ca_certs:
                keys += " or SESSION_DATABASE_TLS_CA_CERTS"
            raise ConfigurationError(f"{keys} is invalid: {exc}") from None
        if config.type != "redis":
            raise
        keys = "SESSION_REDIS_URL"
        if config.redis_tls_ca_certs or config.redis_tls_client:
            keys += " or SESSION_REDIS_TLS_*"
        raise ConfigurationError(f"{keys} is invalid: {exc}") from None


class AppState:
    """What the sessions of one application share (built once, at ``init_app``)."""

    def __init__(self, config: SessionConfig, clock: Clock = system_clock) -> None:
        #: The validated settings.
        self.config = config
        #: The native store.
        self.store = build_store(config)
        #: Recurring problems of this app's sessions are logged once each (then at DEBUG).
        self.once = Once()
        #: Where "now" comes from; read at each call of :meth:`now`, so replacing it takes
        #: effect for the next request and the next sweep.
        self.clock: Clock = clock
        #: The process's metrics with ``SESSION_METRICS`` on, else None (nothing counted).
        self.metrics = process_metrics() if config.metrics else None
        # (Imported here: both modules import this one.)
        from .stored import StoredSession
        from .users import IndexedStoredSession

        #: The class of each request's stored side: with ``SESSION_USER_KEY``, the one that
        #: keeps the per-user index (:mod:`flask_beaker_session.users`).
        self.stored_class: type[StoredSession] = (
            IndexedStoredSession if config.user_key is not None else StoredSession
        )
        #: ``config.locking`` and ``config.user_key``, read by every request that uses its
        #: session (one attribute lookup instead of two); the user key is "" when it is
        #: not set (only the indexing stored session reads it, and only when it is).
        self.locking = config.locking
        self.user_key: str = config.user_key or ""

    def now(self) -> float:
        """The current time (epoch seconds) by this application's clock."""
        return self.clock()
