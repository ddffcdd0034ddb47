"""The faust app: one agent that validates, deduplicates and projects batches of visit events."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from healthbook import observability as metrics
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from healthbook.topic_follower import TopicFollower
from healthbook.topics import partitions_of
from schemas.headers import retry_of
from schemas.registry import Keyring
from schemas.visit import VisitEvent
from streams import dedup, deidentify
from streams.dead_letter import Source, dead_letter
from streams.identity import IdentityDirectory, Mismatch, Pending, Resolved, resolve
from streams.projection import (
    OffsetsMoved,
    VisitRow,
    applied_offsets,
    pending_cards,
    pending_records,
    resolve_pending,
    visit_row,
    write_batch,
)
from streams.validation import Accepted, Rejected, RejectionCode, validate_safely

log = logging.getLogger(__name__)

_RETRY_AFTER_CATCH_UP = {RejectionCode.UNKNOWN_CLINIC, RejectionCode.UNKNOWN_KEY}


class VisitPipeline:
    """The worker's resources and its per-batch step; faust only feeds it batches."""

    def __init__(self, settings: Settings, versions: Any) -> None:
        self.settings = settings
        self.versions = versions  # faust table: personal ID -> {visit key: version}
        self.keyring = Keyring()
        self.identity = IdentityDirectory()
        self.registry = TopicFollower(settings.kafka_bootstrap, settings.topics.clinic_keys, self.keyring.apply)
        self.cards = TopicFollower(settings.kafka_bootstrap, settings.topics.identity_cards, self._on_card)
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.pseudonym_key = deidentify.load_or_create_key(settings.pseudonym_key_file)
        self.started = False
        self.waiting_for_database = False
        self.last_batch_at: float | None = None
        self.last_offsets: dict[int, int] = {}
        self.highwater: Callable[[int], int | None] = lambda partition: None
        self._health: Any = None
        self._mapped_cards: asyncio.Queue[str] = asyncio.Queue()
        self._resolver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to PostgreSQL (migrating it), the dead-letter producer, the key registry and identity cards."""
        for topic in (self.settings.topics.dead_letter, self.settings.topics.deidentified):
            await partitions_of(self.settings.kafka_bootstrap, topic)  # fail fast, naming the missing topic
        self.pool = await while_unreachable(
            "connect to PostgreSQL", lambda: connect_pool(self.settings.database_url, min_size=1, max_size=3)
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        await self.registry.start()
        await self.cards.start()
        self._resolver = asyncio.create_task(self._resolve_mapped_cards())
        async with self.pool.acquire() as conn:
            for card in await pending_cards(conn):  # mapped while no worker was running
                self._on_mapped(card)
        self._health = await metrics.serve(self.settings.worker_metrics_port, self.health, "worker",
                                           self.settings.metrics_host)
        self.started = True

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy once started and while PostgreSQL answers; details for the operator."""
        ok = self.started and not self.waiting_for_database
        return ok, {"started": self.started, "waiting_for_database": self.waiting_for_database,
                    "last_batch_at": self.last_batch_at, "last_offsets": self.last_offsets}

    async def stop(self) -> None:
        """Release everything start() took."""
        if self._health:
            await self._health.cleanup()
        if self._resolver:
            self._resolver.cancel()
            await asyncio.gather(self._resolver, return_exceptions=True)
        await self.cards.stop()
        await self.registry.stop()
        if self.producer:
            await self.producer.stop()
        if self.pool:
            await self.pool.close()

    def _on_card(self, key: bytes | None, value: bytes | None) -> None:
        card = self.identity.apply(key, value)
        # While the topic is first loaded, start() sweeps the cards visits wait for instead.
        if card and self._resolver is not None:
            self._on_mapped(card)

    def _on_mapped(self, card: str) -> None:
        if self.identity.person_of(card):
            self._mapped_cards.put_nowait(card)

    async def _resolve_mapped_cards(self) -> None:
        assert self.pool is not None
        while True:
            card = await self._mapped_cards.get()
            person = self.identity.person_of(card)
            if person is None:
                continue
            try:
                counts = await while_unreachable("resolve pending visits", partial(self._resolve, card, person))
            except Exception:
                _stop_worker("resolving visits waiting for a BHYT card failed")
            if counts:
                log.info("visits waiting for a BHYT card resolved: %s", dict(counts))

    async def _resolve(self, card: str, person: str) -> Counter[str]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            waiting = await pending_records(conn, card)
            if not waiting:
                return Counter()
            # Analytics first: a crash after it only repeats a record downstream keeps once.
            events = []
            for record in waiting:
                record["patient"]["personal_id"] = person
                events.append(VisitEvent.model_validate(record))
            await self._publish_deidentified(events)
            return await resolve_pending(conn, card, person)

    async def process(self, events: Sequence[faust.EventT]) -> Counter[str]:
        """Validate, resolve identity, dead-letter, deduplicate and project one batch; return its outcome counts.

        Messages below a partition's applied offset were applied before a crash or rebalance: they only
        bring the deduplication table up to date. A batch that another worker advanced meanwhile is redone.
        """
        messages = _first_deliveries(events)
        topic = self.settings.topics.visits
        while True:
            expected = await while_unreachable("read applied offsets", partial(self._applied, topic, messages))
            replayed = [m for m in messages if m.offset < expected[m.partition]]
            todo = [m for m in messages if m.offset >= expected[m.partition]]
            if replayed:
                _, owned, _ = self._classify(replayed, await self._validate(replayed))
                fresh, _, updated = self._deduplicate(owned)
                self._remember(fresh, updated)
            if not todo:
                return Counter(replayed=len(replayed))
            try:
                started = time.monotonic()
                counts = await self._apply(todo, topic, expected)
            except OffsetsMoved as moved:
                log.warning("redoing a batch: %s", moved)
                continue
            self._observe(todo, counts, time.monotonic() - started)
            return counts

    def _observe(self, messages: list[Any], counts: Counter[str], seconds: float) -> None:
        now = time.time()
        for outcome, n in counts.items():
            if n > 0:
                metrics.EVENTS.labels(outcome).inc(n)
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.BATCH_SECONDS.observe(seconds)
        for message in messages:
            metrics.EVENT_AGE.observe(max(0.0, now - message.timestamp))
        self.last_batch_at = now
        self.last_offsets.update({m.partition: m.offset for m in messages})
        for partition, offset in self.last_offsets.items():
            end = self.highwater(partition)
            if end is not None:
                metrics.LAG.labels(str(partition)).set(max(0, end - offset - 1))

    async def _apply(self, messages: list[Any], topic: str, expected: dict[int, int]) -> Counter[str]:
        rejected, owned, waiting = self._classify(messages, await self._validate(messages))
        counts: Counter[str] = Counter(consumed=len(messages))
        await self._dead_letter(rejected, counts)
        fresh, duplicates, updated = self._deduplicate(owned)
        counts["duplicate"] += duplicates
        counts["accepted"] += len(fresh)
        counts["pending"] += len(waiting)
        book = _latest(visit_row(a, m.partition, m.offset, event) for m, a, event in fresh)
        pending = _latest(visit_row(a, m.partition, m.offset) for m, a in waiting)
        advanced = {p: max(m.offset for m in messages if m.partition == p) + 1 for p in {m.partition for m in messages}}
        await self._publish_deidentified([event for _, _, event in fresh])
        waited_for: list[float] = []

        def holding(waited: float) -> None:
            self.waiting_for_database = True
            waited_for.append(waited)
            log.warning("holding %d messages at %s for %.0fs until PostgreSQL answers; nothing is committed",
                        len(messages), {p: expected[p] for p in advanced}, waited)

        counts = await while_unreachable("write the health book",
                                         partial(self._write, book, pending, counts, topic, expected, advanced),
                                         holding)
        if waited_for:
            self.waiting_for_database = False
            await self._record_error(f"PostgreSQL was unreachable for {max(waited_for):.0f}s; "
                                     "the batch was held and then written")
        self._remember(fresh, updated)
        for row, _ in pending:  # its card may have been mapped while this batch was being written
            self._on_mapped(row.card_number)
        return counts

    async def _validate(self, messages: list[Any]) -> list[Accepted | Rejected]:
        results = [validate_safely(m.key, m.value, self.keyring) for m in messages]
        if any(isinstance(r, Rejected) and r.code in _RETRY_AFTER_CATCH_UP for r in results):
            await self.registry.catch_up()
            results = [
                validate_safely(m.key, m.value, self.keyring)
                if isinstance(r, Rejected) and r.code in _RETRY_AFTER_CATCH_UP
                else r
                for m, r in zip(messages, results, strict=True)
            ]
        return results

    def _classify(self, messages: list[Any], results: list[Accepted | Rejected]) -> tuple[
            list[tuple[Any, Rejected]], list[tuple[Any, Accepted, Resolved]], list[tuple[Any, Accepted]]]:
        """Split a batch into rejected, owned by a known citizen, and waiting for a card mapping."""
        rejected: list[tuple[Any, Rejected]] = []
        owned: list[tuple[Any, Accepted, Resolved]] = []
        waiting: list[tuple[Any, Accepted]] = []
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, Rejected):
                rejected.append((message, result))
                continue
            whose = resolve(result.event, self.identity)
            if isinstance(whose, Mismatch):
                rejected.append((message, Rejected(RejectionCode.IDENTITY_MISMATCH, whose.reason, [],
                                                   result.event.facility_code, result.event.event_id)))
            elif isinstance(whose, Pending):
                waiting.append((message, result))
            else:
                owned.append((message, result, whose))
        return rejected, owned, waiting

    def _deduplicate(self, owned: list[tuple[Any, Accepted, Resolved]]) -> tuple[
            list[tuple[Any, Accepted, VisitEvent]], int, dict[str, dict[str, int]]]:
        """Fresh visits, the number of duplicates, and the table's new versions per citizen."""
        # Visits resolved from a card are placed by their card, not their person: the version guard in
        # PostgreSQL deduplicates them instead of the person-partitioned table.
        by_person = [(m, a, w) for m, a, w in owned if not w.from_card]
        decisions, updated = dedup.plan(
            (dedup.Candidate(w.event.personal_id or "", w.event.visit_key, w.event.version) for _, _, w in by_person),
            lambda personal_id: self.versions.get(personal_id) or {},
        )
        fresh = [(m, a, w.event) for (m, a, w), d in zip(by_person, decisions, strict=True)
                 if d is not dedup.Freshness.DUPLICATE]
        duplicates = len(by_person) - len(fresh)
        fresh += [(m, a, w.event) for m, a, w in owned if w.from_card]
        return fresh, duplicates, updated

    def _remember(self, fresh: list[tuple[Any, Accepted, VisitEvent]], updated: dict[str, dict[str, int]]) -> None:
        """Record in the table the versions of what the health book now holds."""
        for personal_id in {event.personal_id for _, _, event in fresh} & updated.keys():
            self.versions[personal_id] = updated[personal_id]

    async def _record_error(self, message: str) -> None:
        """Keep the worker's last error where 'healthbook status' shows it."""
        assert self.pool is not None
        await self.pool.execute("insert into worker_errors (worker_id, message) values ($1, $2)",
                                self.settings.worker_id, message)

    async def _applied(self, topic: str, messages: list[Any]) -> dict[int, int]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            return await applied_offsets(conn, topic, sorted({m.partition for m in messages}))

    async def _write(self, book: list[tuple[VisitRow, int]], pending: list[tuple[VisitRow, int]],
                     counts: Counter[str], topic: str, expected: dict[int, int],
                     advanced: dict[int, int]) -> Counter[str]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            return await write_batch(conn, book, pending, counts, topic, expected, advanced)

    async def _publish_deidentified(self, events: list[VisitEvent]) -> None:
        """Send the analytics records of these visits and wait for the broker: before the commit, so none is lost."""
        assert self.producer is not None
        sends = []
        for event in events:
            key, value = deidentify.encode(event, self.pseudonym_key)
            sends.append(await self.producer.send(self.settings.topics.deidentified, value, key=key))
        if sends:
            await asyncio.gather(*sends)

    async def _dead_letter(self, rejected: list[tuple[Any, Rejected]], counts: Counter[str]) -> None:
        assert self.producer is not None
        sends = []
        for message, result in rejected:
            counts[f"rejected:{result.code}"] += 1
            source = Source(message.topic, message.partition, message.offset, int(message.timestamp * 1000),
                            message.key, message.value, retry_of(message.headers))
            log.warning("rejected %s[%d]@%d: %s (clinic %s)", message.topic, message.partition, message.offset,
                        result.code, result.clinic_code,
                        extra={"topic": message.topic, "partition": message.partition, "offset": message.offset,
                               "reason": str(result.code), "clinic": result.clinic_code,
                               "event_id": result.event_id})
            sends.append(await self.producer.send(self.settings.topics.dead_letter, dead_letter(result, source),
                                                  key=message.key))
        if sends:
            await asyncio.gather(*sends)


