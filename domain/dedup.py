"""The deduplication decision: is this version of a visit new, newer, or already seen?"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class Freshness(StrEnum):
    """How a visit version compares with what was seen before."""

    NEW = "new"
    NEWER = "newer"
    DUPLICATE = "duplicate"


def decide(seen_version: int | None, version: int) -> Freshness:
    """A newer version replaces; an equal or older one changes nothing."""
    if seen_version is None:
        return Freshness.NEW
    if version > seen_version:
        return Freshness.NEWER
    return Freshness.DUPLICATE


@dataclass(frozen=True)
class Candidate:
    """A validated visit reduced to what deduplication needs."""

    personal_id: str
    visit_key: str
    version: int


def plan(
    candidates: Iterable[Candidate],
    seen: Callable[[str], dict[str, int]],
) -> tuple[list[Freshness], dict[str, dict[str, int]]]:
    """Decide a batch in order, each decision seeing the ones before it.

    seen(personal_id) gives the versions already recorded for that citizen. Returns
    the decision per candidate and the updated versions per citizen touched.
    """
    updated: dict[str, dict[str, int]] = {}
    decisions = []
    for item in candidates:
        versions = updated.get(item.personal_id)
        if versions is None:
            versions = dict(seen(item.personal_id))
            updated[item.personal_id] = versions
        decision = decide(versions.get(item.visit_key), item.version)
        if decision is not Freshness.DUPLICATE:
            versions[item.visit_key] = item.version
        decisions.append(decision)
    return decisions, updated
