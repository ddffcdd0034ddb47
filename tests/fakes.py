"""In-memory stand-ins for the ports: the query store, the batch store and the outlets, for unit tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from domain.batch import RejectedDelivery
from domain.book_entry import BookEntry
from domain.consent import AccessEntry, LedgerLine
from domain.rows import VisitRow, WeightedRow
from domain.sensitive_visit import Sensitivity
from healthbook.store import OffsetsMoved
from schemas.outcomes import AccessOutcome, Outcome
from schemas.refusal_codes import RefusalCode
from schemas.visit_record import Visit


@dataclass
class FakeQueryStore:
    """The book by personal ID, and the ledger the query consumer writes: claims, consents, access."""

    book: dict[str, list[BookEntry]] = field(default_factory=dict)
    claims: dict[str, tuple[int, int]] = field(default_factory=dict)
    consents: list[tuple[str, str]] = field(default_factory=list)
    access: list[AccessEntry] = field(default_factory=list)
    fail_reads_with: Exception | None = None  # a bug met reading the book
    fail_reads_of: str | None = None  # ... only when reading this citizen's book

    async def write(self, lines: list[LedgerLine]) -> set[int]:
        """As the one statement does: claims in order, a replay logged refused without consent, all at once."""
        claims = dict(self.claims)
        for line in sorted((line for line in lines if line.claim), key=lambda ln: (ln.claim.request_id,
                                                                                  ln.claim.source[1])):
            claims.setdefault(line.claim.request_id, line.claim.source)
        replayed = {i for i, line in enumerate(lines) if line.claim and claims[line.claim.request_id] !=
                    line.claim.source}
        self.claims = claims
        self.consents += [(line.claim.personal_id, line.claim.request_id) for i, line in enumerate(lines)
                          if line.claim and i not in replayed]
        self.access += [AccessEntry(line.access.request_id, line.access.personal_id, line.claim.requester.year,
                                    AccessOutcome.REFUSED, RefusalCode.REPLAYED_REQUEST) if i in replayed
                        else line.access for i, line in enumerate(lines)]
        return replayed

    def _read(self, personal_id: str) -> list[BookEntry]:
        if self.fail_reads_with is not None and self.fail_reads_of in (None, personal_id):
            raise self.fail_reads_with
        return self.book.get(personal_id, [])

    async def books_of(self, wanted: list[tuple[str, int | None, bool]], judged_under: str | None = None
                       ) -> list[list[BookEntry]]:
        return [[e for e in self._read(personal_id) if year is None or e.record["admitted_at"].startswith(str(year))]
                for personal_id, year, _ in wanted]

    async def details_of(self, wanted: list[tuple[str, str, str]]) -> list[BookEntry | None]:
        return [next((e for e in self._read(personal_id)
                      if (e.record["facility_code"], e.record["visit_code"]) == (facility, visit_code)), None)
                for personal_id, facility, visit_code in wanted]

    async def forget_requests_before(self, before: datetime) -> int:
        return 0


@dataclass
class FakeBatchStore:
    """Applied offsets, book and pending rows, counts and suspect ranges in memory; refuses rows refuse() names."""

    book: dict[tuple[str, str], VisitRow] = field(default_factory=dict)
    pending: dict[tuple[str, str], VisitRow] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    applied: dict[int, int] = field(default_factory=dict)
    suspects: list[tuple[int, int, int]] = field(default_factory=list)
    refuse: Callable[[VisitRow], str | None] = lambda row: None  # PostgreSQL's refusal of a row's values
    fail_on: Callable[[VisitRow], Exception | None] = lambda row: None  # a bug met writing this row
    moved_once: set[int] = field(default_factory=set)  # partitions another worker advances before the next write
    writes: int = 0

    async def applied_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {p: self.applied.get(p, 0) for p in partitions}

    async def write_batch(self, book: list[WeightedRow], pending: list[WeightedRow], counts: Counter[str],
                          topic: str, expected: dict[int, int], advanced: dict[int, int]) -> Counter[str]:
        for partition in sorted(self.moved_once & set(advanced)):
            self.moved_once.discard(partition)
            self.applied[partition] = self.applied.get(partition, 0) + 1
        if any(self.applied.get(p, 0) != expected.get(p, 0) for p in advanced):
            raise OffsetsMoved(f"{topic}: advanced by another worker")
        for weighted in (*book, *pending):
            failure = self.fail_on(weighted.row)
            if failure is not None:
                raise failure
            why = self.refuse(weighted.row)
            if why is not None:
                raise asyncpg.DataError(why)
        counts = Counter(counts)
        for rows, table, outcome in ((book, self.book, Outcome.ACCEPTED), (pending, self.pending, Outcome.PENDING)):
            for weighted in rows:
                key = (weighted.row.facility_code, weighted.row.visit_code)
                held = table.get(key)
                if held is not None and held.version >= weighted.row.version:
                    counts[outcome] -= weighted.messages
                    counts[Outcome.DUPLICATE] += weighted.messages
                else:
                    table[key] = weighted.row
        self.counts.update(counts)
        self.applied.update(advanced)
        self.writes += 1
        return counts

    async def refused_rows(self, rows: list[tuple[VisitRow, bool]]) -> dict[int, str]:
        return {i: why for i, (row, _) in enumerate(rows) if (why := self.refuse(row)) is not None}

    async def versions_of(self, visits: list[tuple[str, str]]) -> list[tuple[str, str, str, int]]:
        return [(f, c, row.personal_id or "", row.version) for f, c in visits if (row := self.book.get((f, c)))]

    async def citizen_versions(self, personal_ids: list[str]) -> list[tuple[str, str, str, int]]:
        return [(f, c, row.personal_id or "", row.version) for (f, c), row in self.book.items()
                if row.personal_id in personal_ids]

    async def record_suspect_batch(self, topic: str, ranges: dict[int, tuple[int, int]], error: str) -> None:
        self.suspects += [(p, first, last) for p, (first, last) in ranges.items()]

    async def clear_suspect_batches(self, topic: str, applied: dict[int, int]) -> None:
        self.suspects = [(p, f, last) for p, f, last in self.suspects if last >= applied.get(p, 0)]


@dataclass
class FakeOutlets:
    """Keeps what would be dead-lettered and sent to analytics."""

    dead: list[RejectedDelivery] = field(default_factory=list)
    analytics: list[Visit] = field(default_factory=list)

    async def dead_letters(self, rejected: list[RejectedDelivery]) -> None:
        self.dead += rejected

    async def deidentified(self, visits: list[tuple[Visit, Sensitivity | None]]) -> None:
        self.analytics += [event for event, _ in visits]

    def reasons(self) -> list[tuple[int, str]]:
        """(offset, reason) of each dead letter, in order."""
        return [(item.delivery.offset, str(item.rejected.code)) for item in self.dead]