def _stop_worker(why: str) -> None:
    """Log why and end the process at once (exit 70), so nothing half-done is committed."""
    log.critical(why, exc_info=True)
    logging.shutdown()
    os._exit(70)


def _first_deliveries(events: Sequence[faust.EventT]) -> list[Any]:
    """The batch's messages, each record once: after a rebalance faust can hand one over twice."""
    seen: set[tuple[int, int]] = set()
    messages = []
    for event in events:
        coordinates = (event.message.partition, event.message.offset)
        if coordinates not in seen:
            seen.add(coordinates)
            messages.append(event.message)
    return messages


def _latest(rows: Any) -> list[tuple[VisitRow, int]]:
    """One row per visit, the highest version, weighted by how many messages it stands for."""
    chosen: dict[str, VisitRow] = {}
    weights: Counter[str] = Counter()
    for row in rows:
        weights[row.visit_key] += 1
        if row.visit_key not in chosen or chosen[row.visit_key].version < row.version:
            chosen[row.visit_key] = row
    return [(row, weights[key]) for key, row in chosen.items()]


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the worker's faust app from settings."""
    settings = settings or Settings()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.visit_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A SIGKILLed worker leaves the group only when its session times out: keep that short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="json",  # the table's values; the visits topic says raw itself
        logging_config=metrics.json_logging_config() if settings.log_format == "json" else None,
    )
    visits = app.topic(
        settings.topics.visits,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.visit_partitions,
    )
    # Keyed like the visits topic and placed by the same partitioner, so each changelog
    # partition holds exactly the citizens of the matching visits partition.
    versions = app.Table(
        "visit-versions", default=None, partitions=settings.visit_partitions, use_partitioner=True, key_type=bytes
    )
    pipeline = VisitPipeline(settings, _KeyedTable(versions))
    pipeline.highwater = lambda partition: app.consumer.highwater(TP(settings.topics.visits, partition))
    # Each batch sets up to batch_size changelog entries at once; faust's default buffer of 100 makes
    # the agent wait on every flush (faust-streaming issue 173).
    app.producer.buffer.max_messages = max(10_000, settings.batch_size * 4)

    @app.agent(visits, name="project-visits")
    async def project_visits(stream: faust.StreamT) -> None:
        try:
            await pipeline.start()
            async for events in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
                counts = await pipeline.process(events)
                log.info("batch %s", dict(counts), extra={"worker_id": settings.worker_id})
        except Exception:
            # Stop the whole process: faust would restart the agent in place, leaking what start() opened,
            # and it acknowledges a failed take_events batch when the generator closes. A restarted worker
            # resumes from the applied offsets instead.
            _stop_worker("the worker cannot go on; stopping without committing the current batch")
        finally:
            await pipeline.stop()

    app.healthbook_pipeline = pipeline  # type: ignore[attr-defined]
    return app


class _KeyedTable:
    """Adapts the faust table, whose raw keys are bytes, to personal-ID strings."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, personal_id: str) -> dict[str, int] | None:
        return self._table.get(personal_id.encode())

    def __setitem__(self, personal_id: str, versions: dict[str, int]) -> None:
        self._table[personal_id.encode()] = versions
