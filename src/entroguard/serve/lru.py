"""Per-client state kept for the most recently seen clients only, so a flood of new client
names costs bounded memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class LruTable(Generic[T]):
    """At most ``max_items`` entries made by ``make()``, the least recently used dropped first.

    Not thread-safe: its owners call it with their own lock held.
    """

    def __init__(self, max_items: int, make: Callable[[], T]) -> None:
        if int(max_items) < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = int(max_items)
        self._make = make
        self._items: OrderedDict[str, T] = OrderedDict()

    def get_or_create(self, key: str) -> tuple[T, bool]:
        """``key``'s entry, made if new (then ``True``), and marked most recently used."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            return item, False
        item = self._items[key] = self._make()
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return item, True

    def get(self, key: str) -> T | None:
        """``key``'s entry without touching its recency (None if unknown)."""
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
