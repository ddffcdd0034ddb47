"""Reading the dead-letter topic: list and show by reason, clinic and time; re-drive once the cause is fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from healthbook import kafka
from healthbook.config import Settings
from healthbook.store import RedriveLedger
from healthbook.topic_follower import TopicFollower
from schemas import catalogue, wire
from schemas.headers import retry_header


@dataclass(frozen=True)
class DeadLetterEntry:
    """A dead-letter record and where it sits on the dead-letter topic."""

    partition: int
    offset: int
    record: dict[str, Any]

    @property
    def failed_again(self) -> bool:
        """Whether this record is a re-driven message that failed a second time."""
        return self.record.get("retry_of") is not None


async def read_entries(broker: kafka.Broker, topic: str, *, distinct: bool = True) -> list[DeadLetterEntry]:
    """The dead-letter records on the topic, with their coordinates; by default one per refused message.

    The topic is at-least-once: a worker stopped between sending a dead letter and committing its
    batch sends it again. `distinct` keeps the first record of each source message.
    """
    entries: list[DeadLetterEntry] = []

    def keep(message: Any) -> None:
        entries.append(DeadLetterEntry(message.partition, message.offset,
                                       wire.decode(message.value, catalogue.DEAD_LETTER)))

    await TopicFollower(broker, topic, keep, whole_message=True).snapshot()
    return first_per_source(entries) if distinct else entries


def first_per_source(entries: list[DeadLetterEntry]) -> list[DeadLetterEntry]:
    """The first dead letter of each refused message (source topic, partition and offset)."""
    seen: set[tuple[Any, Any, Any]] = set()
    kept = []
    for entry in entries:
        source = (entry.record["source_topic"], entry.record["source_partition"], entry.record["source_offset"])
        if source not in seen:
            seen.add(source)
            kept.append(entry)
    return kept


def select(entries: list[DeadLetterEntry], *, reason: str | None = None, clinic: str | None = None,
           since_ms: int | None = None, offsets: set[int] | None = None) -> list[DeadLetterEntry]:
    """The entries matching every filter given."""
    def millis(value: Any) -> int:
        return value if isinstance(value, int) else int(value.timestamp() * 1000)

    return [e for e in entries
            if (reason is None or e.record["reason_code"] == reason)
            and (clinic is None or e.record["clinic_code"] == clinic)
            and (since_ms is None or millis(e.record["failed_at"]) >= since_ms)
            and (offsets is None or e.offset in offsets)]


@dataclass
class RetryReport:
    """What a re-drive did."""

    retried: list[DeadLetterEntry] = field(default_factory=list)
    already_retried: list[DeadLetterEntry] = field(default_factory=list)
    failed_again: list[DeadLetterEntry] = field(default_factory=list)
    not_visits: list[DeadLetterEntry] = field(default_factory=list)


async def retry(settings: Settings, broker: kafka.Broker, pool: asyncpg.Pool,
                entries: list[DeadLetterEntry]) -> RetryReport:
    """Put the original bytes of dead-lettered visits back on the visits topic, each record at most once.

    A re-driven message carries a header naming its dead-letter record; if it fails again the worker
    dead-letters it with that reference, and such records are never re-driven, so nothing loops.
    """
    report = RetryReport()
    ledger = RedriveLedger()
    done = await ledger.retried_dead_letters(pool)
    producer = kafka.producer(broker, "dlq-retry")
    await producer.start()
    try:
        for entry in entries:
            if entry.failed_again:
                report.failed_again.append(entry)
            elif (entry.partition, entry.offset) in done:
                report.already_retried.append(entry)
            elif entry.record["source_topic"] != settings.topics.visits or entry.record["original_value"] is None:
                report.not_visits.append(entry)
            else:
                sent = await producer.send_and_wait(
                    settings.topics.visits, entry.record["original_value"], key=entry.record["original_key"],
                    headers=[retry_header(entry.partition, entry.offset)])
                await ledger.record_retry(pool, (entry.partition, entry.offset), (sent.partition, sent.offset))
                report.retried.append(entry)
    finally:
        await producer.stop()
    return report


async def read_dead_letters(broker: kafka.Broker, topic: str, *, distinct: bool = True) -> list[dict[str, Any]]:
    """The dead-letter records currently on the topic, oldest first per partition (one per message by default)."""
    return [entry.record for entry in await read_entries(broker, topic, distinct=distinct)]
