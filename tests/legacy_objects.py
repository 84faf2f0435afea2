"""Custom classes pickled into the legacy Beaker session fixtures.

The fixture files under ``tests/fixtures/legacy/`` hold pickles that refer to
``legacy_objects.LegacyThing`` by module and class name, so this module must
stay importable as the top-level module ``legacy_objects`` (``tests/`` on
``sys.path``) and the class must keep its name and ``value`` attribute.
"""

from __future__ import annotations


class LegacyThing:
    """A small user-defined object stored in a legacy session."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LegacyThing):
            return NotImplemented
        return self.value == other.value

    def __hash__(self) -> int:
        return hash((LegacyThing, self.value))

    def __repr__(self) -> str:
        return f"LegacyThing({self.value!r})"
