"""The faust app: one agent that validates, deduplicates and projects batches of visit events."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer

from healthbook.config import Settings
from healthbook.database import connect_pool
from streams import dedup
from streams.dead_letter import Source, dead_letter
from streams.keyring import Keyring
from streams.projection import VisitRow, visit_row, write_batch
from streams.registry_follower import RegistryFollower
from streams.validation import Accepted, Rejected, RejectionCode, validate_safely

log = logging.getLogger(__name__)

_RETRY_AFTER_CATCH_UP = {RejectionCode.UNKNOWN_CLINIC, RejectionCode.UNKNOWN_KEY}
MAX_BACKOFF_SECONDS = 30.0


class VisitPipeline:
    """The worker's resources and its per-batch step; faust only feeds it batches."""

    def __init__(self, settings: Settings, versions: Any) -> None:
        self.settings = settings
        self.versions = versions  # faust table: personal ID -> {visit key: version}
        self.keyring = Keyring()
        self.registry = RegistryFollower(settings.kafka_bootstrap, settings.topics.clinic_keys, self.keyring)
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to PostgreSQL (migrating it), the dead-letter producer and the key registry."""
        self.pool = await _retry(
            "connect to PostgreSQL", lambda: connect_pool(self.settings.database_url, min_size=1, max_size=2)
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await self.producer.start()
        await self.registry.start()

    async def stop(self) -> None:
        """Release everything start() took."""
        await self.registry.stop()
        if self.producer:
            await self.producer.stop()
        if self.pool:
            await self.pool.close()

    async def process(self, events: Sequence[faust.EventT]) -> Counter[str]:
        """Validate, dead-letter, deduplicate and project one batch; return its outcome counts."""
        messages = [event.message for event in events]
        results = [validate_safely(m.key, m.value, self.keyring) for m in messages]
        if any(isinstance(r, Rejected) and r.code in _RETRY_AFTER_CATCH_UP for r in results):
            await self.registry.catch_up()
            results = [
                validate_safely(m.key, m.value, self.keyring)
                if isinstance(r, Rejected) and r.code in _RETRY_AFTER_CATCH_UP
                else r
                for m, r in zip(messages, results, strict=True)
            ]

        counts: Counter[str] = Counter(consumed=len(messages))
        await self._dead_letter(messages, results, counts)

        accepted = [(m, r) for m, r in zip(messages, results, strict=True) if isinstance(r, Accepted)]
        decisions, updated = dedup.plan(
            (dedup.Candidate(r.event.personal_id, r.event.visit_key, r.event.version) for _, r in accepted),
            lambda personal_id: self.versions.get(personal_id) or {},
        )
        latest: dict[str, VisitRow] = {}
        weights: Counter[str] = Counter()
        for (message, result), decision in zip(accepted, decisions, strict=True):
            if decision is dedup.Freshness.DUPLICATE:
                counts["duplicate"] += 1
                continue
            counts["accepted"] += 1
            latest[result.event.visit_key] = visit_row(result, message.partition, message.offset)
            weights[result.event.visit_key] += 1

        rows = list(latest.values())
        row_weights = [weights[f"{r.facility_code}/{r.visit_code}"] for r in rows]
        counts = await _retry("write the health book", lambda: self._write(rows, row_weights, counts))
        changed = {row.personal_id for row in rows}
        for personal_id in changed:
            self.versions[personal_id] = updated[personal_id]
        return counts

    async def _write(self, rows: list[VisitRow], weights: list[int], counts: Counter[str]) -> Counter[str]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            return await write_batch(conn, rows, weights, counts)

    async def _dead_letter(self, messages: list[Any], results: list[Accepted | Rejected], counts: Counter[str]) -> None:
        assert self.producer is not None
        sends = []
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, Rejected):
                counts[f"rejected:{result.code}"] += 1
                source = Source(
                    message.topic,
                    message.partition,
                    message.offset,
                    int(message.timestamp * 1000),
                    message.key,
                    message.value,
                )
                log.warning(
                    "rejected %s[%d]@%d: %s (%s)",
                    message.topic,
                    message.partition,
                    message.offset,
                    result.code,
                    result.clinic_code,
                )
                sends.append(
                    await self.producer.send(
                        self.settings.topics.dead_letter,
                        dead_letter(result, source),
                        key=message.key,
                    )
                )
        if sends:
            await asyncio.gather(*sends)


async def _retry(what: str, attempt: Any) -> Any:
    """Run attempt until it succeeds, backing off while PostgreSQL is unreachable."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            log.warning("cannot %s (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)


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
        web_enabled=False,
        key_serializer="raw",
        value_serializer="json",  # the table's values; the visits topic says raw itself
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

    @app.agent(visits, name="project-visits")
    async def project_visits(stream: faust.StreamT) -> None:
        await pipeline.start()
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
                try:
                    counts = await pipeline.process(events)
                except Exception:
                    # faust acks a take_events batch when its generator closes, even on error;
                    # stop the process before that so the batch is consumed again after restart.
                    log.critical("batch failed; stopping the worker without committing it", exc_info=True)
                    logging.shutdown()
                    os._exit(70)
                log.info("batch %s", dict(counts))
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
