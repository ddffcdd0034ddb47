"""When a held record may be released: its cell must hold k people among what is, or is about to be, released."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

WAITING, RELEASED, SUPPRESSED = "waiting", "released", "suppressed"
FINE, COARSE = 0, 1  # released as the policy gives it, or widened at window close


@dataclass(frozen=True)
class Held:
    """One visit held for one subscriber: its cell at either level, the person behind it and where it stands."""

    visit_ref: str
    person: str
    fine_cell: str
    coarse_cell: str
    state: str = WAITING
    released_as: int | None = None


def release_fine(rows: Iterable[Held], k: int, open_cells: Collection[str] = ()) -> list[str]:
    """The waiting visits whose cell, as the policy gives it, holds at least k people once they are released.

    A cell counts the people of its waiting visits and of those already released in it as they are; visits
    released widened do not count, since their records do not show this cell. An open cell (one already
    released with k people) takes its waiting visits as they come.
    """
    going, waiting = _going(rows, FINE, k, open_cells)
    return [ref for cell in going for ref in waiting[cell]]


def release_coarse(rows: Iterable[Held], k: int, open_cells: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """At window close, the waiting visits released widened (their wider cell holds k people) and those suppressed."""
    going, waiting = _going(rows, COARSE, k, open_cells)
    return ([ref for cell in going for ref in waiting[cell]],
            [ref for cell, refs in waiting.items() if cell not in going for ref in refs])


def _going(rows: Iterable[Held], level: int, k: int, open_cells: Collection[str]
           ) -> tuple[list[str], dict[str, list[str]]]:
    """The cells at a level whose waiting visits may go, and every cell's waiting visits."""
    people: dict[str, set[str]] = defaultdict(set)
    waiting: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        cell = row.fine_cell if level == FINE else row.coarse_cell
        if row.state == WAITING:
            waiting[cell].append(row.visit_ref)
            people[cell].add(row.person)
        elif row.state == RELEASED and row.released_as == level:
            people[cell].add(row.person)
    return [cell for cell in waiting if cell in open_cells or len(people[cell]) >= k], waiting


def suppress_small_counts(counts: dict[tuple[str, str], tuple[int, int]], k: int) -> dict[tuple[str, str], int]:
    """Visits per (group, item) with every item of fewer than k people withheld, and enough more that no sum shows one.

    counts holds (visits, people) per item. Primary suppression drops items of 1..k-1 people. A group's
    total is published beside its items, so if the people withheld in a group add up to fewer than k,
    the smallest published items go too, until they add up to at least k or the group is all withheld.
    """
    groups: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for (group, item), pair in counts.items():
        groups[group][item] = pair
    kept: dict[tuple[str, str], int] = {}
    for group, items in groups.items():
        shown = {item: pair for item, pair in items.items() if pair[1] >= k}
        hidden = sum(people for item, (_, people) in items.items() if people < k)
        for item, (_, people) in sorted(shown.items(), key=lambda entry: (entry[1][1], entry[0])):
            if hidden == 0 or hidden >= k:
                break
            del shown[item]
            hidden += people
        kept.update({(group, item): visits for item, (visits, _) in shown.items()})
    return kept
