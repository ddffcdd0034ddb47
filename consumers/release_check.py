"""The release checker: what subscribers were given, its smallest cell, the share suppressed, any shared pseudonym."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import combinations

from consumers.released_visits import Released
from domain.analytics_policy import SubscriberPolicy
from domain.generalise import cell_of


@dataclass(frozen=True)
class SubscriberFindings:
    """What one subscriber holds: its cells, how small the smallest is, what was doubled and what suppressed."""

    subscriber: str
    k: int
    records: int
    cells: int
    smallest_cell_records: int
    smallest_cell_people: int | None  # None without pseudonyms: people cannot be told apart, records are counted
    cells_under_k: int
    doubled: int  # a (visit_ref, version) on the topic more than once, or a release sequence used twice
    released: int = 0
    generalised: int = 0
    suppressed: int = 0

    @property
    def suppressed_share(self) -> float:
        """Suppressed records as a share of every decision taken for this subscriber."""
        decided = self.released + self.generalised + self.suppressed
        return self.suppressed / decided if decided else 0.0


@dataclass(frozen=True)
class CheckReport:
    """The checker's verdict over every subscriber read."""

    subscribers: list[SubscriberFindings]
    shared_pseudonyms: dict[tuple[str, str], int] = field(default_factory=dict)
    shared_visit_refs: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Each broken promise in a sentence; empty when the release holds."""
        found = [f"{s.subscriber}: {s.cells_under_k} released cell(s) under k={s.k} (smallest holds "
                 f"{s.smallest_cell_records} record(s))" for s in self.subscribers if s.cells_under_k]
        found += [f"{s.subscriber}: {s.doubled} record(s) on its topic twice" for s in self.subscribers if s.doubled]
        found += [f"{a} and {b} share {n} pseudonym(s)" for (a, b), n in self.shared_pseudonyms.items() if n]
        found += [f"{a} and {b} share {n} visit_ref(s)" for (a, b), n in self.shared_visit_refs.items() if n]
        return found


def findings(subscriber: str, k: int, released: list[Released]) -> SubscriberFindings:
    """One subscriber's cells as it can group them: every released record, every version of it."""
    records: Counter[str] = Counter()
    people: dict[str, set[str]] = defaultdict(set)
    named = False
    for item in released:
        cell = cell_of(item.record)
        records[cell] += 1
        if item.record["pseudonym"] is not None:
            named = True
            people[cell].add(item.record["pseudonym"])
    sizes = {cell: len(people[cell]) if named else n for cell, n in records.items()}
    seen = Counter((r.record["visit_ref"], r.record["version"]) for r in released)
    seqs = Counter(r.seq for r in released)
    doubled = sum(n - 1 for n in seen.values() if n > 1) + sum(n - 1 for n in seqs.values() if n > 1)
    return SubscriberFindings(
        subscriber, k, len(released), len(records), min(records.values(), default=0),
        min(sizes.values(), default=0) if named else None, sum(1 for n in sizes.values() if n < k), doubled)


def check(policies: list[SubscriberPolicy], streams: dict[str, list[Released]],
          tallies: dict[str, tuple[int, int, int]]) -> CheckReport:
    """The report over the subscribers read, with each one's tally (released, generalised, suppressed)."""
    k_of = {p.name: p.k for p in policies}
    found = []
    for name, released in streams.items():
        base = findings(name, k_of[name], released)
        done, widened, suppressed = tallies.get(name, (0, 0, 0))
        found.append(replace(base, released=done, generalised=widened, suppressed=suppressed))
    pseudonyms = {n: {r.record["pseudonym"] for r in s if r.record["pseudonym"]} for n, s in streams.items()}
    refs = {n: {r.record["visit_ref"] for r in s} for n, s in streams.items()}
    pairs = list(combinations(sorted(streams), 2))
    return CheckReport(found, {(a, b): len(pseudonyms[a] & pseudonyms[b]) for a, b in pairs},
                       {(a, b): len(refs[a] & refs[b]) for a, b in pairs})
