"""The one batch step of the visits topic, run by the worker and by replay alike.

Validate, resolve identity, dead-letter, deduplicate and write one batch atomically with its
applied offsets. Messages below a partition's applied offset were applied before a crash or
rebalance: they only bring the deduplication table up to date. A batch that another worker
advanced meanwhile is redone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import asyncpg

from domain.batch import BatchPlan, Delivery, plan_batch
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from domain.validation import RETRY_AFTER_REGISTRY_CATCH_UP, Accepted, Rejected, validate_safely
from healthbook.retry import while_unreachable
from healthbook.store import BookWriter, OffsetsMoved
from streams.outlets import Outlets

log = logging.getLogger(__name__)


class VersionTable(Protocol):
    """The deduplication table: personal ID -> {facility/MA_LK: version} (a faust table, or a dict in replay)."""

    def get(self, personal_id: str) -> dict[str, int] | None: ...

    def __setitem__(self, personal_id: str, versions: dict[str, int]) -> None: ...


@dataclass
class StepResult:
    """What one batch did: its outcome counts, the deliveries it applied, and how long applying took."""

    counts: Counter[str]
    applied: list[Delivery] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BatchStep:
    """Everything one batch needs: where it is written, what it is checked against, where side records go."""

    topic: str
    pool: asyncpg.Pool
    writer: BookWriter
    keyring: Keyring
    identity: IdentityDirectory
    versions: VersionTable
    outlets: Outlets
    registry_catch_up: Callable[[], Awaitable[None]]
    on_hold: Callable[[float], None] = lambda waited: None
    on_resumed: Callable[[float], Awaitable[None]] | None = None
    on_waiting: Callable[[set[str]], None] = lambda cards: None

    async def run(self, deliveries: Sequence[Delivery]) -> StepResult:
        """Apply one batch (each record once, in order) and return what it did."""
        messages = first_deliveries(deliveries)
        while True:
            expected = await while_unreachable("read applied offsets", partial(self._applied, messages))
            replayed = [m for m in messages if m.offset < expected[m.partition]]
            todo = [m for m in messages if m.offset >= expected[m.partition]]
            if replayed:
                self._remember(self._plan(replayed, await self._verdicts(replayed)))
            if not todo:
                return StepResult(Counter(replayed=len(replayed)))
            started = time.monotonic()
            try:
                counts = await self._apply(todo, expected)
            except OffsetsMoved as moved:
                log.warning("redoing a batch: %s", moved)
                continue
            return StepResult(counts, todo, time.monotonic() - started)

    async def _apply(self, messages: list[Delivery], expected: dict[int, int]) -> Counter[str]:
        plan = self._plan(messages, await self._verdicts(messages))
        await self.outlets.dead_letters(plan.refused)
        await self.outlets.deidentified([item.event for item in plan.fresh])
        advanced = {p: max(m.offset for m in messages if m.partition == p) + 1 for p in {m.partition for m in messages}}
        waited_for: list[float] = []

        def holding(waited: float) -> None:
            waited_for.append(waited)
            self.on_hold(waited)
            log.warning("holding %d messages at %s for %.0fs until PostgreSQL answers; nothing is committed",
                        len(messages), {p: expected[p] for p in advanced}, waited)

        counts = await while_unreachable(
            "write the health book",
            partial(self._write, plan, expected, advanced), holding)
        if waited_for and self.on_resumed:
            await self.on_resumed(max(waited_for))
        self._remember(plan)
        self.on_waiting({item.accepted.event.card_number for item in plan.waiting})
        return counts

    async def _write(self, plan: BatchPlan, expected: dict[int, int], advanced: dict[int, int]) -> Counter[str]:
        async with self.pool.acquire() as conn:
            return await self.writer.write_batch(conn, plan.book_rows(), plan.pending_rows(), plan.counts(),
                                                 self.topic, expected, advanced)

    async def _applied(self, messages: list[Delivery]) -> dict[int, int]:
        async with self.pool.acquire() as conn:
            return await self.writer.applied_offsets(conn, self.topic, sorted({m.partition for m in messages}))

    async def _verdicts(self, messages: list[Delivery]) -> list[Accepted | Rejected]:
        results = [validate_safely(m.key, m.value, self.keyring) for m in messages]
        if any(isinstance(r, Rejected) and r.code in RETRY_AFTER_REGISTRY_CATCH_UP for r in results):
            await self.registry_catch_up()
            results = [
                validate_safely(m.key, m.value, self.keyring)
                if isinstance(r, Rejected) and r.code in RETRY_AFTER_REGISTRY_CATCH_UP else r
                for m, r in zip(messages, results, strict=True)
            ]
        return results

    def _plan(self, messages: list[Delivery], verdicts: list[Accepted | Rejected]) -> BatchPlan:
        return plan_batch(messages, verdicts, self.identity, lambda person: self.versions.get(person) or {})

    def _remember(self, plan: BatchPlan) -> None:
        """Record in the table the versions of what the health book now holds."""
        for person, versions in plan.versions_to_remember().items():
            self.versions[person] = versions


def first_deliveries(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """The batch's messages, each record once: after a rebalance faust can hand one over twice."""
    seen: set[tuple[int, int]] = set()
    messages = []
    for delivery in deliveries:
        if (delivery.partition, delivery.offset) not in seen:
            seen.add((delivery.partition, delivery.offset))
            messages.append(delivery)
    return messages
