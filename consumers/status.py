"""healthbook status: how far behind the worker is per partition, what came out, and the last thing that went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from healthbook import kafka
from healthbook.config import Settings
from healthbook.store import BookReader
from healthbook.topic_follower import TopicFollower


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
    ignored: dict[str, dict[str, int]] = field(default_factory=dict)  # registry topic -> why -> records
    revocation_problems: list[str] = field(default_factory=list)  # a CA's list missing, refused or expired


async def ignored_registry_records(settings: Settings, broker: kafka.Broker) -> dict[str, dict[str, int]]:
    """What a worker ignores on each registry topic, read and verified now exactly as a worker does, by why."""
    trust = settings.trust_anchors()
    found = {}
    for topic, apply in ((settings.topics.clinic_keys, Keyring(trust).apply),
                         (settings.topics.identity_cards, IdentityDirectory(trust).apply)):
        follower = TopicFollower(broker, topic, apply)
        await follower.snapshot()
        found[topic] = dict(follower.ignored)
    return found


async def status(settings: Settings, broker: kafka.Broker) -> Status:
    """Lag per partition, outcome counts, visits waiting for identity, ignored registry records, the last error."""
    ends = await kafka.end_offsets(broker, settings.topics.visits)
    ignored = await ignored_registry_records(settings, broker)
    book = BookReader()
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await book.applied_offsets(conn, settings.topics.visits, sorted(ends))
        return Status(
            partitions=[PartitionLag(p, ends[p], applied[p]) for p in sorted(ends)],
            counts=await book.counts_of(conn),
            pending_visits=await book.pending_count(conn),
            last_error=await book.last_error(conn),
            ignored=ignored,
            revocation_problems=settings.trust_anchors().revocation_problems(),
        )
    finally:
        await conn.close()
