"""Configuration keys, their defaults, and their validation.

The module constants are the defaults (the original package's public ``config`` module);
:func:`load` reads a Flask config once, at ``init_app``, and returns a frozen
:class:`SessionConfig`, raising :class:`~flask_beaker_session.errors.ConfigurationError`
naming the key and the accepted values for anything it cannot use.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ConfigurationError

#: Storage backend: ``'file'`` (one host), ``'redis'`` (several hosts) or ``'memory'``
#: (one process: tests and development); ``'postgresql'`` (several hosts, a table of a
#: database the application already runs).
SESSION_TYPE = "file"
#: ``True``: browser-session cookie; ``False``: persistent cookie (400 days, the longest
#: lifetime browsers honour, refreshed whenever the session is written or touched);
#: an int N: the cookie expires N seconds after the session's creation.
SESSION_EXPIRES = True
#: Server-side sliding idle timeout in seconds; ``None`` disables it.
SESSION_TIMEOUT = 1800
#: Where the file backend keeps sessions; resolved against the working directory at
#: ``init_app``, and created there (mode 0700) if missing: a path that cannot be used (under
#: a regular file, behind a directory this process cannot enter, not creatable) is a
#: :class:`~flask_beaker_session.errors.ConfigurationError` at ``init_app``.
SESSION_DATA_DIR = "./.sessions"
#: Accepted for compatibility with the original package; changes nothing.
SESSION_TESTING = False
#: Seconds a request waits for another request of the same session before giving up with
#: :class:`~flask_beaker_session.errors.LockTimeoutError` (a 503 response).
SESSION_LOCK_TIMEOUT = 10.0
#: How many requests may wait for one session while another request holds it (per worker
#: process; with the file backend also how many worker processes may wait for it). A request
#: beyond that gets a 503 with ``Retry-After`` at once instead of tying up a worker, so one
#: client firing many requests at its own session cannot hold every worker. ``None``: no
#: bound (every request waits up to ``SESSION_LOCK_TIMEOUT``).
SESSION_MAX_WAITERS: int | None = 2
#: ``True``: a request holds its session exclusively from first use to the response, so
#: concurrent requests of one session never lose an update. ``False``: no lock across the
#: request; at save, the keys this request changed are merged into the stored data (keys
#: changed by concurrent requests survive; the same key: last writer wins).
SESSION_LOCKING = True
#: Whether to read session files written by the original package (Beaker) and migrate them
#: to our format on first use. Turn off once ``container_file/`` is gone.
SESSION_READ_LEGACY = True
#: ``False``: the session mapping holds only the user's data (an untouched session is
#: empty and falsy), while ``session['_creation_time']``, ``.get()`` and ``in`` still answer
#: for the two time keys. ``True``: the original's mapping, with ``_creation_time`` and
#: ``_accessed_time`` listed and counted among the keys.
SESSION_TIME_KEYS = False

#: ``True``: whenever there is a secret (``SECRET_KEY``, or the key the file backend
#: generates in the data dir without one) every record's data is encrypted at rest
#: (XChaCha20-Poly1305 under a key derived from the secret; docs/security.md). ``False``:
#: records are authenticated only (tagged, not encrypted), as in 0.3: whoever can read the
#: data dir, a Redis dump or the table reads every session. Either way records written
#: the other way still load, and are rewritten this way on their next save.
SESSION_ENCRYPT = True

#: Count what the session layer does (opens, saves, lock waits, timeouts, outages, sweeps)
#: in :mod:`flask_beaker_session.metrics`, exported to Prometheus when ``prometheus_client``
#: is installed. Off: nothing is counted and the request path does not look at metrics.
SESSION_METRICS = False

#: The session key holding the logged-in user's id (Flask-Login's is ``"_user_id"``):
#: set, the store keeps a per-user index of sessions, so that an application can list a
#: user's sessions and revoke them (:doc:`users`). ``None`` (default): no index, and
#: nothing on the request path looks for one.
SESSION_USER_KEY: str | None = None
#: With ``SESSION_USER_KEY``: also record the client's user agent and IP address in the
#: index when a user logs in, shown by :meth:`Session.user_sessions` (personal data: see
#: :doc:`users` before turning it on).
SESSION_USER_METADATA = False

#: Largest session accepted, in bytes of its pickled data (4 MiB). Saving a bigger one
#: raises :class:`~flask_beaker_session.errors.SessionTooLargeError` naming both sizes (the
#: request fails, the stored session is unchanged); a stored record announcing more is read
#: as no session without being loaded (so a planted huge file costs at most this much).
SESSION_MAX_SIZE = 4 << 20
#: The largest value ``SESSION_MAX_SIZE`` accepts (the record format's 32-bit length).
_MAX_SIZE_LIMIT = (1 << 32) - 1

#: Absolute lifetime in seconds from the session's creation, whatever its activity (OWASP);
#: ``None`` disables it. Applies alongside the sliding ``SESSION_TIMEOUT``.
SESSION_ABSOLUTE_TIMEOUT = None
#: Seconds between automatic sweeps of expired sessions (default: 10 minutes), run by a
#: background thread of each worker process (never on a request's path) and at most once
#: per interval across all the processes sharing the data dir (``sweep.stamp``). ``None``,
#: ``0`` or ``False`` turn it off (sweep with ``flask beaker-session sweep`` from cron).
#: Memory stores: each process sweeps its own sessions. Redis expires keys itself: no
#: thread, whatever the value.
SESSION_SWEEP_INTERVAL: float | None = 600.0

#: Redis server for ``SESSION_TYPE = 'redis'``: ``redis://[:password@]host:port/db``,
#: ``rediss://`` (TLS), or ``unix:///path/to/socket?db=N``.
SESSION_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Prefix of every Redis key (lets several apps share one Redis database).
SESSION_REDIS_PREFIX = "fbs:"
#: Seconds allowed to connect to Redis, and for each command's round trip.
SESSION_REDIS_CONNECT_TIMEOUT = 2.0
SESSION_REDIS_TIMEOUT = 2.0
#: Seconds a Redis session lock survives a worker that died holding it. A request that
#: holds its session longer than this loses the lock (its save is refused).
SESSION_REDIS_LOCK_TTL = 60.0
#: For ``rediss://``: a PEM file of the CA certificates to trust instead of the public
#: ones (a private CA, a self-signed server); ``None`` trusts the public CAs.
SESSION_REDIS_TLS_CA_CERTS = None
#: For ``rediss://`` servers that verify their clients (``tls-auth-clients yes``, Redis's
#: default): the client certificate chain and its private key, PEM files, both or neither.
SESSION_REDIS_TLS_CERTFILE = None
SESSION_REDIS_TLS_KEYFILE = None
#: Redis behind Sentinel or as a Cluster is a ``SESSION_REDIS_URL`` too:
#: ``redis+sentinel://[:password@]host1:26379,host2:26379/<service>/<db>`` (the password is
#: the data nodes') and ``redis+cluster://[:password@]host1:7000,host2:7001``
#: (``rediss+sentinel://``, ``rediss+cluster://`` for TLS). ``docs/redis-ha.md``.
#: The Sentinels' own password (``requirepass`` in ``sentinel.conf``), if they have one.
SESSION_REDIS_SENTINEL_PASSWORD = None
#: Replicas every session write must reach (Redis ``WAIT``) before the response; ``0``: do
#: not wait. With ``1`` or more, an acknowledged save survives the primary's death; a save
#: that reaches fewer within ``SESSION_REDIS_WAIT_TIMEOUT`` seconds answers 503.
SESSION_REDIS_WAIT_REPLICAS = 0
SESSION_REDIS_WAIT_TIMEOUT = 1.0

#: PostgreSQL database for ``SESSION_TYPE = 'postgresql'`` (required then):
#: ``postgresql://user:password@host:5432/dbname``, with ``?sslmode=disable``, ``prefer``
#: (the default: TLS when the server offers it) or ``require``. TLS always verifies the
#: server's certificate (as libpq's ``verify-full``), against the public CAs or
#: ``SESSION_DATABASE_TLS_CA_CERTS``.
SESSION_DATABASE_URL: str | None = None
#: Schema of the sessions table (``None``: the role's ``search_path``); it must exist.
SESSION_DATABASE_SCHEMA: str | None = None
#: Name of the sessions table (letters, digits and ``_``, at most 52 characters).
SESSION_DATABASE_TABLE = "beaker_sessions"
#: Most connections each worker process opens. With the lock row a request uses one only
#: for the duration of each statement, never while it waits for a session lock; with the
#: advisory lock a request that holds its session keeps one (where its lock lives), so at
#: most this minus one requests of a process hold a session at once (2 at least then).
SESSION_DATABASE_POOL_SIZE = 8
#: Seconds allowed to connect (and to wait for a free pooled connection), and for each
#: statement (sent as ``statement_timeout``, and enforced by the client as well).
SESSION_DATABASE_CONNECT_TIMEOUT = 2.0
SESSION_DATABASE_TIMEOUT = 2.0
#: Seconds a PostgreSQL session lock survives a holder that died or hung: the lock row's
#: expiry; with the advisory lock, the server's ``idle_session_timeout`` (a killed
#: worker's advisory lock goes at once, with its connection).
SESSION_DATABASE_LOCK_TTL = 60.0
#: How a PostgreSQL session is locked: ``'row'`` (an owner token and expiry in the
#: session's row: any PostgreSQL version, works through PgBouncer's transaction pooling)
#: or ``'advisory'`` (a session-level advisory lock: a read-only request writes nothing;
#: PostgreSQL 14 or later, a direct or session-pooled connection). Every worker sharing
#: the table must use the same one and switch together (docs/postgresql.md, *Locking
#: design*, *Switching between modes*).
SESSION_DATABASE_LOCK: Literal["row", "advisory"] = "row"
#: Whether the first request creates the sessions table when it is missing (checked once
#: per process: when the table exists nothing else is sent, so a role without DDL rights is
#: fine). ``False``: create it with ``flask beaker-session init-db``; until then requests
#: get 503s saying so.
SESSION_DATABASE_CREATE = True
#: PEM file of the CA certificates to trust for TLS instead of the public ones.
SESSION_DATABASE_TLS_CA_CERTS = None

#: The cookie name, kept from the original so users stay logged in. Flask's default
#: ``SESSION_COOKIE_NAME`` (``'session'``) does not rename it.
COOKIE_NAME = "beaker.session.id"

#: Lifetime of a persistent cookie (``SESSION_EXPIRES = False``): 400 days, the cap of
#: RFC 6265bis and current browsers; it is renewed whenever the session is written.
PERSISTENT_COOKIE_SECONDS = 400 * 24 * 3600

#: Largest values accepted for durations (seconds): beyond them the arithmetic of deadlines,
#: cookie dates or Redis expiry times would overflow; nothing useful needs more.
_DAY = 86_400.0
_CENTURY = 100 * 365 * _DAY
#: Largest ``SESSION_MAX_WAITERS``.
_MAX_WAITERS_LIMIT = 1000

_TYPES = ("file", "memory", "redis", "postgresql")
_PG_SCHEMES = ("postgresql://", "postgres://")
_PG_SSLMODES = ("disable", "prefer", "require")
_PG_TABLE_MAX = 52
_PG_LOCKS: tuple[Literal["row", "advisory"], ...] = ("row", "advisory")
_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://", "unix://")
_REDIS_HA_SCHEMES = (
    "redis+sentinel://",
    "rediss+sentinel://",
    "redis+cluster://",
    "rediss+cluster://",
)
#: Largest ``SESSION_REDIS_WAIT_REPLICAS``.
_MAX_WAIT_REPLICAS = 100
_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}

Expires = Union[bool, int]


@dataclass(frozen=True)
class SessionConfig:
    """The validated settings of one application."""

    type: str
    expires: Expires
    timeout: float | None
    data_dir: Path
    lock_timeout: float
    read_legacy: bool
    secret_keys: tuple[bytes, ...]
    max_waiters: int | None = SESSION_MAX_WAITERS
    absolute_timeout: float | None = None
    locking: bool = True
    time_keys: bool = SESSION_TIME_KEYS
    metrics: bool = SESSION_METRICS
    encrypt: bool = SESSION_ENCRYPT
    sweep_interval: float | None = SESSION_SWEEP_INTERVAL
    max_size: int = SESSION_MAX_SIZE
    redis_url: str = SESSION_REDIS_URL
    redis_prefix: str = SESSION_REDIS_PREFIX
    redis_connect_timeout: float = SESSION_REDIS_CONNECT_TIMEOUT
    redis_timeout: float = SESSION_REDIS_TIMEOUT
    redis_lock_ttl: float = SESSION_REDIS_LOCK_TTL
    #: PEM bytes read at ``init_app`` (so a missing file fails there, not on a request);
    #: kept out of ``repr`` because the key is a secret.
    redis_tls_ca_certs: bytes | None = field(default=None, repr=False)
    #: (certificate chain, private key), both or neither.
    redis_tls_client: tuple[bytes, bytes] | None = field(default=None, repr=False)
    #: The PostgreSQL URL; kept out of ``repr`` because it may hold a password.
    database_url: str | None = field(default=None, repr=False)
    database_schema: str | None = SESSION_DATABASE_SCHEMA
    database_table: str = SESSION_DATABASE_TABLE
    database_pool_size: int = SESSION_DATABASE_POOL_SIZE
    database_connect_timeout: float = SESSION_DATABASE_CONNECT_TIMEOUT
    database_timeout: float = SESSION_DATABASE_TIMEOUT
    database_lock_ttl: float = SESSION_DATABASE_LOCK_TTL
    database_lock: Literal["row", "advisory"] = SESSION_DATABASE_LOCK
    database_create: bool = SESSION_DATABASE_CREATE
    database_tls_ca_certs: bytes | None = field(default=None, repr=False)
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_wait_replicas: int = SESSION_REDIS_WAIT_REPLICAS
    redis_wait_timeout: float = SESSION_REDIS_WAIT_TIMEOUT
    user_key: str | None = SESSION_USER_KEY
    user_metadata: bool = SESSION_USER_METADATA


def _fail(key: str, value: Any, accepted: str) -> ConfigurationError:
    return ConfigurationError(f"{key}={value!r} is invalid: expected {accepted}")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(key, value, "True or False")


def _number(
    key: str, value: Any, *, allow_none: bool, accepted: str, maximum: float = _CENTURY
) -> float | None:
    accepted = f"{accepted} (at most {maximum:g})"
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise _fail(key, value, accepted)
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(key, value, accepted) from None
    if not isinstance(value, (int, float)) or not 0 < value <= maximum:
        raise _fail(key, value, accepted)
    return float(value)


def _expires(value: Any) -> Expires:
    key = "SESSION_EXPIRES"
    accepted = "True, False or a positive number of seconds"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    seconds = _number(key, value, allow_none=False, accepted=accepted)
    assert seconds is not None
    return int(seconds)


def _data_dir(value: Any) -> Path:
    key = "SESSION_DATA_DIR"
    if not isinstance(value, (str, os.PathLike)) or str(os.fspath(value)) == "":
        raise _fail(key, value, "a non-empty path (str or pathlib.Path)")
    return Path(os.fspath(value)).expanduser().absolute()


def _data_dir_problem(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(f"SESSION_DATA_DIR={str(path)!r} is invalid: {why}")


def _data_dir_exists(path: Path) -> bool:
    """Whether the data dir exists (False: missing, creatable as far as the path goes).

    :raises ConfigurationError: naming the key, for a path that is not a directory, lies
        under a regular file, or sits behind a directory this process cannot enter.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
        raise _data_dir_problem(
            path, f"{blocker or 'a parent'} is a file, not a directory"
        ) from None
    except PermissionError:
        raise _data_dir_problem(
            path,
            "permission denied: this process cannot enter one of its parent directories "
            "(each needs search (x) permission for this user)",
        ) from None
    except OSError as exc:
        raise _data_dir_problem(path, f"cannot check it: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise _data_dir_problem(path, f"{path} exists and is not a directory")
    return True


#: Data dirs ``init_app`` created in this process (so ``stats`` can tell "empty" from
#: "created just now": a missing data dir usually means the wrong path or working dir).
CREATED_DATA_DIRS: set[Path] = set()


def ensure_data_dir(path: Path) -> bool:
    """Creates the data dir (mode 0700; missing parents with the default mode) unless it
    exists; True if it was created. Called by ``init_app`` for the file backend.

    :raises ConfigurationError: naming ``SESSION_DATA_DIR``, when it cannot be used or
        created (the first save would fail, as a 500, otherwise).
    """
    if _data_dir_exists(path):
        return False
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        # Another worker made it meanwhile (or something else took the name).
        _data_dir_exists(path)
        return False
    except OSError as exc:
        raise _data_dir_problem(path, f"cannot create {path}: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # we just created it
        os.chmod(path, 0o700)  # exactly, whatever the umask
    CREATED_DATA_DIRS.add(path)
    return True


def _secret_keys(config: Mapping[str, Any], secret_key: Any = None) -> tuple[bytes, ...]:
    keys: list[bytes] = []
    primary = secret_key if secret_key is not None else config.get("SECRET_KEY")
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or []
    if not primary:
        return ()
    for key in [primary, *fallbacks]:
        if isinstance(key, str):
            keys.append(key.encode("utf-8"))
        elif isinstance(key, bytes):
            keys.append(key)
        elif key:
            raise _fail("SECRET_KEY", "<hidden>", "str or bytes")
    return tuple(keys)


def _max_size(value: Any) -> int:
    key = "SESSION_MAX_SIZE"
    accepted = f"a whole number of bytes from 1 to {_MAX_SIZE_LIMIT}"
    if isinstance(value, bool):
        raise _fail(key, value, accepted)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= _MAX_SIZE_LIMIT:
        raise _fail(key, value, accepted)
    return value


def _positive(
    config: Mapping[str, Any], key: str, default: float, maximum: float = _CENTURY
) -> float:
    value = _number(
        key,
        config.get(key, default),
        allow_none=False,
        accepted="a positive number of seconds",
        maximum=maximum,
    )
    assert value is not None
    return value


def _max_waiters(value: Any) -> int | None:
    key = "SESSION_MAX_WAITERS"
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, value, f"a whole number from 0 to {_MAX_WAITERS_LIMIT}, or None")
    if not 0 <= value <= _MAX_WAITERS_LIMIT:
        raise _fail(key, value, f"a whole number from 0 to {_MAX_WAITERS_LIMIT}, or None")
    return value


def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise _fail("SESSION_REDIS_PREFIX", value, "a string")
    return value


def _redacted(url: str) -> str:
    """``url`` with its password (``user:pw@`` or ``?pass=pw``) masked, for messages."""
    url = re.sub(r"^([^:/?#]*://[^/?#@:]*:)[^/?#]*@", r"\1***@", url)
    return re.sub(r"([?&]pass(?:word)?=)[^&#]*", r"\1***", url)


def _redis_url(value: Any) -> str:
    key = "SESSION_REDIS_URL"
    schemes = _REDIS_SCHEMES + _REDIS_HA_SCHEMES
    if not isinstance(value, str) or not value.startswith(schemes):
        shown = _redacted(value) if isinstance(value, str) else value
        raise _fail(key, shown, "a URL starting with " + ", ".join(schemes))
    return value


def _redis_ha(config: Mapping[str, Any], url: str, prefix: str) -> tuple[str | None, int, float]:
    """(Sentinel password, replicas to WAIT for, WAIT timeout), validated against the URL."""
    password = config.get("SESSION_REDIS_SENTINEL_PASSWORD", SESSION_REDIS_SENTINEL_PASSWORD)
    if password is not None:
        if not isinstance(password, str) or not password:
            raise _fail("SESSION_REDIS_SENTINEL_PASSWORD", "***", "a non-empty string or None")
        if "+sentinel://" not in url:
            raise ConfigurationError(
                "SESSION_REDIS_SENTINEL_PASSWORD is set but SESSION_REDIS_URL="
                f"{_redacted(url)!r} is not a redis+sentinel:// (or rediss+sentinel://) URL"
            )
    if "+cluster://" in url and ("{" in prefix or "}" in prefix):
        raise _fail(
            "SESSION_REDIS_PREFIX",
            prefix,
            "a prefix without '{' or '}' on a Redis Cluster (the session's digest is the "
            "hash tag of its keys)",
        )
    replicas: Any = config.get("SESSION_REDIS_WAIT_REPLICAS", SESSION_REDIS_WAIT_REPLICAS)
    if isinstance(replicas, str) and replicas.strip().isdigit():
        replicas = int(replicas.strip())
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 0 <= replicas <= _MAX_WAIT_REPLICAS
    ):
        raise _fail(
            "SESSION_REDIS_WAIT_REPLICAS",
            replicas,
            f"a whole number of replicas from 0 (no WAIT) to {_MAX_WAIT_REPLICAS}",
        )
    timeout = _positive(config, "SESSION_REDIS_WAIT_TIMEOUT", SESSION_REDIS_WAIT_TIMEOUT, _DAY)
    return password, replicas, timeout


