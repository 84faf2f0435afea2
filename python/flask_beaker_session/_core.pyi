"""Type stub of the private native module built from ``src/`` (Rust, PyO3).

The boundary speaks types: a store is built from one :class:`StoreConfig`, an open returns
an :class:`OpenStatus` member, a handle says what its payload is with a :class:`PayloadKind`
member, and a walk returns a frozen :class:`Report`.
"""

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, final

__all__ = [
    "LARGE_VALUE",
    "RECORD_FORMAT_VERSION",
    "BackendKind",
    "FileBackend",
    "Handle",
    "LargeValue",
    "MemoryBackend",
    "OpenStatus",
    "PayloadKind",
    "PostgresBackend",
    "PostgresLock",
    "RedisBackend",
    "Report",
    "Store",
    "StoreConfig",
    "WalkMode",
    "is_valid_id",
    "record_path",
    "reset_after_fork",
    "walked_records",
]

RECORD_FORMAT_VERSION: int
#: A value whose pickle is at least this many bytes is stored in a segment of its own.
LARGE_VALUE: int

def reset_after_fork() -> None:
    """Forget in-process lock state, cached descriptors and pooled connections (called in a
    child after ``fork``)."""

def record_path(data_dir: str | PathLike[str], sid: str) -> Path:
    """Path of the record of ``sid`` under ``data_dir``; ValueError for a malformed id."""

def walked_records() -> int:
    """Records visited by walks (``Store.walk``) in this process so far, every store and
    mode counted: sampled before and while a walk runs in another thread, the difference
    is that walk's progress."""

def is_valid_id(value: str) -> bool:
    """Whether ``value`` is 32 lowercase hexadecimal characters."""

@final
class BackendKind:
    """Which backend a store is."""

    File: ClassVar[BackendKind]
    Memory: ClassVar[BackendKind]
    Redis: ClassVar[BackendKind]
    Postgres: ClassVar[BackendKind]
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class PostgresLock:
    """How the PostgreSQL backend locks a session (``SESSION_DATABASE_LOCK``): a lock row in
    the session's row (any server, any pooler) or a session-level advisory lock
    (PostgreSQL 14+, no transaction pooling)."""

    Row: ClassVar[PostgresLock]
    Advisory: ClassVar[PostgresLock]
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class OpenStatus:
    """What ``Store.open`` found."""

    #: A live session: the handle is returned, locked.
    Found: ClassVar[OpenStatus]
    #: No stored session has this id.
    Missing: ClassVar[OpenStatus]
    #: The value is not a well-formed id (never looked up).
    Invalid: ClassVar[OpenStatus]
    #: The session was past its idle timeout or absolute lifetime; it has been removed.
    Expired: ClassVar[OpenStatus]
    #: The record was torn or garbled; it has been removed.
    Corrupt: ClassVar[OpenStatus]
    #: The record was written by a newer format version; left in place.
    Newer: ClassVar[OpenStatus]
    #: A legacy (Beaker) file not trusted to be unpickled (not a regular file, owned by
    #: another user, or writable by group or others); left in place, unread.
    Untrusted: ClassVar[OpenStatus]
    #: The record was whole but its tag failed under every key: written with a different
    #: key (or altered); it has been removed.
    Unauthenticated: ClassVar[OpenStatus]
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class PayloadKind:
    """What an opened session's payload is."""

    #: Our record: the pickled user dict.
    Record: ClassVar[PayloadKind]
    #: A legacy Beaker file whose pickle is the bare session dict.
    Legacy: ClassVar[PayloadKind]
    #: A legacy Beaker file whose pickle is Beaker's outer dict (take ``['session']``).
    LegacyWrapped: ClassVar[PayloadKind]
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class WalkMode:
    """What a walk over the store does."""

    Stats: ClassVar[WalkMode]
    Sweep: ClassVar[WalkMode]
    Clear: ClassVar[WalkMode]
    Rekey: ClassVar[WalkMode]
    RekeyDryRun: ClassVar[WalkMode]
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __int__(self) -> int: ...

@final
class FileBackend:
    """Files under ``data_dir`` (created 0700 on the first save). ``max_size``: the
    largest payload read back (bytes); ``generate_key``: without keys, tag records with a
    key generated in ``data_dir/session.key`` instead of a checksum only."""

    def __new__(
        cls,
        *,
        data_dir: str | PathLike[str],
        read_legacy: bool = True,
        max_size: int = 4194304,
        generate_key: bool = True,
    ) -> FileBackend: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def read_legacy(self) -> bool: ...
    @property
    def max_size(self) -> int: ...
    @property
    def generate_key(self) -> bool: ...

