"""LruTable: per-client state for the most recently seen clients only."""

from __future__ import annotations

import pytest

from entroguard.serve.lru import LruTable


def test_the_least_recently_used_entry_is_dropped_first():
    made = []
    table = LruTable(2, lambda: made.append(1) or len(made))
    assert table.get_or_create("a") == (1, True) and table.get_or_create("b") == (2, True)
    assert table.get_or_create("a") == (1, False)  # a is now the most recent
    assert table.get_or_create("c") == (3, True)
    assert list(table) == ["a", "c"] and "b" not in table and len(table) == 2
    assert table.get("a") == 1 and table.get("b") is None
    table.get("a")  # a plain read does not refresh recency
    table.get_or_create("c")
    table.get_or_create("d")
    assert list(table) == ["c", "d"]


def test_a_table_holds_at_least_one_entry():
    with pytest.raises(ValueError, match="max_items must be >= 1"):
        LruTable(0, dict)