def _pem(config: Mapping[str, Any], key: str, kind: str, marker: bytes) -> bytes | None:
    """The bytes of the PEM file named by ``key`` (None if unset), checked to hold
    ``marker`` (a ``-----BEGIN …`` line) so that a wrong file is caught at ``init_app``."""
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or str(os.fspath(value)) == "":
        raise _fail(key, value, f"the path of a PEM file holding {kind}, or None")
    path = Path(os.fspath(value)).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{key}={str(value)!r} is invalid: cannot read {path}: {exc.strerror}"
        ) from None
    if marker not in data:
        raise ConfigurationError(f"{key}={str(value)!r} is invalid: {path} holds no PEM {kind}")
    return data


def _redis_tls(
    config: Mapping[str, Any], url: str
) -> tuple[bytes | None, tuple[bytes, bytes] | None]:
    """(CA certificates, (client certificate, key)) for ``rediss://``, validated."""
    ca_key, cert_key, key_key = (
        "SESSION_REDIS_TLS_CA_CERTS",
        "SESSION_REDIS_TLS_CERTFILE",
        "SESSION_REDIS_TLS_KEYFILE",
    )
    ca = _pem(config, ca_key, "CA certificates", b"-----BEGIN CERTIFICATE")
    cert = _pem(config, cert_key, "certificate", b"-----BEGIN CERTIFICATE")
    key = _pem(config, key_key, "private key", b"PRIVATE KEY-----")
    if (cert is None) != (key is None):
        missing, given = (key_key, cert_key) if key is None else (cert_key, key_key)
        raise ConfigurationError(
            f"{missing} is missing: {given} is set, and a client certificate needs both "
            "the certificate and its key"
        )
    for name, data in ((ca_key, ca), (cert_key, cert), (key_key, key)):
        if data is not None and not url.startswith(("rediss://", "rediss+")):
            raise ConfigurationError(
                f"{name} is set but SESSION_REDIS_URL={_redacted(url)!r} does not use TLS: "
                "use a rediss:// URL"
            )
    return ca, (cert, key) if cert is not None and key is not None else None


