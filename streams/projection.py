"""The projection of accepted visits into the PostgreSQL health book: rows, one batched upsert per table, counters."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import rules
from schemas.visit import VisitEvent
from streams.validation import Accepted


@dataclass(frozen=True)
class VisitRow:
    """One visit as stored: in the health book once its person is known, else among the pending visits."""

    facility_code: str
    visit_code: str
    personal_id: str | None
    card_number: str
    version: int
    event_id: str
    year: int
    admitted_at: datetime
    discharged_at: datetime
    record: str
    sensitive: str
    clinic_key_id: str
    signature: bytes
    signed_at: datetime
    source_partition: int
    source_offset: int

    @property
    def visit_key(self) -> str:
        """facility code / MA_LK."""
        return f"{self.facility_code}/{self.visit_code}"


def visit_row(accepted: Accepted, partition: int, offset: int, event: VisitEvent | None = None) -> VisitRow:
    """The row an accepted visit becomes; event overrides the accepted one once its person is resolved."""
    event = event or accepted.event
    return VisitRow(
        facility_code=event.facility_code,
        visit_code=event.visit_code,
        personal_id=event.personal_id,
        card_number=event.card_number,
        version=event.version,
        event_id=event.event_id,
        year=event.year,
        admitted_at=rules.parse_minute(event.admitted_at),
        discharged_at=rules.parse_minute(event.discharged_at),
        record=event.model_dump_json(exclude={"sensitive"}),
        sensitive=json.dumps([d.model_dump() for d in event.sensitive], ensure_ascii=False),
        clinic_key_id=accepted.key_id,
        signature=accepted.signature,
        signed_at=datetime.fromtimestamp(accepted.signed_at_ms / 1000, UTC),
        source_partition=partition,
        source_offset=offset,
    )


_TYPES = {
    "version": "bigint", "year": "int", "admitted_at": "timestamp", "discharged_at": "timestamp",
    "record": "jsonb", "sensitive": "jsonb", "signature": "bytea", "signed_at": "timestamptz",
    "source_partition": "int", "source_offset": "bigint",
}
_ALL = list(VisitRow.__dataclass_fields__)
BOOK_COLUMNS = [c for c in _ALL if c != "card_number"]
PENDING_COLUMNS = [c for c in _ALL if c != "personal_id"]


def upsert_sql(table: str, columns: list[str], stamp: str) -> str:
    """A batched upsert (one array per column) that writes only rows whose version is newer."""
    arrays = ", ".join(f"${i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(columns, 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
    return f"""
