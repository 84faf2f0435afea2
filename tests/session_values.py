"""User classes stored in sessions by the tests (importable as a top-level module)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cart:
    """A small user object, like the original README's ``YourObject()``."""

    owner: str
    items: list[str] = field(default_factory=list)

    def total(self) -> int:
        return len(self.items)