def _database_url(value: Any, required: bool) -> str | None:
    """``SESSION_DATABASE_URL``: a ``postgresql://`` URL (required for 'postgresql')."""
    key = "SESSION_DATABASE_URL"
    accepted = "a URL starting with " + " or ".join(_PG_SCHEMES)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith(_PG_SCHEMES):
        shown = _redacted(value) if isinstance(value, str) else value
        raise _fail(key, shown, accepted + " (required with SESSION_TYPE='postgresql')")
    modes = urllib.parse.parse_qs(urllib.parse.urlsplit(value).query).get("sslmode", [])
    for mode in modes:
        if mode not in _PG_SSLMODES:
            raise _fail(
                key,
                _redacted(value),
                f"sslmode {' or '.join(_PG_SSLMODES)} (require always verifies the "
                f"certificate), not {mode!r}",
            )
    return value


def _identifier(key: str, value: Any, maximum: int, allow_none: bool) -> str | None:
    """A table or schema name: letters, digits and ``_``, not starting with a digit."""
    if value is None and allow_none:
        return None
    pattern = rf"[A-Za-z_][A-Za-z0-9_]{{0,{maximum - 1}}}"
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise _fail(
            key,
            value,
            f"letters, digits and '_' (not starting with a digit), at most {maximum} characters"
            + (", or None" if allow_none else ""),
        )
    return value


