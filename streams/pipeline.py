"""The worker's connections and state as a faust (mode) service: started before the agent, stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from mode import Service

from domain.batch import Delivery
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from domain.trust_expiry import trust_expiries
from healthbook import kafka
from healthbook import observability as metrics
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import is_broker_unreachable, is_infrastructure, while_unreachable
from healthbook.store import CLINIC_KEYS, IDENTITY_CARDS, BookWriter, PostgresBatchStore, load_marks, save_marks
from healthbook.topic_follower import TopicFollower
from streams.batch_step import BatchStep, Checks, Prechecked, StepHooks, VersionTable, merged, topic_range_reader
from streams.fail_stop import stop_worker
from streams.outlets import KafkaOutlets
from streams.pending_visits import PendingResolver
from streams.pseudonym_key import load_or_create_key

log = logging.getLogger(__name__)


class VisitPipeline(Service):
    """PostgreSQL, the side-record producer, the key registry and identity cards, and the batch step over them."""

    def __init__(self, settings: Settings, broker: kafka.Broker, versions: VersionTable,
                 highwater: Callable[[int], int | None] = lambda partition: None,
                 table_written: Callable[[], Awaitable[None]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.broker = settings, broker
        self.versions = versions
        self.table_written = table_written
        self.highwater = highwater
        self.trust = trust = settings.trust_anchors()
        self.keyring = Keyring(trust)
        self.identity = IdentityDirectory(trust)
        self.writer = BookWriter()
        self.registry = TopicFollower(broker, settings.topics.clinic_keys, self.keyring.apply)
        self.cards = TopicFollower(broker, settings.topics.identity_cards, self._on_card)
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.step: BatchStep | None = None
        self.resolver: PendingResolver | None = None
        self.ready = asyncio.Event()
        self.waiting_for_database = False
        self.last_batch_at: float | None = None
        self.last_offsets: dict[int, int] = {}
        self._health: Any = None

    async def on_start(self) -> None:
        """Open every connection; a failure here stops the process (exit 70) naming what is missing.

        A broker that does not answer is raised instead: streams/worker.py starts again once it does.
        """
        try:
            await self._open()
        except Exception as exc:
            if is_broker_unreachable(exc):
                raise
            stop_worker("the worker cannot start")
        self.ready.set()

    async def _open(self) -> None:
        settings = self.settings
        for topic in (settings.topics.dead_letter, settings.topics.deidentified):
            await kafka.partitions_of(self.broker, topic)  # fail fast, naming the missing topic
        self.pool = await while_unreachable(
            "connect to PostgreSQL", lambda: connect_pool(settings.database_url, min_size=1, max_size=3))
        self.producer = kafka.producer(self.broker, f"{settings.worker_app_id}-outlets")
        await self.producer.start()
        outlets = KafkaOutlets(self.producer, settings.topics, load_or_create_key(settings.pseudonym_key_file),
                               settings.sensitive, self.keyring.has_clinic)
        await while_unreachable("read the registry revisions kept", self._hold_marks)
        await self.registry.start()
        await self.cards.start()
        read_range = topic_range_reader(self.broker)
        self.resolver = PendingResolver(self.pool, self.writer, self.identity, outlets, read_range,
                                        settings.topics.visits, self._remember_resolved)
        await self.resolver.start()
        self.step = BatchStep(settings.topics.visits, PostgresBatchStore(self.pool, self.writer),
                              Checks(self.keyring, self.identity, settings.signing_window, self.registry.catch_up,
                                     settings.sensitive),
                              self.versions, outlets, read_range,
                              StepHooks(on_hold=self._holding, on_resumed=self._resumed, on_waiting=self._on_waiting),
                              suspects=await self.writer.suspect_batches(self.pool, settings.topics.visits),
                              dead_letter_topic=settings.topics.dead_letter)
        metrics.SUSPECT_BATCHES.set(len(self.step.suspects))
        self._health = await metrics.serve(settings.worker_metrics_port, self.health, "worker", settings.metrics_host)

    async def _hold_marks(self) -> None:
        """Before any registry record is applied: the newest revisions applied before, so older ones are ignored."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            self.keyring.revisions.hold(await load_marks(conn, CLINIC_KEYS))
            self.identity.revisions.hold(await load_marks(conn, IDENTITY_CARDS))

    @Service.timer(1.0)
    async def _keep_marks(self) -> None:
        """Every second, keep the registry revisions applied since the last tick."""
        await self._flush_marks()

    @Service.timer(30.0)
    async def _show_expiries(self) -> None:
        """Every 30 seconds, when each CA certificate, revocation list and clinic certificate stops counting."""
        if not self.ready.is_set():
            return
        try:
            expiries = trust_expiries(self.trust, self.keyring)
        except Exception as exc:  # metrics are for people; they never stop the worker
            log.warning("could not read the trust expiries (%s)", type(exc).__name__)
            return
        metrics.TRUST_EXPIRY.clear()  # a key revoked or a CA removed since is no longer shown
        for expiry in expiries:
            metrics.TRUST_EXPIRY.labels(expiry.kind, expiry.name).set(expiry.at.timestamp())

    async def _flush_marks(self) -> None:
        """Keep the revisions applied since last time; while PostgreSQL is away they wait for the next time."""
        if self.pool is None or not self.ready.is_set():
            return
        marks = {CLINIC_KEYS: self.keyring.revisions.drain(), IDENTITY_CARDS: self.identity.revisions.drain()}
        if not any(marks.values()):
            return
        try:
            async with self.pool.acquire() as conn:
                for registry, revisions in marks.items():
                    await save_marks(conn, registry, revisions)
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            self.keyring.revisions.hold_back(marks[CLINIC_KEYS])
            self.identity.revisions.hold_back(marks[IDENTITY_CARDS])

    async def on_stop(self) -> None:
        """Release everything on_start took."""
        if self._health:
            await self._health.cleanup()
        try:
            await self._flush_marks()
        except Exception as exc:  # stopping anyway: the topic still holds these records
            log.warning("could not keep the last registry revisions (%s)", type(exc).__name__)
        if self.resolver:
            await self.resolver.stop()
        await self.cards.stop()
        await self.registry.stop()
        if self.producer:
            await self.producer.stop()
        if self.pool:
            await self.pool.close()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy once started, while PostgreSQL answers and every CA's revocation list is current."""
        started = self.ready.is_set()
        revocation = self.trust.revocation_problems()
        return started and not self.waiting_for_database and not revocation, {
            "started": started, "waiting_for_database": self.waiting_for_database,
            "revocation_lists_failing_closed": revocation,
            "last_batch_at": self.last_batch_at, "last_offsets": self.last_offsets}

    async def precheck(self, deliveries: list[Delivery]) -> Prechecked:
        """Each message's verdict, worked out while the batch before is still being written."""
        await self.ready.wait()
        assert self.step is not None
        try:
            return await self.step.precheck(deliveries)
        except Exception as exc:  # the batch is checked again when applied, where its failures are handled
            log.warning("could not check the next batch ahead (%s); it is checked when applied", type(exc).__name__)
            return {}

    async def process(self, deliveries: list[Delivery], prechecked: Prechecked | None = None) -> Counter[str]:
        """Run the batch step on one batch (its verdicts worked out ahead where given), then record its metrics."""
        await self.ready.wait()
        assert self.step is not None
        try:
            result = await self.step.run(deliveries, prechecked)
        except Exception as exc:
            if not is_infrastructure(exc):
                await self._record_suspect(deliveries, exc)
            raise
        if result.applied:
            try:
                self._observe(result.applied, result.counts, result.seconds)
                metrics.SUSPECT_BATCHES.set(len(self.step.suspects))  # none left once the batch is written
            except Exception as exc:  # metrics are for people; they never stop the worker
                log.warning("could not record the batch's metrics (%s)", type(exc).__name__)
        return result.counts

    async def _record_suspect(self, deliveries: list[Delivery], exc: BaseException) -> None:
        """Before the worker stops on a bug, keep the batch's offsets so the restarted worker isolates it."""
        assert self.step is not None
        try:
            await self.step.record_suspect(deliveries, exc)
        except Exception as failed:  # the stop goes ahead; the next failure on this batch records it
            log.error("could not record the failing batch (%s)", type(failed).__name__)

    def _observe(self, messages: list[Delivery], counts: Counter[str], seconds: float) -> None:
        now = time.time()
        for outcome, n in counts.items():
            if n > 0:
                metrics.EVENTS.labels(outcome).inc(n)
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.BATCH_SECONDS.observe(seconds)
        for message in messages:
            metrics.EVENT_AGE.observe(max(0.0, now - message.timestamp_ms / 1000))
        self.last_batch_at = now
        self.last_offsets.update({m.partition: m.offset for m in messages})
        for partition, offset in list(self.last_offsets.items()):
            end = _highwater_or_none(self.highwater, partition)
            if end is None:  # revoked by a rebalance since it was last seen: another worker reports it now
                with contextlib.suppress(KeyError):
                    metrics.LAG.remove(str(partition))
                continue
            metrics.LAG.labels(str(partition)).set(max(0, end - offset - 1))

    def _holding(self, waited: float) -> None:
        self.waiting_for_database = True
        metrics.PARTITION_HELD.set(1)

    async def _resumed(self, waited: float) -> None:
        self.waiting_for_database = False
        metrics.PARTITION_HELD.set(0)
        assert self.pool is not None
        await self.writer.record_error(
            self.pool, self.settings.worker_app_id,
            f"PostgreSQL was unreachable for {waited:.0f}s; the batch was held and then written")

    async def _remember_resolved(self, versions: dict[str, dict[str, int]]) -> None:
        """Raise the dedup table to the versions of visits the resolver moves, and wait until they are durable."""
        for person, found in versions.items():
            self.versions[person] = merged(self.versions.get(person), found)
        if self.table_written is not None:
            await self.table_written()

    def _on_card(self, key: bytes | None, value: bytes | None) -> None:
        card = self.identity.apply(key, value)
        # While the topic is first loaded, the resolver's start sweeps the cards visits wait for instead.
        if card and self.resolver is not None and self.resolver.running:
            self.resolver.mapped(card)

    def _on_waiting(self, cards: set[str]) -> None:
        """A batch's waiting visits are written: their card may have been mapped meanwhile."""
        if self.resolver is not None:
            for card in cards:
                self.resolver.mapped(card)


def _highwater_or_none(highwater: Callable[[int], int | None], partition: int) -> int | None:
    """The partition's end offset as this worker's consumer knows it, or None once it is no longer assigned."""
    try:
        return highwater(partition)
    except (AssertionError, KeyError, ValueError):  # aiokafka asserts the partition is assigned
        return None
