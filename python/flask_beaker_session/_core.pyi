"""Type stub of the private native module built from ``src/`` (Rust, PyO3)."""

from os import PathLike
from pathlib import Path
from typing import Any, final

__all__ = [
    "OPEN_CORRUPT",
    "OPEN_EXPIRED",
    "OPEN_FOUND",
    "OPEN_INVALID",
    "OPEN_MISSING",
    "OPEN_NEWER",
    "RECORD_FORMAT_VERSION",
    "Handle",
    "Store",
    "is_valid_id",
    "record_path",
    "reset_after_fork",
]

OPEN_FOUND: int
OPEN_MISSING: int
OPEN_INVALID: int
OPEN_EXPIRED: int
OPEN_CORRUPT: int
OPEN_NEWER: int
RECORD_FORMAT_VERSION: int

def reset_after_fork() -> None:
    """Forget in-process lock state (called in a child after ``fork``)."""

def record_path(data_dir: str | PathLike[str], sid: str) -> Path:
    """Path of the record of ``sid`` under ``data_dir``; ValueError for a malformed id."""

def is_valid_id(value: str) -> bool:
    """Whether ``value`` is 32 lowercase hexadecimal characters."""

@final
class Store:
    """A session store: files (``Store(...)``), memory or Redis. Holds no file descriptor
    or connection until first used, so it can be built before a pre-fork server forks."""

    def __new__(
        cls,
        data_dir: str | PathLike[str],
        keys: list[bytes],
        idle_timeout: float | None,
        absolute_timeout: float | None,
        lock_timeout: float,
        read_legacy: bool,
    ) -> Store: ...
    @staticmethod
    def memory(
        idle_timeout: float | None, absolute_timeout: float | None, lock_timeout: float
    ) -> Store:
        """A store in this process's memory."""
    @staticmethod
    def redis(
        url: str,
        prefix: str,
        keys: list[bytes],
        idle_timeout: float | None,
        absolute_timeout: float | None,
        lock_timeout: float,
        connect_timeout: float,
        io_timeout: float,
        lock_ttl: float,
        tls_ca_certs: bytes | None = None,
        tls_client: tuple[bytes, bytes] | None = None,
    ) -> Store:
        """A Redis store (connects lazily). ``tls_*``: PEM bytes for ``rediss://`` (a CA to
        trust instead of the public ones; a client certificate and its key)."""
    @property
    def kind(self) -> str:
        """``'file'``, ``'memory'`` or ``'redis'``."""
    @property
    def data_dir(self) -> Path | None:
        """The data directory of a file store."""
    @property
    def legacy_present(self) -> bool: ...
    def ping(self) -> None:
        """Check the store answers (Redis PING); raises StoreUnavailableError."""
    def walk(self, now: float, mode: str, threads: int = 0) -> dict[str, Any]:
        """One pass: ``mode`` is ``'stats'``, ``'sweep'`` or ``'clear'``; returns counts."""
    def sweep_if_due(self, now: float, interval: float, threads: int = 0) -> dict[str, Any] | None:
        """Sweep unless another process did within ``interval`` seconds."""
    def legacy_ids(self) -> list[str]:
        """Ids of the legacy Beaker session files present."""
    def new_id(self) -> str:
        """A fresh id from the OS CSPRNG."""
    def open(self, sid: str, now: float) -> tuple[Handle | None, int]:
        """Lock, read and verify session ``sid``; ``(None, status)`` if unusable."""
    def create(self, sid: str, payload: bytes, created: float, now: float) -> None:
        """Store a new session under a fresh id."""

@final
class Handle:
    """A locked, open session."""

    @property
    def id(self) -> str: ...
    @property
    def legacy(self) -> int: ...
    @property
    def created(self) -> float | None: ...
    @property
    def last_access(self) -> float | None: ...
    @property
    def released(self) -> bool: ...
    @property
    def payload(self) -> bytes: ...
    def save(
        self, payload: bytes, now: float, created: float | None = None, release: bool = False
    ) -> None: ...
    def touch(self, now: float, interval: float, release: bool = False) -> bool: ...
    def delete(self) -> None: ...
    def release(self) -> None: ...