def _database_lock(value: Any) -> Literal["row", "advisory"]:
    """``SESSION_DATABASE_LOCK``: ``'row'`` or ``'advisory'`` (any case, spaces ignored)."""
    if isinstance(value, str):
        for mode in _PG_LOCKS:
            if value.strip().lower() == mode:
                return mode
    raise _fail("SESSION_DATABASE_LOCK", value, " or ".join(repr(m) for m in _PG_LOCKS))


def _pool_size(value: Any) -> int:
    key = "SESSION_DATABASE_POOL_SIZE"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise _fail(key, value, "a whole number from 1 to 1000")
    return value


def _sweep_interval(value: Any) -> float | None:
    """``SESSION_SWEEP_INTERVAL``: positive seconds; ``None``, ``0`` or ``False``: off."""
    if value is None or value is False:
        return None
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            if float(value.strip() if isinstance(value, str) else value) == 0:
                return None
        except ValueError:
            pass
    return _number(
        "SESSION_SWEEP_INTERVAL",
        value,
        allow_none=True,
        accepted="a positive number of seconds, or None / 0 / False (no automatic sweep)",
    )


def _user_key(value: Any) -> str | None:
    accepted = "None, or the name of the session key holding the user's id (e.g. '_user_id')"
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or value in _TIME_KEY_NAMES:
        raise _fail("SESSION_USER_KEY", value, accepted)
    return value


