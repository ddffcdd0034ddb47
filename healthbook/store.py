"""The health-book store: all of healthbook's SQL: the worker's writer, the book's reader, the consent ledger.

Both work on one PostgreSQL schema's tables (`public` for the live book); replay writes a whole
book into a schema of its own with the same writer and then swaps its table in.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from domain.consent import LedgerLine
from domain.replies import LIST_FIELDS, SEALED_FIELDS, BookEntry, ClinicSignature
from domain.rows import BOOK_COLUMNS, PENDING_COLUMNS, VisitRow, WeightedRow, resolved_row
from domain.sensitive_visit import Sensitivity
from healthbook.retry import CONTENT_REFUSALS
from schemas.outcomes import AccessOutcome, Outcome
from schemas.refusal_codes import RefusalCode

LIVE = "public"
_TYPES = {
    "version": "bigint", "year": "int", "admitted_at": "timestamp", "discharged_at": "timestamp",
    "record": "jsonb", "sensitive": "jsonb", "signature": "bytea", "signed_at": "timestamptz",
    "source_partition": "int", "source_offset": "bigint", "signed_message": "bytea", "clinic_public_key": "bytea",
    "clinic_certificate": "bytea", "sealed": "boolean",
}
# A row's projected_at is the clock when its transaction wrote it, which commits a moment later: merges look
# back this far before the moment they start from, so no row committed after it is missed.
WRITE_CLOCK_MARGIN = timedelta(minutes=1)
# What a replay rebuilds: the book and everything the batch step writes beside it.
REBUILT_TABLES = ("health_book_visits", "pending_visits", "pipeline_counts", "applied_offsets")


@dataclass(frozen=True)
class PendingRecord:
    """A visit waiting for its card: the stored record and where its message sits on the visits topic."""

    record: dict[str, Any]
    source_partition: int
    source_offset: int


_SIGNED = ("v.facility_code, v.clinic_key_id, v.signed_at, v.signature, v.clinic_public_key, v.clinic_certificate, "
           "v.signed_message")


def _signed(row: asyncpg.Record) -> ClinicSignature | None:
    """The signature columns of a book row; None for a row projected before healthbook kept the key with it."""
    if row["clinic_public_key"] is None:
        return None
    # The database's columns are already of these types: constructed without validation, a tenth of the cost.
    return ClinicSignature.model_construct(
        clinic_code=row["facility_code"], key_id=row["clinic_key_id"], signed_at=row["signed_at"],
        signature=row["signature"], public_key=row["clinic_public_key"], certificate=row["clinic_certificate"],
        signed_message=row["signed_message"])


def _fields_of(fields: tuple[str, ...]) -> str:
    """A JSON object of only these fields of a visit's record, absent ones left out."""
    return "jsonb_strip_nulls(jsonb_build_object(" + ", ".join(f"'{f}', v.record->'{f}'" for f in fields) + "))"


_FIELDS_OF_SEALED, _FIELDS_OF_LISTED = _fields_of(SEALED_FIELDS), _fields_of(LIST_FIELDS)


def _sensitivity(row: asyncpg.Record) -> Sensitivity | None:
    """The judgement stored with a book row; None for a row the worker did not judge on its way in."""
    return None if row["sealed_under"] is None else Sensitivity(row["sealed"], row["sealed_under"])


class _RolledBack(Exception):
    """Raised inside a trial transaction so that it is always rolled back."""


class OffsetsMoved(RuntimeError):
    """Another worker applied part of this batch meanwhile (a rebalance overlap); the batch must be redone."""


def _check_schema(schema: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"schema name {schema!r} must be lower-case letters, digits and underscores")
    return schema


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


class _Tables:
    """The qualified names of one schema's health-book tables."""

    def __init__(self, schema: str = LIVE) -> None:
        self.schema = _check_schema(schema)
        self.visits = f"{schema}.health_book_visits"
        self.pending = f"{schema}.pending_visits"
        self.counts = f"{schema}.pipeline_counts"
        self.offsets = f"{schema}.applied_offsets"

    async def applied_offsets(self, conn: asyncpg.Connection, topic: str, partitions: list[int]) -> dict[int, int]:
        """The next offset to apply per partition (0 where none was applied yet)."""
        rows = await conn.fetch(f"select partition, next_offset from {self.offsets} where topic = $1 "
                                "and partition = any($2::int[])", topic, partitions)
        found = {r["partition"]: r["next_offset"] for r in rows}
        return {p: found.get(p, 0) for p in partitions}

    async def counts_of(self, conn: asyncpg.Connection) -> dict[str, int]:
        """The pipeline's outcome counters."""
        return {r["outcome"]: r["count"] for r in await conn.fetch(f"select outcome, count from {self.counts}")}


