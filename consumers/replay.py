"""healthbook replay: rebuild the health book from the beginning of the visits topic, then swap it in at once."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.topic_follower import TopicFollower
from healthbook.topics import partitions_of
from schemas.registry import Keyring
from streams.identity import IdentityDirectory, Resolved, resolve
from streams.projection import BOOK_COLUMNS, VisitRow, upsert_sql, visit_row
from streams.validation import Accepted, validate

REBUILD = "health_book_visits_rebuild"
BATCH = 1_000


class RateColumn(ProgressColumn):
    """Messages per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} msg/s")


@dataclass
class ReplayReport:
    """What the rebuild read and wrote."""

    messages: int = 0
    visits: int = 0
    merged_from_live: int = 0
    rows: int = 0


async def _flush(conn: asyncpg.Connection, sql: str, rows: dict[str, VisitRow]) -> None:
    if rows:
        await conn.fetch(sql, *[[getattr(row, c) for row in rows.values()] for c in BOOK_COLUMNS])
        rows.clear()


async def replay(settings: Settings, console: Console | None = None) -> ReplayReport:
    """Rebuild into a new table while the live one keeps serving, merge what the worker wrote meanwhile, swap.

    The merge keeps, per visit, the higher version of the two tables, so a visit the worker applied
    during the rebuild is not lost; at equal versions the rebuilt row wins.
    """
    console = console or Console(stderr=True)
    report = ReplayReport()
    keyring, identity = Keyring(), IdentityDirectory()
    await TopicFollower(settings.kafka_bootstrap, settings.topics.clinic_keys, keyring.apply).snapshot()
    await TopicFollower(settings.kafka_bootstrap, settings.topics.identity_cards, identity.apply).snapshot()
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    partitions = [TopicPartition(settings.topics.visits, p)
                  for p in await partitions_of(settings.kafka_bootstrap, settings.topics.visits)]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 2**20)
    await consumer.start()
    sql = upsert_sql(REBUILD, BOOK_COLUMNS, "projected_at")
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"drop table if exists {REBUILD}")
            await conn.execute(f"create table {REBUILD} (like health_book_visits including all)")
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            total = sum(end.values())
            columns = (TextColumn("replaying {task.description}"), BarColumn(), MofNCompleteColumn(),
                       RateColumn(), TimeRemainingColumn())
            pending: dict[str, VisitRow] = {}
            with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
                task = progress.add_task(settings.topics.visits, total=total)
                while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                    for tp, messages in (await consumer.getmany(*partitions, timeout_ms=500)).items():
                        for message in messages:
                            if message.offset >= end[tp]:
                                continue
                            report.messages += 1
                            progress.advance(task)
                            result = validate(message.key, message.value, keyring)
                            if not isinstance(result, Accepted):
                                continue
                            whose = resolve(result.event, identity)
                            if not isinstance(whose, Resolved):
                                continue
                            row = visit_row(result, message.partition, message.offset, whose.event)
                            held = pending.get(row.visit_key)
                            if held is None or held.version < row.version:
                                pending[row.visit_key] = row
                            report.visits += 1
                    if len(pending) >= BATCH:
                        await _flush(conn, sql, pending)
                await _flush(conn, sql, pending)
            async with conn.transaction():
                await conn.execute("lock table health_book_visits in exclusive mode")
                merged = await conn.fetch(
                    f"insert into {REBUILD} select * from health_book_visits on conflict (facility_code, visit_code) "
                    f"do update set {', '.join(f'{c} = excluded.{c}' for c in BOOK_COLUMNS[2:])}, "
                    f"projected_at = excluded.projected_at "
                    f"where {REBUILD}.version < excluded.version returning 1")
                report.merged_from_live = len(merged)
                await conn.execute("alter table health_book_visits rename to health_book_visits_replaced")
                await conn.execute(f"alter table {REBUILD} rename to health_book_visits")
                await conn.execute("drop table health_book_visits_replaced")
            report.rows = await conn.fetchval("select count(*) from health_book_visits")
    finally:
        await consumer.stop()
        await pool.close()
    return report