@final
class MemoryBackend:
    """This process's memory (tests and development)."""

    def __new__(cls) -> MemoryBackend: ...

@final
class RedisBackend:
    """A Redis server. ``tls_*`` are PEM bytes for ``rediss://``: a CA to trust instead of
    the public ones, and a client certificate chain with its key."""

    def __new__(
        cls,
        *,
        url: str,
        prefix: str = "fbs:",
        connect_timeout: float = 2.0,
        io_timeout: float = 2.0,
        lock_ttl: float = 60.0,
        tls_ca_certs: bytes | None = None,
        tls_client: tuple[bytes, bytes] | None = None,
        sentinel_password: str | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> RedisBackend: ...
    @property
    def url(self) -> str: ...
    @property
    def prefix(self) -> str: ...

@final
class PostgresBackend:
    """A PostgreSQL table. ``url``: a libpq-style URL or key=value string (``sslmode``
    ``disable``, ``prefer`` or ``require``; TLS always verifies the server's certificate,
    against ``tls_ca_certs`` (PEM bytes) when given, else the public CAs). ``create``:
    whether the first use creates the table when it is missing."""

    def __new__(
        cls,
        *,
        url: str,
        schema: str | None = None,
        table: str = "beaker_sessions",
        pool_size: int = 8,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        lock_ttl: float = 60.0,
        create: bool = True,
        tls_ca_certs: bytes | None = None,
        lock: PostgresLock = ...,
    ) -> PostgresBackend: ...
    @property
    def table(self) -> str: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def lock(self) -> PostgresLock: ...

@final
class StoreConfig:
    """Everything a store needs, fixed at ``init_app``. Timeouts are seconds; ``None``
    disables the idle timeout / absolute lifetime. ``keys``: the secrets records are tagged
    and sealed under, current first; ``encrypt``: seal (encrypt) records when there is a
    secret (``SESSION_ENCRYPT``)."""

    def __new__(
        cls,
        *,
        backend: FileBackend | MemoryBackend | RedisBackend | PostgresBackend,
        keys: Sequence[bytes] = (),
        idle_timeout: float | None = None,
        absolute_timeout: float | None = None,
        lock_timeout: float = 10.0,
        max_waiters: int | None = None,
        encrypt: bool = True,
    ) -> StoreConfig: ...
    @property
    def backend(self) -> FileBackend | MemoryBackend | RedisBackend | PostgresBackend: ...
    @property
    def idle_timeout(self) -> float | None: ...
    @property
    def absolute_timeout(self) -> float | None: ...
    @property
    def lock_timeout(self) -> float: ...
    @property
    def max_waiters(self) -> int | None:
        """How many requests may wait for one session (None: no bound)."""
    @property
    def touch_interval(self) -> float | None:
        """How often read-only requests refresh the last access (None: never needed)."""

@final
class Report:
    """Counts from one walk over a store."""

    @property
    def records(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def live(self) -> int: ...
    @property
    def expired(self) -> int: ...
    @property
    def corrupt(self) -> int: ...
    @property
    def temp(self) -> int: ...
    @property
    def legacy(self) -> int: ...
    @property
    def legacy_expired(self) -> int: ...
    @property
    def legacy_locks(self) -> int: ...
    @property
    def removed(self) -> int: ...
    @property
    def bytes_freed(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def symlinks(self) -> int:
        """Symlinks found where a directory or record belongs (never followed)."""
    @property
    def foreign(self) -> int:
        """Entries the store never writes, left alone (not counted as sessions)."""
    @property
    def rekeyed(self) -> int:
        """Records re-sealed under the current key (``Rekey``; would be, ``RekeyDryRun``)."""
    @property
    def current(self) -> int:
        """Records already sealed under the current key (rekey walks)."""
    @property
    def plain(self) -> int:
        """Unsealed records, sealed by their session's next save (rekey walks)."""
    @property
    def unopenable(self) -> int:
        """Records no key opens, left in place (rekey walks)."""
    @property
    def sizes(self) -> list[int]: ...
    def to_dict(self) -> dict[str, Any]:
        """The counts as a dict (for ``--json`` output)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...

@final
class Store:
    """A session store. Holds no file descriptor or connection until first used, so it can
    be built before a pre-fork server forks."""

    def __new__(cls, config: StoreConfig) -> Store: ...
    @property
    def kind(self) -> BackendKind: ...
    @property
    def config(self) -> StoreConfig: ...
    @property
    def data_dir(self) -> Path | None:
        """The data directory of a file store (None for the others)."""
    def new_id(self) -> str:
        """A fresh id from the OS CSPRNG."""
    def expired(self, now: float, created: float | None, last_access: float | None) -> bool:
        """The store's expiry rule (idle timeout, absolute lifetime) for times known only
        to Python (legacy sessions keep theirs inside the pickle)."""
    def open(self, sid: str, now: float) -> tuple[OpenStatus, Handle | None]:
        """Lock, read and verify session ``sid``; the handle is set iff ``Found``."""
    def create(
        self,
        sid: str,
        payload: bytes,
        created: float,
        now: float,
        large: list[LargeValue] | None = None,
    ) -> None:
        """Store a new session under a fresh id (never overwrites)."""
    def walk(self, now: float, mode: WalkMode, threads: int = 0) -> Report:
        """One pass over the store (``threads=0``: one per core)."""
    def sweep_if_due(self, now: float, interval: float, threads: int = 0) -> Report | None:
        """Sweep unless another process sharing the store did within ``interval`` seconds."""
    def init_schema(self) -> bool | None:
        """Creates what the store needs on its server if missing (the PostgreSQL table);
        True if something was created, None for stores that need nothing."""
    def legacy_ids(self) -> list[str]:
        """Ids of the legacy Beaker session files present (file stores)."""
    def handle_of(self, sid: str) -> str:
        """The non-secret handle of session ``sid`` (keyed hash; never the id)."""
    def index_put(self, user: str, sid: str, meta: bytes, now: float) -> None:
        """Adds (or replaces) the entry of ``sid`` under ``user`` (``meta``: <= 4096 bytes)."""
    def index_remove(self, user: str, sid: str) -> None:
        """Removes session ``sid`` from ``user``'s entries."""
    def index_list(self, user: str) -> list[tuple[str, float, bytes]]:
        """``user``'s entries as ``(sid, written_at, meta)``."""
    def index_sweep(self, now: float, grace: float) -> int:
        """Removes unreadable entries and those older than ``grace`` whose record is gone."""

@final
class LargeValue:
    """One large value of a save: reused from the loaded record, or changed."""

    @staticmethod
    def loaded(index: int) -> LargeValue:
        """The loaded record's large value ``index``, unchanged (reused as stored)."""
    @staticmethod
    def changed(key: bytes, value: bytes, raw: bool = False) -> LargeValue:
        """A new or changed value (pickled key; pickled value, or the bytes when raw)."""
    @property
    def index(self) -> int | None:
        """The loaded index it reuses (None for a changed value)."""

@final
class Handle:
    """A locked, open session. Each of ``save``, ``touch``, ``delete`` and ``release``
    ends it (gives up the lock); a second one raises RuntimeError, except ``release``."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> PayloadKind: ...
    @property
    def created(self) -> float | None: ...
    @property
    def last_access(self) -> float | None: ...
    @property
    def stale(self) -> bool:
        """Not stored as the store writes now (fallback key, other format, legacy file)."""
    @property
    def payload(self) -> bytes:
        """The stored payload (pickle bytes) as loaded."""
    def record(
        self,
    ) -> (
        tuple[bytes, float | None, float | None, tuple[tuple[bytes, bool, int], ...] | None] | None
    ):
        """``(payload, created, last_access, large)`` of a record of this package's own
        format, in one call: ``large`` lists its large values as ``(pickled key, raw,
        size)`` (size: of the pickle, or of the bytes when raw)
        (None when it has none); None for any other kind (legacy files)."""
    def open_large(self, index: int) -> bytes | None:
        """Large value ``index`` verified and decrypted (its pickle, or the value when raw);
        None if it does not verify. Works after the handle was released."""
    def save(
        self,
        payload: bytes,
        now: float,
        created: float | None = None,
        large: list[LargeValue] | None = None,
    ) -> None:
        """Store a new version and release. ``created`` fills in a creation time the core
        could not read (legacy sessions); ``large`` lists the large values."""
    def touch(self, now: float) -> bool:
        """Refresh the last access if the store's touch interval has passed, and release;
        True if it wrote."""
    def delete(self) -> None:
        """Remove the stored session and release."""
    def release(self) -> None:
        """Release without changing anything. Idempotent."""
