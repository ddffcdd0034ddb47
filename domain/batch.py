"""The worker's decision for one batch, pure: rejected, fresh, duplicate or waiting for a card, and the counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from domain import dedup
from domain.identity import IdentityDirectory, Mismatch, WaitingForCard, resolve
from domain.rows import VisitRow, WeightedRow, latest, visit_row
from domain.validation import Accepted, Rejected
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.outcomes import Outcome, rejected
from schemas.visit_record import Visit


@dataclass(frozen=True)
class Delivery:
    """One message as read from a topic: where it sits, when it was written, its key and bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    retry_of: tuple[int, int] | None = None


@dataclass(frozen=True)
class RejectedDelivery:
    """A message that goes to the dead-letter topic, and why."""

    delivery: Delivery
    rejected: Rejected


@dataclass(frozen=True)
class Owned:
    """An accepted visit whose citizen is known (from its own SO_CCCD, or from its card's mapping)."""

    delivery: Delivery
    accepted: Accepted
    event: Visit
    from_card: bool

    def row(self) -> VisitRow:
        """Its health-book row."""
        return visit_row(self.accepted, self.delivery.partition, self.delivery.offset, self.event)


@dataclass(frozen=True)
class VisitWaitingForCard:
    """An accepted visit without a personal ID whose card is not mapped yet."""

    delivery: Delivery
    accepted: Accepted

    def row(self) -> VisitRow:
        """Its pending-visits row."""
        return visit_row(self.accepted, self.delivery.partition, self.delivery.offset)


@dataclass
class BatchPlan:
    """What one batch does: dead letters, fresh visits, waiting visits, duplicates, and the dedup table's updates."""

    deliveries: int
    rejected: list[RejectedDelivery] = field(default_factory=list)
    fresh: list[Owned] = field(default_factory=list)
    waiting: list[VisitWaitingForCard] = field(default_factory=list)
    duplicates: int = 0
    versions: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        """Outcome counts: consumed = accepted + duplicate + pending + rejected by reason."""
        counts: Counter[str] = Counter({Outcome.CONSUMED: self.deliveries})
        counts.update(rejected(r.rejected.code) for r in self.rejected)
        counts[Outcome.DUPLICATE] += self.duplicates
        counts[Outcome.ACCEPTED] += len(self.fresh)
        counts[Outcome.PENDING] += len(self.waiting)
        return counts

    def book_rows(self) -> list[WeightedRow]:
        """The fresh visits' rows, one per visit."""
        return latest(item.row() for item in self.fresh)

    def pending_rows(self) -> list[WeightedRow]:
        """The waiting visits' rows, one per visit."""
        return latest(item.row() for item in self.waiting)

    def rows_to_write(self) -> list[tuple[VisitRow, bool]]:
        """Each fresh and waiting visit's row, in that order, marked True when it goes to the book (else pending)."""
        return [(item.row(), True) for item in self.fresh] + [(item.row(), False) for item in self.waiting]

    def without(self, refused: dict[int, str], table: Callable[[str], dict[str, int] | None]) -> BatchPlan:
        """This plan with the rows PostgreSQL refuses dead-lettered instead, their dedup updates undone.

        refused maps an index into rows_to_write() to the name of PostgreSQL's refusal; table gives the
        versions the dedup table held before this batch, to which a refused visit's entry returns.
        """
        items: list[Owned | VisitWaitingForCard] = [*self.fresh, *self.waiting]
        versions = {person: dict(known) for person, known in self.versions.items()}
        letters = []
        for index, why in sorted(refused.items()):
            item = items[index]
            event = item.accepted.event
            letters.append(RejectedDelivery(item.delivery, Rejected(
                DeadLetterReason.REFUSED_BY_DATABASE, f"PostgreSQL refused this visit's values ({why}); the clinic "
                "must correct the record", [], event.facility_code, event.event_id)))
            person = event.personal_id or ""
            if person in versions:
                before = (table(person) or {}).get(event.visit_key)
                if before is None:
                    versions[person].pop(event.visit_key, None)
                else:
                    versions[person][event.visit_key] = before
        kept = [item for index, item in enumerate(items) if index not in refused]
        return replace(self, rejected=[*self.rejected, *letters], versions=versions,
                       fresh=[i for i in kept if isinstance(i, Owned)],
                       waiting=[i for i in kept if isinstance(i, VisitWaitingForCard)])

    def versions_to_remember(self) -> dict[str, dict[str, int]]:
        """The dedup table entries to set once the book holds the fresh visits."""
        people = {item.event.personal_id for item in self.fresh}
        return {person: versions for person, versions in self.versions.items() if person in people}


def plan_batch(deliveries: Sequence[Delivery], verdicts: Sequence[Accepted | Rejected],
               identity: IdentityDirectory, seen: Callable[[str], dict[str, int]]) -> BatchPlan:
    """Decide a batch: resolve whose each accepted visit is, then deduplicate in order against `seen`."""
    plan = BatchPlan(len(deliveries))
    owned: list[Owned] = []
    for delivery, verdict in zip(deliveries, verdicts, strict=True):
        if isinstance(verdict, Rejected):
            plan.rejected.append(RejectedDelivery(delivery, verdict))
            continue
        whose = resolve(verdict.event, identity)
        if isinstance(whose, Mismatch):
            plan.rejected.append(RejectedDelivery(delivery, whose.rejected(verdict.event.facility_code,
                                                                          verdict.event.event_id)))
        elif isinstance(whose, WaitingForCard):
            plan.waiting.append(VisitWaitingForCard(delivery, verdict))
        else:
            owned.append(Owned(delivery, verdict, whose.event, whose.from_card))
    _deduplicate(plan, owned, seen)
    return plan


def _deduplicate(plan: BatchPlan, owned: list[Owned], seen: Callable[[str], dict[str, int]]) -> None:
    # Visits resolved from a card are placed by their card, not their person: the version guard in
    # PostgreSQL deduplicates them instead of the person-partitioned table.
    by_person = [item for item in owned if not item.from_card]
    decisions, plan.versions = dedup.plan(
        (dedup.Candidate(item.event.personal_id or "", item.event.visit_key, item.event.version) for item in by_person),
        seen,
    )
    plan.fresh = [item for item, d in zip(by_person, decisions, strict=True) if d is not dedup.Freshness.DUPLICATE]
    plan.duplicates = len(by_person) - len(plan.fresh)
    plan.fresh += [item for item in owned if item.from_card]
