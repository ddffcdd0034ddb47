"""The replay's bounded deduplication table: it holds at most so many visits, dropping the citizens met longest ago."""

from __future__ import annotations

from streams.replay import RecentVersions


def test_the_table_is_bounded_by_visits_and_drops_the_citizens_met_longest_ago():
    table = RecentVersions(visits=5)
    table["a"] = {"v1": 1, "v2": 1}
    table["b"] = {"v3": 1, "v4": 1}
    assert table.get("a") is not None  # met again: now the most recent
    table["c"] = {"v5": 1, "v6": 1}
    assert table.get("b") is None and table.get("a") == {"v1": 1, "v2": 1} and len(table) == 2
    table["a"] = {"v1": 2, "v2": 1, "v7": 1}  # replaced, not added to
    assert len(table) == 2 and table.get("c") is not None


def test_a_citizen_with_more_visits_than_the_bound_is_still_held_alone():
    table = RecentVersions(visits=2)
    table["a"] = {f"v{n}": 1 for n in range(5)}
    assert len(table) == 1 and table.get("a") is not None