class BookWriter(_Tables):
    """Writes batches of visits, pending visits, outcome counts and applied offsets, each batch atomically."""

    def __init__(self, schema: str = LIVE) -> None:
        super().__init__(schema)
        self._book_upsert = upsert_sql(self.visits, BOOK_COLUMNS, "projected_at")
        self._pending_upsert = upsert_sql(self.pending, PENDING_COLUMNS, "received_at")
        self._add_counts = (f"insert into {self.counts} (outcome, count) select * from unnest($1::text[], "
                            f"$2::bigint[]) on conflict (outcome) do update set count = {self.counts}.count "
                            "+ excluded.count")
        self._take_pending = (f"delete from {self.pending} p using unnest($2::text[], $3::text[]) as "
                              "v(facility_code, visit_code) where p.card_number = $1 and p.facility_code = "
                              "v.facility_code and p.visit_code = v.visit_code returning "
                              + ", ".join(f"p.{c}" for c in BOOK_COLUMNS if c != "personal_id"))

    async def write_batch(self, conn: asyncpg.Connection, book: list[WeightedRow], pending: list[WeightedRow],
                          counts: Counter[str], topic: str, expected: dict[int, int],
                          advanced: dict[int, int]) -> Counter[str]:
        """Upsert resolved and pending visits where their version is newer, add the outcome counts and advance
        the applied offsets of the batch's partitions from `expected` to `advanced`, in one transaction.

        A row PostgreSQL already holds at an equal or newer version is not written; its messages are
        counted as duplicates instead. Raises OffsetsMoved, writing nothing, when another worker
        advanced a partition meanwhile. Returns the counts as written.
        """
        counts = Counter(counts)
        async with conn.transaction():
            await self._advance_offsets(conn, topic, expected, advanced)
            stale = await self._upsert(conn, self._book_upsert, BOOK_COLUMNS, book)
            counts[Outcome.ACCEPTED] -= stale
            counts[Outcome.DUPLICATE] += stale
            stale = await self._upsert(conn, self._pending_upsert, PENDING_COLUMNS, pending)
            counts[Outcome.PENDING] -= stale
            counts[Outcome.DUPLICATE] += stale
            await self.add_counts(conn, counts)
        return counts

    async def _upsert(self, conn: asyncpg.Connection, sql: str, columns: list[str], rows: list[WeightedRow]) -> int:
        """Upsert rows; return how many messages they stand for were not applied (stale versions)."""
        if not rows:
            return 0
        applied = {(r["facility_code"], r["visit_code"])
                   for r in await conn.fetch(sql, *[[getattr(w.row, c) for w in rows] for c in columns])}
        return sum(w.messages for w in rows if (w.row.facility_code, w.row.visit_code) not in applied)

    async def add_counts(self, conn: asyncpg.Connection, counts: Counter[str]) -> None:
        """Add outcome counts (negative values subtract)."""
        outcomes = [str(k) for k, v in counts.items() if v]
        if outcomes:
            await conn.execute(self._add_counts, outcomes, [counts[k] for k in outcomes])

    async def _advance_offsets(self, conn: asyncpg.Connection, topic: str, expected: dict[int, int],
                               advanced: dict[int, int]) -> None:
        rows = await conn.fetch(f"select partition, next_offset from {self.offsets} where topic = $1 "
                                "and partition = any($2::int[]) for update", topic, list(advanced))
        current = {r["partition"]: r["next_offset"] for r in rows}
        moved = {p: current.get(p, 0) for p in advanced if current.get(p, 0) != expected.get(p, 0)}
        if moved:
            raise OffsetsMoved(f"{topic} partitions {sorted(moved)} were advanced by another worker to {moved}")
        await conn.execute(
            f"insert into {self.offsets} (topic, partition, next_offset) select $1, * from unnest($2::int[], "
            "$3::bigint[]) on conflict (topic, partition) do update set next_offset = excluded.next_offset",
            topic, list(advanced), list(advanced.values()))

    async def resolve_pending(self, conn: asyncpg.Connection, card_number: str, personal_id: str,
                              visit_keys: list[tuple[str, str]]) -> Counter[str]:
        """Move these visits waiting for this card into the health book as the citizen's, atomically."""
        counts: Counter[str] = Counter()
        async with conn.transaction():
            # Only the visits the caller checked: one written since may contradict the card's citizen.
            taken = await conn.fetch(self._take_pending, card_number, [f for f, _ in visit_keys],
                                     [v for _, v in visit_keys])
            if not taken:
                return counts
            rows = [WeightedRow(resolved_row(dict(found), card_number, personal_id), 1) for found in taken]
            stale = await self._upsert(conn, self._book_upsert, BOOK_COLUMNS, rows)
            counts.update({Outcome.PENDING: -len(rows), Outcome.ACCEPTED: len(rows) - stale,
                           Outcome.DUPLICATE: stale})
            await self.add_counts(conn, counts)
        return counts

    async def pending_records(self, conn: asyncpg.Connection, card_number: str) -> list[PendingRecord]:
        """The stored records (without sensitive tables) of the visits waiting for a card, with their sources."""
        rows = await conn.fetch(f"select record, source_partition, source_offset from {self.pending} "
                                "where card_number = $1", card_number)
        return [PendingRecord(orjson.loads(r["record"]), r["source_partition"], r["source_offset"]) for r in rows]

    async def set_aside_pending(self, conn: asyncpg.Connection, card_number: str, visit_keys: list[tuple[str, str]],
                                outcome: str) -> int:
        """Remove waiting visits that will never join the book, counting them as `outcome` instead of pending."""
        async with conn.transaction():
            removed = await conn.fetch(
                f"delete from {self.pending} p using unnest($2::text[], $3::text[]) as v(facility_code, visit_code) "
                "where p.card_number = $1 and p.facility_code = v.facility_code and p.visit_code = v.visit_code "
                "returning 1", card_number, [f for f, _ in visit_keys], [v for _, v in visit_keys])
            if removed:
                await self.add_counts(conn, Counter({Outcome.PENDING: -len(removed), outcome: len(removed)}))
        return len(removed)

    async def pending_cards(self, conn: asyncpg.Connection) -> list[str]:
        """Cards that visits are waiting for."""
        return [r["card_number"] for r in await conn.fetch(f"select distinct card_number from {self.pending}")]

    async def refused_rows(self, conn: asyncpg.Connection, rows: list[tuple[VisitRow, bool]]) -> dict[int, str]:
        """Which of these rows (each to the book or, when False, to the pending visits) PostgreSQL refuses.

        Found by trying halves inside transactions that are always rolled back, so nothing is written;
        returns the refused rows' indexes and the refusal's name.
        """
        refused: dict[int, str] = {}

        async def attempt(indexes: list[int]) -> None:
            try:
                async with conn.transaction():
                    book = [WeightedRow(rows[i][0], 1) for i in indexes if rows[i][1]]
                    pending = [WeightedRow(rows[i][0], 1) for i in indexes if not rows[i][1]]
                    await self._upsert(conn, self._book_upsert, BOOK_COLUMNS, book)
                    await self._upsert(conn, self._pending_upsert, PENDING_COLUMNS, pending)
                    raise _RolledBack
            except _RolledBack:
                return
            except CONTENT_REFUSALS as exc:
                if len(indexes) == 1:
                    refused[indexes[0]] = f"{type(exc).__name__}, SQLSTATE {getattr(exc, 'sqlstate', None) or '-'}"
                    return
                await attempt(indexes[: len(indexes) // 2])
                await attempt(indexes[len(indexes) // 2:])

        await attempt(list(range(len(rows))))
        return refused

    async def record_suspect_batch(self, conn: asyncpg.Connection | asyncpg.Pool, topic: str,
                                   ranges: dict[int, tuple[int, int]], error: str) -> None:
        """Remember the offsets of a batch the worker failed on with a bug, to isolate it after the restart."""
        await conn.executemany(
            "insert into suspect_batches (topic, partition, first_offset, last_offset, error) values "
            "($1, $2, $3, $4, $5) on conflict do nothing",
            [(topic, partition, first, last, error) for partition, (first, last) in ranges.items()])

    async def suspect_batches(self, conn: asyncpg.Connection | asyncpg.Pool, topic: str) -> list[tuple[int, int, int]]:
        """The recorded suspect ranges of a topic: (partition, first offset, last offset)."""
        rows = await conn.fetch("select partition, first_offset, last_offset from suspect_batches where topic = $1",
                                topic)
        return [(r["partition"], r["first_offset"], r["last_offset"]) for r in rows]

    async def clear_suspect_batches(self, conn: asyncpg.Connection | asyncpg.Pool, topic: str,
                                    applied: dict[int, int]) -> None:
        """Forget the suspect ranges every message of which has now been applied or dead-lettered."""
        await conn.execute(
            "delete from suspect_batches s using unnest($2::int[], $3::bigint[]) as a(partition, next_offset) "
            "where s.topic = $1 and s.partition = a.partition and s.last_offset < a.next_offset",
            topic, list(applied), list(applied.values()))

    async def versions_of(self, conn: asyncpg.Connection | asyncpg.Pool,
                          visits: list[tuple[str, str]]) -> list[tuple[str, str, str, int]]:
        """(facility code, visit code, personal ID, version) of those of these visits the book holds."""
        rows = await conn.fetch(
            f"select v.facility_code, v.visit_code, v.personal_id, v.version from {self.visits} v "
            "join unnest($1::text[], $2::text[]) as k(facility_code, visit_code) using (facility_code, visit_code)",
            [f for f, _ in visits], [c for _, c in visits])
        return [(r["facility_code"], r["visit_code"], r["personal_id"], r["version"]) for r in rows]

    async def citizen_versions(self, conn: asyncpg.Connection | asyncpg.Pool,
                               personal_ids: list[str]) -> list[tuple[str, str, str, int]]:
        """(facility code, visit code, personal ID, version) of every visit the book holds for these citizens."""
        rows = await conn.fetch(f"select facility_code, visit_code, personal_id, version from {self.visits} "
                                "where personal_id = any($1::text[])", personal_ids)
        return [(r["facility_code"], r["visit_code"], r["personal_id"], r["version"]) for r in rows]

    async def record_error(self, conn: asyncpg.Connection | asyncpg.Pool, worker_id: str, message: str) -> None:
        """Keep the worker's last error where 'healthbook status' shows it."""
        await conn.execute("insert into worker_errors (worker_id, message) values ($1, $2)", worker_id, message)



class PostgresBatchStore:
    """The batch step's store: the writer's statements, each on a pooled connection."""

    def __init__(self, pool: asyncpg.Pool, writer: BookWriter) -> None:
        self.pool, self.writer = pool, writer

    async def applied_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Each partition's next offset to apply."""
        async with self.pool.acquire() as conn:
            return await self.writer.applied_offsets(conn, topic, partitions)

    async def write_batch(self, book: list[WeightedRow], pending: list[WeightedRow], counts: Counter[str],
                          topic: str, expected: dict[int, int], advanced: dict[int, int]) -> Counter[str]:
        """Write one batch atomically with its offsets (BookWriter.write_batch)."""
        async with self.pool.acquire() as conn:
            return await self.writer.write_batch(conn, book, pending, counts, topic, expected, advanced)

    async def refused_rows(self, rows: list[tuple[VisitRow, bool]]) -> dict[int, str]:
        """Which rows PostgreSQL refuses, writing nothing (BookWriter.refused_rows)."""
        async with self.pool.acquire() as conn:
            return await self.writer.refused_rows(conn, rows)

    async def versions_of(self, visits: list[tuple[str, str]]) -> list[tuple[str, str, str, int]]:
        """The book's versions of these visits."""
        return await self.writer.versions_of(self.pool, visits)

    async def citizen_versions(self, personal_ids: list[str]) -> list[tuple[str, str, str, int]]:
        """The book's versions of every visit of these citizens."""
        return await self.writer.citizen_versions(self.pool, personal_ids)

    async def record_suspect_batch(self, topic: str, ranges: dict[int, tuple[int, int]], error: str) -> None:
        """Remember a batch the step failed on with a bug."""
        await self.writer.record_suspect_batch(self.pool, topic, ranges, error)

    async def clear_suspect_batches(self, topic: str, applied: dict[int, int]) -> None:
        """Forget suspect ranges now wholly applied."""
        await self.writer.clear_suspect_batches(self.pool, topic, applied)

class BookReader(_Tables):
    """Reads a citizen's year or one visit, and reports on the pipeline; it writes nothing."""

    async def books_of(self, conn: asyncpg.Connection, wanted: list[tuple[str, int | None, bool]],
                       judged_under: str | None = None) -> list[list[BookEntry]]:
        """Several citizens' years (every year when None) in one query, each oldest first, in the order asked.

        Each wanted item is (personal ID, year, whole): a whole visit (its full record and signed envelope,
        for a FHIR Bundle) is read only where the answer carries it. Otherwise a visit judged under the
        policy `judged_under` is read as only what its list row shows, and a sealed one as only its dates
        and place; one judged under other lists, or never, is read whole to be judged again.
        """
        rows = await conn.fetch(
            f"select w.i, case when w.whole or v.sealed_under is distinct from $4 then v.record "
            f"when v.sealed then {_FIELDS_OF_SEALED} else {_FIELDS_OF_LISTED} end as record, "
            f"v.facility_code, v.clinic_key_id, v.signed_at, v.signature, v.clinic_public_key, "
            f"v.clinic_certificate, case when w.whole then v.signed_message end as signed_message, "
            f"v.sensitive <> '[]'::jsonb as has_sensitive, v.sealed, v.sealed_under "
            f"from unnest($1::text[], $2::int[], $3::bool[]) with ordinality as w(personal_id, year, whole, i) "
            f"join {self.visits} v on v.personal_id = w.personal_id and (w.year is null or v.year = w.year) "
            f"order by w.i, v.admitted_at, v.facility_code, v.visit_code",
            [p for p, _, _ in wanted], [y for _, y, _ in wanted], [e for _, _, e in wanted], judged_under)
        books: list[list[BookEntry]] = [[] for _ in wanted]
        for row in rows:
            books[row["i"] - 1].append(BookEntry(orjson.loads(row["record"]), _signed(row), row["has_sensitive"],
                                                 sensitivity=_sensitivity(row)))
        return books

    async def details_of(self, conn: asyncpg.Connection, wanted: list[tuple[str, str, str]]) -> list[BookEntry | None]:
        """Several visits in full (personal ID, facility, visit code), each None when it is not that citizen's."""
        rows = await conn.fetch(
            f"select w.i, v.record, v.sensitive, {_SIGNED} "
            f"from unnest($1::text[], $2::text[], $3::text[]) with ordinality as w(personal_id, facility_code, "
            f"visit_code, i) join {self.visits} v on v.facility_code = w.facility_code "
            f"and v.visit_code = w.visit_code and v.personal_id = w.personal_id",
            [p for p, _, _ in wanted], [f for _, f, _ in wanted], [c for _, _, c in wanted])
        found: list[BookEntry | None] = [None] * len(wanted)
        for row in rows:
            sensitive = orjson.loads(row["sensitive"])
            found[row["i"] - 1] = BookEntry(orjson.loads(row["record"]), _signed(row), bool(sensitive), sensitive)
        return found

    async def row_count(self, conn: asyncpg.Connection) -> int:
        """How many visits the health book holds."""
        return await conn.fetchval(f"select count(*) from {self.visits}")

    async def pending_count(self, conn: asyncpg.Connection) -> int:
        """How many visits wait for their BHYT card to be mapped."""
        return await conn.fetchval(f"select count(*) from {self.pending}")

    async def last_error(self, conn: asyncpg.Connection) -> dict[str, Any] | None:
        """The worker's last recorded error."""
        row = await conn.fetchrow("select at, worker_id, message from worker_errors order by id desc limit 1")
        return dict(row) if row else None



class ConsentLedger:
    """The query side's writes: each citizen's consent, each request id claimed once, and every access logged."""

    async def write(self, conn: asyncpg.Connection, lines: list[LedgerLine]) -> set[int]:
        """A batch's claims, consents and access lines in one statement, so in one transaction and one round trip.

        Returns the indexes of the lines whose request id another record holds (a replay): they are
        logged refused as replayed and get no consent. Ids are claimed in order, so batches never
        deadlock; an id claimed by a transaction that committed after this statement's snapshot counts
        as held by that one.
        """
        claims = [line.claim for line in lines]
        rows = await conn.fetch(
            "with lines as (select * from unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], "
            "$6::int[], $7::int[], $8::int[], $9::bigint[], $10::timestamptz[]) with ordinality as l(request_id, "
            "personal_id, year, outcome, refusal_code, visits, replay_year, source_partition, source_offset, "
            "requested_at, i)), "
            "claimed as (insert into served_requests (request_id, source_partition, source_offset, requested_at) "
            "select request_id, source_partition, source_offset, requested_at from lines "
            "where requested_at is not null order by request_id, source_offset "
            "on conflict (request_id) do nothing returning request_id, source_partition, source_offset), "
            "holders as (select request_id, source_partition, source_offset from claimed union all "
            "select request_id, source_partition, source_offset from served_requests where request_id = any("
            "array(select request_id from lines where requested_at is not null))), "
            "judged as (select l.*, l.requested_at is not null and not exists (select 1 from holders h "
            "where h.request_id = l.request_id and h.source_partition = l.source_partition "
            "and h.source_offset = l.source_offset) as replayed from lines l), "
            "consented as (insert into consents (personal_id, confirmed_at, request_id) "
            "select personal_id, requested_at, request_id from judged where requested_at is not null "
            "and not replayed order by personal_id, requested_at on conflict (personal_id) do nothing), "
            "logged as (insert into access_log (request_id, personal_id, year, outcome, refusal_code, visits) "
            "select request_id, personal_id, case when replayed then replay_year else year end, "
            "case when replayed then $11 else outcome end, case when replayed then $12 else refusal_code end, "
            "case when replayed then 0 else visits end from judged order by i) "
            "select i from judged where replayed",
            [line.access.request_id for line in lines], [line.access.personal_id for line in lines],
            [line.access.year for line in lines], [str(line.access.outcome) for line in lines],
            [None if line.access.refusal_code is None else str(line.access.refusal_code) for line in lines],
            [line.access.visits for line in lines], [c and c.requester.year for c in claims],
            [c and c.source[0] for c in claims], [c and c.source[1] for c in claims],
            [c and c.requested_at for c in claims], str(AccessOutcome.REFUSED), str(RefusalCode.REPLAYED_REQUEST))
        return {row["i"] - 1 for row in rows}

    async def forget_requests_before(self, conn: asyncpg.Connection | asyncpg.Pool, before: Any) -> int:
        """Drop served request ids dated before a moment no request can be fresh at any more."""
        done = await conn.execute("delete from served_requests where requested_at < $1", before)
        return int(done.split()[-1])



class PostgresQueryStore:
    """The query consumer's store: reads side by side on pooled connections, a batch's ledger in one statement."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.book, self.ledger = pool, BookReader(), ConsentLedger()

    async def write(self, lines: list[LedgerLine]) -> set[int]:
        """A batch's claims, consents and access lines, committed at once (ConsentLedger.write)."""
        async with self.pool.acquire() as conn:
            return await self.ledger.write(conn, lines)

    async def books_of(self, wanted: list[tuple[str, int | None, bool]], judged_under: str | None = None
                       ) -> list[list[BookEntry]]:
        """Citizens' years (BookReader.books_of) on a pooled connection."""
        async with self.pool.acquire() as conn:
            return await self.book.books_of(conn, wanted, judged_under)

    async def details_of(self, wanted: list[tuple[str, str, str]]) -> list[BookEntry | None]:
        """Visits in full (BookReader.details_of) on a pooled connection."""
        async with self.pool.acquire() as conn:
            return await self.book.details_of(conn, wanted)

    async def forget_requests_before(self, before: Any) -> int:
        """Drop served request ids too old to be fresh again."""
        return await self.ledger.forget_requests_before(self.pool, before)


class RedriveLedger:
    """Which dead letters an operator re-drove, and where their messages went."""

    async def retried_dead_letters(self, conn: asyncpg.Connection | asyncpg.Pool) -> set[tuple[int, int]]:
        """The dead-letter records already re-driven, by dead-letter partition and offset."""
        return {(r["dlq_partition"], r["dlq_offset"]) for r in await conn.fetch("select * from dlq_retries")}

    async def record_retry(self, conn: asyncpg.Connection | asyncpg.Pool, dead_letter: tuple[int, int],
                           visit: tuple[int, int]) -> None:
        """Remember that a dead letter was re-driven, and where its message went."""
        await conn.execute("insert into dlq_retries (dlq_partition, dlq_offset, visits_partition, visits_offset) "
                           "values ($1, $2, $3, $4)", *dead_letter, *visit)


async def create_rebuild(conn: asyncpg.Connection, schema: str) -> None:
    """An empty copy of the live book's tables in a schema of its own (dropped first if a replay left it)."""
    await conn.execute(f"drop schema if exists {_check_schema(schema)} cascade")
    await conn.execute(f"create schema {schema}")
    for table in REBUILT_TABLES:
        await conn.execute(f"create table {schema}.{table} (like {LIVE}.{table} including all)")


async def database_now(conn: asyncpg.Connection) -> datetime:
    """The database's clock, by which rows' projected_at are written."""
    return await conn.fetchval("select clock_timestamp()")


async def swap_in_rebuild(conn: asyncpg.Connection, schema: str, since: datetime) -> tuple[int, float]:
    """Merge rows the worker wrote since `since` into the rebuilt book (higher version wins), swap it in.

    Rows written before `since` came from messages the rebuild itself read. The merge runs twice: once
    while the worker keeps writing, then under the lock for only what it wrote during the first, so the
    worker is blocked for the few rows of the last moments rather than for a scan of the whole book.
    Only the book is swapped: the live counters, offsets and pending visits keep describing what the
    running worker did. Returns how many rows came from the live book, and how many seconds the live
    book was locked (the longest any write of the worker waited).
    """
    rebuilt = f"{_check_schema(schema)}.health_book_visits"
    updates = ", ".join(f"{c} = excluded.{c}" for c in BOOK_COLUMNS[2:])

    async def merge_written_since(moment: datetime) -> int:
        merged = await conn.fetch(
            f"insert into {rebuilt} select * from {LIVE}.health_book_visits where projected_at >= $1 "
            f"on conflict (facility_code, visit_code) do update set {updates}, projected_at = excluded.projected_at "
            f"where {rebuilt}.version < excluded.version returning 1", moment)
        return len(merged)

    second_since = await database_now(conn) - WRITE_CLOCK_MARGIN
    merged = await merge_written_since(since)
    async with conn.transaction():
        await conn.execute(f"lock table {LIVE}.health_book_visits in exclusive mode")
        locked_at = time.perf_counter()
        merged += await merge_written_since(second_since)
        await conn.execute(f"drop table {LIVE}.health_book_visits")
        await conn.execute(f"alter table {rebuilt} set schema {LIVE}")
        await conn.execute(f"drop schema {schema} cascade")
    return merged, time.perf_counter() - locked_at


async def drop_rebuild(conn: asyncpg.Connection, schema: str) -> None:
    """Remove a rebuild that will not be swapped in."""
    await conn.execute(f"drop schema if exists {_check_schema(schema)} cascade")


# The newest registry revision a worker applied per card and per clinic key, kept across restarts.
IDENTITY_CARDS = "identity_cards"
CLINIC_KEYS = "clinic_keys"


async def load_marks(conn: asyncpg.Connection, registry: str) -> dict[str, int]:
    """Every kept revision of one registry: record key -> epoch milliseconds."""
    rows = await conn.fetch("select record_key, revision from registry_marks where registry = $1", registry)
    return {row["record_key"]: row["revision"] for row in rows}


async def save_marks(conn: asyncpg.Connection, registry: str, marks: dict[str, int]) -> None:
    """Keep revisions; a kept one only ever rises."""
    if marks:
        await conn.executemany(
            "insert into registry_marks (registry, record_key, revision) values ($1, $2, $3) "
            "on conflict (registry, record_key) do update set revision = greatest(registry_marks.revision, "
            "excluded.revision)", [(registry, key, revision) for key, revision in marks.items()])
