"""The projection of accepted visits into the PostgreSQL health book: rows, one batched upsert, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from schemas import rules
from streams.validation import Accepted


@dataclass(frozen=True)
class VisitRow:
    """One health-book row, in column order of the upsert."""

    facility_code: str
    visit_code: str
    personal_id: str
    version: int
    event_id: str
    year: int
    admitted_at: datetime
    discharged_at: datetime
    record: str
    clinic_key_id: str
    signature: bytes
    signed_at: datetime
    source_partition: int
    source_offset: int


def visit_row(accepted: Accepted, partition: int, offset: int) -> VisitRow:
    """The row an accepted visit becomes."""
    event = accepted.event
    return VisitRow(
        facility_code=event.facility_code,
        visit_code=event.visit_code,
        personal_id=event.personal_id,
        version=event.version,
        event_id=event.event_id,
        year=event.year,
        admitted_at=rules.parse_minute(event.admitted_at),
        discharged_at=rules.parse_minute(event.discharged_at),
        record=event.model_dump_json(),
        clinic_key_id=accepted.key_id,
        signature=accepted.signature,
        signed_at=datetime.fromtimestamp(accepted.signed_at_ms / 1000, UTC),
        source_partition=partition,
        source_offset=offset,
    )


_COLUMNS = list(VisitRow.__dataclass_fields__)
_TYPES = {
    "version": "bigint",
    "year": "int",
    "admitted_at": "timestamp",
    "discharged_at": "timestamp",
    "record": "jsonb",
    "signature": "bytea",
    "signed_at": "timestamptz",
    "source_partition": "int",
    "source_offset": "bigint",
}
_ARRAYS = ", ".join(f"${i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(_COLUMNS, 1))
_UPSERT = f"""
insert into health_book_visits ({", ".join(_COLUMNS)}, projected_at)
select *, clock_timestamp() from unnest({_ARRAYS})
on conflict (facility_code, visit_code) do update set
    {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])}, projected_at = clock_timestamp()
where health_book_visits.version < excluded.version
returning facility_code, visit_code
"""

_COUNT = """
insert into pipeline_counts (outcome, count) select * from unnest($1::text[], $2::bigint[])
on conflict (outcome) do update set count = pipeline_counts.count + excluded.count
"""


async def write_batch(
    conn: asyncpg.Connection, rows: list[VisitRow], weights: list[int], counts: Counter[str]
) -> Counter[str]:
    """Upsert rows where their version is newer and add the outcome counts, in one transaction.

    Rows must have distinct (facility_code, visit_code); weights[i] is how many accepted
    messages row i stands for. A row PostgreSQL already holds at an equal or newer version
    is not written, and its messages are counted as duplicates instead of accepted.
    Returns the counts as written.
    """
    counts = Counter(counts)
    async with conn.transaction():
        if rows:
            columns = [[getattr(row, c) for row in rows] for c in _COLUMNS]
            applied = {(r["facility_code"], r["visit_code"]) for r in await conn.fetch(_UPSERT, *columns)}
            stale = sum(
                w for row, w in zip(rows, weights, strict=True) if (row.facility_code, row.visit_code) not in applied
            )
            counts["accepted"] -= stale
            counts["duplicate"] += stale
        outcomes = [k for k, v in counts.items() if v]
        if outcomes:
            await conn.execute(_COUNT, outcomes, [counts[k] for k in outcomes])
    return counts


async def read_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """The pipeline's outcome counters."""
    return {r["outcome"]: r["count"] for r in await conn.fetch("select outcome, count from pipeline_counts")}
