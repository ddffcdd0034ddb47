"""healthbook replay: run the visits topic from its beginning through the worker's batch step into new tables, swap.

The rebuild deduplicates, dead-letters (counting only: the live worker already sent them) and
keeps visits waiting for a card exactly as the worker does, into a PostgreSQL schema of its own;
then the rebuilt book is swapped in while citizens' queries keep being answered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from domain.batch import Delivery
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from healthbook import kafka
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.store import (
    CLINIC_KEYS,
    IDENTITY_CARDS,
    WRITE_CLOCK_MARGIN,
    BookReader,
    BookWriter,
    PostgresBatchStore,
    create_rebuild,
    database_now,
    drop_rebuild,
    load_marks,
    swap_in_rebuild,
)
from healthbook.topic_follower import TopicFollower
from streams.batch_step import BatchStep, Checks, delivery_of_record, topic_range_reader
from streams.outlets import NoOutlets

REBUILD_SCHEMA = "replay_rebuild"
BATCH = 1_000
# About 30 MiB of versions (measured: 1,000,000 visits of 100,000 citizens held whole took 130 MiB more);
# misses are looked up in the rebuilt book.
RECENT_VISITS = 200_000


class RateColumn(ProgressColumn):
    """Messages per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} msg/s")


@dataclass
class ReplayReport:
    """What the rebuild read and wrote."""

    messages: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    merged_from_live: int = 0
    rows: int = 0
    locked_seconds: float = 0.0  # the live book locked for the last merge and the swap


class RecentVersions:
    """The replay's deduplication table: the versions of the citizens met most recently, the rest in the book.

    The batch step looks up in the (rebuilt) book whatever the table does not hold, so a bounded table
    decides the same and keeps the replay's memory flat however many citizens and visits the topic holds.
    It is bounded by visits, not citizens: a citizen with many visits holds many versions.
    """

    def __init__(self, visits: int = RECENT_VISITS) -> None:
        self.visits = visits
        self._versions: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._held = 0

    def __len__(self) -> int:
        return len(self._versions)

    def get(self, personal_id: str) -> dict[str, int] | None:
        found = self._versions.get(personal_id)
        if found is not None:
            self._versions.move_to_end(personal_id)
        return found

    def __setitem__(self, personal_id: str, versions: dict[str, int]) -> None:
        self._held += len(versions) - len(self._versions.get(personal_id, ()))
        self._versions[personal_id] = versions
        self._versions.move_to_end(personal_id)
        while self._held > self.visits and len(self._versions) > 1:
            _, dropped = self._versions.popitem(last=False)
            self._held -= len(dropped)


async def rebuild(settings: Settings, broker: kafka.Broker, schema: str = REBUILD_SCHEMA,
                  console: Console | None = None, versions: RecentVersions | None = None,
                  partitions: list[int] | None = None) -> ReplayReport:
    """Run the visits topic, as it stands now, through the batch step into `schema`'s new tables.

    With partitions, only those, into tables another process made (`begin_rebuild`): N processes over
    disjoint partitions rebuild one book the way N workers of one group write the live one.
    """
    console = console or Console(stderr=True)
    trust = settings.trust_anchors()
    keyring, identity = Keyring(trust), IdentityDirectory(trust)
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:  # what the worker applied: a record re-sent older after compaction is ignored
        keyring.revisions.hold(await load_marks(conn, CLINIC_KEYS))
        identity.revisions.hold(await load_marks(conn, IDENTITY_CARDS))
    registry = TopicFollower(broker, settings.topics.clinic_keys, keyring.apply)
    await registry.start()
    await TopicFollower(broker, settings.topics.identity_cards, identity.apply).snapshot()
    report = ReplayReport()
    try:
        if partitions is None:
            async with pool.acquire() as conn:
                await create_rebuild(conn, schema)
        step = BatchStep(settings.topics.visits, PostgresBatchStore(pool, BookWriter(schema)),
                         Checks(keyring, identity, settings.signing_window, registry.catch_up, settings.sensitive),
                         RecentVersions() if versions is None else versions, NoOutlets(),
                         topic_range_reader(broker), isolate_at_once=True,
                         dead_letter_topic=settings.topics.dead_letter)
        async for batch in _batches(settings, broker, console, partitions):
            await step.run(batch)
            report.messages += len(batch)
        reader = BookReader(schema)
        async with pool.acquire() as conn:
            report.counts = await reader.counts_of(conn)
            report.pending = await reader.pending_count(conn)
    finally:
        await registry.stop()
        await pool.close()
    return report


async def _batches(settings: Settings, broker: kafka.Broker, console: Console,
                   only: list[int] | None) -> AsyncIterator[list[Delivery]]:
    """The visits topic (or only some partitions) from its beginning to its current end, in batches of deliveries."""
    topic = settings.topics.visits
    partitions = [TopicPartition(topic, p) for p in await kafka.partitions_of(broker, topic)
                  if only is None or p in only]
    reader = kafka.consumer(broker, "replay")
    await reader.start()
    columns = (TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeRemainingColumn())
    try:
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        end = await reader.end_offsets(partitions)
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task(topic, total=sum(end.values()))
            while [tp for tp in partitions if await reader.position(tp) < end[tp]]:
                fetched = await reader.getmany(*partitions, timeout_ms=500, max_records=BATCH)
                batch = [delivery_of_record(m) for tp, messages in fetched.items() for m in messages
                         if m.offset < end[tp]]
                if batch:
                    progress.advance(task, len(batch))
                    yield batch
    finally:
        await reader.stop()


async def replay(settings: Settings, broker: kafka.Broker, console: Console | None = None) -> ReplayReport:
    """Rebuild while the live book keeps serving, merge what the worker wrote meanwhile, swap the book in.

    The merge keeps, per visit, the higher version of the two tables, so a visit the worker applied
    during the rebuild is not lost; at equal versions the rebuilt row wins.
    """
    since = await _database_clock(settings)
    report = await rebuild(settings, broker, REBUILD_SCHEMA, console)
    return await swap_in(settings, since, report)


async def begin_rebuild(settings: Settings) -> datetime:
    """Make the rebuild's empty tables for processes to fill partition by partition; return when it began."""
    async with _connection(settings) as conn:
        since = await database_now(conn) - WRITE_CLOCK_MARGIN
        await create_rebuild(conn, REBUILD_SCHEMA)
    return since


async def rebuilt_report(settings: Settings) -> ReplayReport:
    """What the processes of a rebuild wrote together."""
    reader = BookReader(REBUILD_SCHEMA)
    async with _connection(settings) as conn:
        counts = await reader.counts_of(conn)
        return ReplayReport(counts.get("consumed", 0), counts, await reader.pending_count(conn))


async def swap_in(settings: Settings, since: datetime, report: ReplayReport) -> ReplayReport:
    """Merge what the worker wrote since the rebuild began and swap the rebuilt book in."""
    async with _connection(settings) as conn:
        report.merged_from_live, report.locked_seconds = await swap_in_rebuild(conn, REBUILD_SCHEMA, since)
        report.rows = await BookReader().row_count(conn)
    return report


async def abandon_rebuild(settings: Settings) -> None:
    """Drop a rebuild that failed; the live book is untouched."""
    async with _connection(settings) as conn:
        await drop_rebuild(conn, REBUILD_SCHEMA)


async def _database_clock(settings: Settings) -> datetime:
    """When a rebuild begins, by the clock rows' projected_at are written with, less the commit margin."""
    async with _connection(settings) as conn:
        return await database_now(conn) - WRITE_CLOCK_MARGIN


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            yield conn
    finally:
        await pool.close()