#: The time keys the session answers for itself: never a user's id.
_TIME_KEY_NAMES = ("_creation_time", "_accessed_time")


def load(config: Mapping[str, Any], secret_key: Any = None) -> SessionConfig:
    """Validates the ``SESSION_*`` keys of a Flask config and returns frozen settings.

    ``secret_key``: the app's ``app.secret_key`` (what Flask itself signs with, which a
    Flask subclass may set as a class attribute); ``config['SECRET_KEY']`` when None.
    Checks the data dir without creating it (:func:`ensure_data_dir` does, at ``init_app``).
    """
    type_ = config.get("SESSION_TYPE", SESSION_TYPE)
    if type_ is None:
        type_ = SESSION_TYPE
    if type_ not in _TYPES:
        raise _fail("SESSION_TYPE", type_, " or ".join(repr(t) for t in _TYPES))
    lock_timeout = _positive(config, "SESSION_LOCK_TIMEOUT", SESSION_LOCK_TIMEOUT, _DAY)
    redis_url = _redis_url(config.get("SESSION_REDIS_URL", SESSION_REDIS_URL))
    tls_ca_certs, tls_client = _redis_tls(config, redis_url)
    redis_prefix = _prefix(config.get("SESSION_REDIS_PREFIX", SESSION_REDIS_PREFIX))
    sentinel_password, wait_replicas, wait_timeout = _redis_ha(config, redis_url, redis_prefix)
    sweep_interval = _sweep_interval(config.get("SESSION_SWEEP_INTERVAL", SESSION_SWEEP_INTERVAL))
    loaded = SessionConfig(
        type=type_,
        expires=_expires(config.get("SESSION_EXPIRES", SESSION_EXPIRES)),
        timeout=_number(
            "SESSION_TIMEOUT",
            config.get("SESSION_TIMEOUT", SESSION_TIMEOUT),
            allow_none=True,
            accepted="a positive number of seconds or None",
        ),
        data_dir=_data_dir(config.get("SESSION_DATA_DIR", SESSION_DATA_DIR)),
        lock_timeout=lock_timeout,
        read_legacy=_bool(
            "SESSION_READ_LEGACY",
            config.get("SESSION_READ_LEGACY", SESSION_READ_LEGACY),
        ),
        secret_keys=_secret_keys(config, secret_key),
        max_waiters=_max_waiters(config.get("SESSION_MAX_WAITERS", SESSION_MAX_WAITERS)),
        max_size=_max_size(config.get("SESSION_MAX_SIZE", SESSION_MAX_SIZE)),
        absolute_timeout=_number(
            "SESSION_ABSOLUTE_TIMEOUT",
            config.get("SESSION_ABSOLUTE_TIMEOUT", SESSION_ABSOLUTE_TIMEOUT),
            allow_none=True,
            accepted="a positive number of seconds or None",
        ),
        locking=_bool("SESSION_LOCKING", config.get("SESSION_LOCKING", SESSION_LOCKING)),
        time_keys=_bool("SESSION_TIME_KEYS", config.get("SESSION_TIME_KEYS", SESSION_TIME_KEYS)),
        metrics=_bool("SESSION_METRICS", config.get("SESSION_METRICS", SESSION_METRICS)),
        encrypt=_bool("SESSION_ENCRYPT", config.get("SESSION_ENCRYPT", SESSION_ENCRYPT)),
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        redis_connect_timeout=_positive(
            config, "SESSION_REDIS_CONNECT_TIMEOUT", SESSION_REDIS_CONNECT_TIMEOUT, _DAY
        ),
        redis_timeout=_positive(config, "SESSION_REDIS_TIMEOUT", SESSION_REDIS_TIMEOUT, _DAY),
        redis_lock_ttl=_positive(config, "SESSION_REDIS_LOCK_TTL", SESSION_REDIS_LOCK_TTL, _DAY),
        # Redis expires keys itself: nothing for a sweeper thread to do.
        sweep_interval=None if type_ == "redis" else sweep_interval,
        redis_tls_ca_certs=tls_ca_certs,
        redis_tls_client=tls_client,
        database_url=_database_url(
            config.get("SESSION_DATABASE_URL", SESSION_DATABASE_URL), type_ == "postgresql"
        ),
        database_schema=_identifier(
            "SESSION_DATABASE_SCHEMA",
            config.get("SESSION_DATABASE_SCHEMA", SESSION_DATABASE_SCHEMA),
            63,
            allow_none=True,
        ),
        database_table=_identifier(
            "SESSION_DATABASE_TABLE",
            config.get("SESSION_DATABASE_TABLE", SESSION_DATABASE_TABLE),
            _PG_TABLE_MAX,
            allow_none=False,
        )
        or SESSION_DATABASE_TABLE,
        database_pool_size=_pool_size(
            config.get("SESSION_DATABASE_POOL_SIZE", SESSION_DATABASE_POOL_SIZE)
        ),
        database_connect_timeout=_positive(
            config, "SESSION_DATABASE_CONNECT_TIMEOUT", SESSION_DATABASE_CONNECT_TIMEOUT, _DAY
        ),
        database_timeout=_positive(
            config, "SESSION_DATABASE_TIMEOUT", SESSION_DATABASE_TIMEOUT, _DAY
        ),
        database_lock_ttl=_positive(
            config, "SESSION_DATABASE_LOCK_TTL", SESSION_DATABASE_LOCK_TTL, _DAY
        ),
        database_lock=_database_lock(config.get("SESSION_DATABASE_LOCK", SESSION_DATABASE_LOCK)),
        database_create=_bool(
            "SESSION_DATABASE_CREATE",
            config.get("SESSION_DATABASE_CREATE", SESSION_DATABASE_CREATE),
        ),
        database_tls_ca_certs=_pem(
            config, "SESSION_DATABASE_TLS_CA_CERTS", "CA certificates", b"-----BEGIN CERTIFICATE"
        ),
        redis_sentinel_password=sentinel_password,
        redis_wait_replicas=wait_replicas,
        redis_wait_timeout=wait_timeout,
        user_key=_user_key(config.get("SESSION_USER_KEY", SESSION_USER_KEY)),
        user_metadata=_bool(
            "SESSION_USER_METADATA", config.get("SESSION_USER_METADATA", SESSION_USER_METADATA)
        ),
    )
    if loaded.type == "file":
        _data_dir_exists(loaded.data_dir)
    if loaded.type == "redis" and not loaded.secret_keys:
        # No secret, no trust: Redis is reachable from other hosts, and a record planted
        # there without a key to check it against would be unpickled.
        raise ConfigurationError(
            "SESSION_TYPE='redis' needs a SECRET_KEY: without one, whoever can write to "
            "Redis could plant session records that would be unpickled (code execution); "
            "set SECRET_KEY (and SECRET_KEY_FALLBACKS when rotating it)"
        )
    if loaded.database_lock == "advisory" and loaded.database_pool_size < 2:
        # A request holding its session keeps one connection (its advisory lock lives
        # there); the other statements of the process need another.
        raise _fail(
            "SESSION_DATABASE_POOL_SIZE",
            loaded.database_pool_size,
            "a whole number from 2 to 1000 with SESSION_DATABASE_LOCK='advisory'",
        )
    if loaded.type == "postgresql" and not loaded.secret_keys:
        # As with Redis: whoever can write to the table must not be able to plant records.
        raise ConfigurationError(
            "SESSION_TYPE='postgresql' needs a SECRET_KEY: without one, whoever can write "
            "to the sessions table could plant session records that would be unpickled "
            "(code execution); set SECRET_KEY (and SECRET_KEY_FALLBACKS when rotating it)"
        )
    return loaded
