"""Visits waiting for a BHYT card mapping, moved into the citizen's book when the mapping arrives."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg

from domain.batch import Delivery, RejectedDelivery
from domain.identity import IdentityDirectory, Mismatch, resolve_waiting
from healthbook.retry import while_unreachable
from healthbook.store import BookWriter, PendingRecord
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.outcomes import rejected
from streams.batch_step import RangeReader
from streams.fail_stop import stop_worker
from streams.outlets import Outlets

log = logging.getLogger(__name__)

Remember = Callable[[dict[str, dict[str, int]]], Awaitable[None]]  # personal ID -> {visit key: version}, made durable


async def _forget(versions: dict[str, dict[str, int]]) -> None:
    return None


class PendingResolver:
    """Takes mapped cards from a queue and moves the visits waiting for them, one card at a time."""

    def __init__(self, pool: asyncpg.Pool, writer: BookWriter, identity: IdentityDirectory, outlets: Outlets,
                 read_range: RangeReader, topic: str, remember: Remember = _forget) -> None:
        self.pool, self.writer, self.identity, self.outlets = pool, writer, identity, outlets
        self.read_range, self.topic, self.remember = read_range, topic, remember
        self._cards: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Queue the cards visits already wait for (mapped while no worker ran), then resolve in the background."""
        async with self.pool.acquire() as conn:
            for card in await self.writer.pending_cards(conn):
                self.mapped(card)
        self._task = asyncio.create_task(self._run())

    @property
    def running(self) -> bool:
        """Whether start() has run: cards mapped before it are swept by start() itself."""
        return self._task is not None

    async def stop(self) -> None:
        """Stop resolving."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mapped(self, card: str) -> None:
        """A card is known to belong to someone now: resolve the visits waiting for it."""
        if self.identity.person_of(card):
            self._cards.put_nowait(card)

    async def _run(self) -> None:
        while True:
            card = await self._cards.get()
            person = self.identity.person_of(card)
            if person is None:
                continue
            try:
                counts = await while_unreachable("resolve pending visits", partial(self._resolve, card, person))
            except Exception:
                stop_worker("resolving visits waiting for a BHYT card failed")
            if counts:
                log.info("visits waiting for a BHYT card resolved: %s", dict(counts))

    async def _resolve(self, card: str, person: str) -> Counter[str]:
        async with self.pool.acquire() as conn:
            waiting = await self.writer.pending_records(conn, card)
            if not waiting:
                return Counter()
            events, contradicting = [], []
            for pending in waiting:
                whose = resolve_waiting(pending.record, person)
                if isinstance(whose, Mismatch):
                    contradicting.append((pending, whose))
                else:
                    events.append(whose)
            counts: Counter[str] = Counter()
            if contradicting:
                counts[rejected(DeadLetterReason.IDENTITY_MISMATCH)] = await self._set_aside(conn, card, contradicting)
            # Analytics first: a crash after it only repeats a record downstream keeps once.
            await self.outlets.deidentified([(event, None) for event in events])
            # The dedup table before the book: a crash between leaves the visits waiting, and they are moved
            # again after the restart; the other order left the book ahead of the table for good.
            versions: dict[str, int] = {}
            for event in events:
                versions[event.visit_key] = max(event.version, versions.get(event.visit_key, -1))
            if versions:
                await self.remember({person: versions})
            checked = [(event.facility_code, event.visit_code) for event in events]
            counts.update(await self.writer.resolve_pending(conn, card, person, checked))
            return counts

    async def _set_aside(self, conn: asyncpg.Connection, card: str,
                         contradicting: list[tuple[PendingRecord, Mismatch]]) -> int:
        """Dead-letter waiting visits the card's citizen contradicts (birth year or sex), with their original bytes."""
        letters = []
        for pending, mismatch in contradicting:
            originals = await self.read_range(self.topic, pending.source_partition, pending.source_offset,
                                              pending.source_offset + 1)
            delivery = originals[0] if originals else Delivery(
                self.topic, pending.source_partition, pending.source_offset, 0, None, None)
            letters.append(RejectedDelivery(delivery, mismatch.rejected(pending.record.get("facility_code"),
                                                                        pending.record.get("event_id"))))
        await self.outlets.dead_letters(letters)
        keys = [(p.record["facility_code"], p.record["visit_code"]) for p, _ in contradicting]
        return await self.writer.set_aside_pending(conn, card, keys, rejected(DeadLetterReason.IDENTITY_MISMATCH))