insert into {table} ({", ".join(columns)}, {stamp})
select *, clock_timestamp() from unnest({arrays})
on conflict (facility_code, visit_code) do update set {updates}, {stamp} = clock_timestamp()
where {table}.version < excluded.version
returning facility_code, visit_code
"""


_BOOK_UPSERT = upsert_sql("health_book_visits", BOOK_COLUMNS, "projected_at")
_PENDING_UPSERT = upsert_sql("pending_visits", PENDING_COLUMNS, "received_at")
_COUNT = """
insert into pipeline_counts (outcome, count) select * from unnest($1::text[], $2::bigint[])
on conflict (outcome) do update set count = pipeline_counts.count + excluded.count
"""
_TAKE_PENDING = f"""
delete from pending_visits where card_number = $1
returning {", ".join(c for c in BOOK_COLUMNS if c != "personal_id")}
"""


async def _upsert_rows(conn: asyncpg.Connection, sql: str, columns: list[str],
                       rows: list[tuple[VisitRow, int]]) -> int:
    """Upsert rows (each standing for `weight` messages); return how many messages were not applied."""
    if not rows:
        return 0
    applied = {(r["facility_code"], r["visit_code"])
               for r in await conn.fetch(sql, *[[getattr(row, c) for row, _ in rows] for c in columns])}
    return sum(weight for row, weight in rows if (row.facility_code, row.visit_code) not in applied)


async def add_counts(conn: asyncpg.Connection, counts: Counter[str]) -> None:
    """Add outcome counts (negative values subtract)."""
    outcomes = [k for k, v in counts.items() if v]
    if outcomes:
        await conn.execute(_COUNT, outcomes, [counts[k] for k in outcomes])


class OffsetsMoved(RuntimeError):
    """Another worker applied part of this batch meanwhile (a rebalance overlap); the batch must be redone."""


async def applied_offsets(conn: asyncpg.Connection, topic: str, partitions: list[int]) -> dict[int, int]:
    """The next offset to apply per partition (0 where none was applied yet)."""
    rows = await conn.fetch("select partition, next_offset from applied_offsets where topic = $1 "
                            "and partition = any($2::int[])", topic, partitions)
    found = {r["partition"]: r["next_offset"] for r in rows}
    return {p: found.get(p, 0) for p in partitions}


async def _advance_offsets(conn: asyncpg.Connection, topic: str, expected: dict[int, int],
                           advanced: dict[int, int]) -> None:
    rows = await conn.fetch("select partition, next_offset from applied_offsets where topic = $1 "
                            "and partition = any($2::int[]) for update", topic, list(advanced))
    current = {r["partition"]: r["next_offset"] for r in rows}
    moved = {p: current.get(p, 0) for p in advanced if current.get(p, 0) != expected.get(p, 0)}
    if moved:
        raise OffsetsMoved(f"{topic} partitions {sorted(moved)} were advanced by another worker to {moved}")
    await conn.execute(
        "insert into applied_offsets (topic, partition, next_offset) select $1, * from unnest($2::int[], $3::bigint[]) "
        "on conflict (topic, partition) do update set next_offset = excluded.next_offset",
        topic, list(advanced), list(advanced.values()))


async def write_batch(conn: asyncpg.Connection, book: list[tuple[VisitRow, int]], pending: list[tuple[VisitRow, int]],
                      counts: Counter[str], topic: str, expected: dict[int, int],
                      advanced: dict[int, int]) -> Counter[str]:
    """Upsert resolved and pending visits where their version is newer, add the outcome counts and advance the
    applied offsets of the batch's partitions from `expected` to `advanced`, all in one transaction.

    Each row has a distinct (facility_code, visit_code) and stands for `weight` messages. A row
    PostgreSQL already holds at an equal or newer version is not written; its messages are counted
    as duplicates instead. Raises OffsetsMoved, writing nothing, when another worker advanced a
    partition meanwhile. Returns the counts as written.
    """
    counts = Counter(counts)
    async with conn.transaction():
        await _advance_offsets(conn, topic, expected, advanced)
        stale = await _upsert_rows(conn, _BOOK_UPSERT, BOOK_COLUMNS, book)
        counts["accepted"] -= stale
        counts["duplicate"] += stale
        stale = await _upsert_rows(conn, _PENDING_UPSERT, PENDING_COLUMNS, pending)
        counts["pending"] -= stale
        counts["duplicate"] += stale
        await add_counts(conn, counts)
    return counts


async def resolve_pending(conn: asyncpg.Connection, card_number: str, personal_id: str) -> Counter[str]:
    """Move the visits waiting for this card into the health book as the citizen's, atomically."""
    counts: Counter[str] = Counter()
    async with conn.transaction():
        taken = await conn.fetch(_TAKE_PENDING, card_number)
        if not taken:
            return counts
        rows = []
        for found in taken:
            record = json.loads(found["record"])
            record["patient"]["personal_id"] = personal_id
            values = dict(found, personal_id=personal_id, card_number=card_number,
                          record=json.dumps(record, ensure_ascii=False))
            rows.append((VisitRow(**{c: values[c] for c in _ALL}), 1))
        stale = await _upsert_rows(conn, _BOOK_UPSERT, BOOK_COLUMNS, rows)
        counts.update({"pending": -len(rows), "accepted": len(rows) - stale, "duplicate": stale})
        await add_counts(conn, counts)
    return counts


async def pending_records(conn: asyncpg.Connection, card_number: str) -> list[dict[str, Any]]:
    """The stored records (without sensitive tables) of the visits waiting for a card."""
    rows = await conn.fetch("select record from pending_visits where card_number = $1", card_number)
    return [json.loads(r["record"]) for r in rows]


async def pending_cards(conn: asyncpg.Connection) -> list[str]:
    """Cards that visits are waiting for."""
    return [r["card_number"] for r in await conn.fetch("select distinct card_number from pending_visits")]


async def read_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """The pipeline's outcome counters."""
    return {r["outcome"]: r["count"] for r in await conn.fetch("select outcome, count from pipeline_counts")}
