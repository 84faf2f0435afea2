"""Type stub of the private native module built from ``src/`` (Rust, PyO3)."""

from os import PathLike

OPEN_FOUND: int
OPEN_MISSING: int
OPEN_INVALID: int
OPEN_EXPIRED: int
OPEN_CORRUPT: int
OPEN_NEWER: int
RECORD_FORMAT_VERSION: int

def reset_after_fork() -> None:
    """Forget in-process lock state (called in a child after ``fork``)."""

def is_valid_id(value: str) -> bool:
    """Whether ``value`` is 32 lowercase hexadecimal characters."""

class Store:
    """A session store rooted at one data directory. Holds no file descriptor."""

    def __init__(
        self,
        data_dir: str | PathLike[str],
        keys: list[bytes],
        idle_timeout: float | None,
        absolute_timeout: float | None,
        lock_timeout: float,
        read_legacy: bool,
    ) -> None: ...
    @property
    def data_dir(self) -> str: ...
    @property
    def keyed(self) -> bool: ...
    @property
    def legacy_present(self) -> bool: ...
    def new_id(self) -> str:
        """A fresh id from the OS CSPRNG."""
    def open(self, sid: str, now: float) -> tuple[Handle | None, int]:
        """Lock, read and verify session ``sid``; ``(None, status)`` if unusable."""
    def create(self, sid: str, payload: bytes, created: float, now: float) -> None:
        """Store a new session under a fresh id."""

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
    def save(self, payload: bytes, now: float) -> None: ...
    def touch(self, now: float, interval: float) -> bool: ...
    def delete(self) -> None: ...
    def release(self) -> None: ...
