"""healthbook status: how far behind the worker is per partition, what came out, and the last thing that went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from healthbook.config import Settings
from healthbook.topics import partitions_of
from streams.projection import applied_offsets, read_counts


@dataclass
class PartitionLag:
    """One partition of the visits topic: its end, what the health book has applied, the difference."""

    partition: int
    end_offset: int
    applied: int

    @property
    def lag(self) -> int:
        """Messages published but not yet applied."""
        return max(0, self.end_offset - self.applied)


@dataclass
class Status:
    """The pipeline as an operator on call needs to see it."""

    partitions: list[PartitionLag] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    pending_visits: int = 0
    last_error: dict[str, Any] | None = None


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset to be written on each partition of a topic."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def status(settings: Settings) -> Status:
    """Lag per partition, outcome counts, visits waiting for identity, and the worker's last recorded error."""
    ends = await end_offsets(settings.kafka_bootstrap, settings.topics.visits)
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await applied_offsets(conn, settings.topics.visits, sorted(ends))
        result = Status(
            partitions=[PartitionLag(p, ends[p], applied[p]) for p in sorted(ends)],
            counts=await read_counts(conn),
            pending_visits=await conn.fetchval("select count(*) from pending_visits"),
        )
        last = await conn.fetchrow("select at, worker_id, message from worker_errors order by id desc limit 1")
        result.last_error = dict(last) if last else None
        return result
    finally:
        await conn.close()
