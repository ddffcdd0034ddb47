"""The analytics release stage: holds each visit per subscriber until its cell holds k people, then releases it.

It reads `visits.deidentified` (the worker's, internal) and writes each subscriber's
`analytics.<name>.visits`. A batch's holds, releases and input offsets are one PostgreSQL transaction;
released records leave through an outbox in release order, and a restart finds how far the topic got
from the sequence number on its last record, so no record is lost or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from domain.analytics_policy import PolicyError, SubscriberPolicy, load_policies
from domain.generalise import diagnosis_chapter
from domain.k_anonymity import COARSE, FINE, Held, release_coarse, release_fine, suppress_small_counts
from domain.release_input import ReadyVisit, UnreadableVisit, ready_visit
from healthbook import kafka
from healthbook import observability as metrics
from healthbook.analytics_store import ReleaseStore
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from schemas.headers import RELEASE_SEQ_HEADER, release_seq
from schemas.topic_names import released_topic as released_base
from streams.pseudonym_key import load_or_create_key

log = logging.getLogger(__name__)
BATCH_RECORDS = 2000
PUBLISH_ROWS = 5000


class ReleaseStageBusy(RuntimeError):
    """Another release stage holds this database's lock."""


def window_closes(month: str, grace_days: int) -> datetime:
    """When the release window of an admission month closes: the month's end plus the grace for late visits."""
    year, number = int(month[:4]), int(month[4:6])
    first_after = date(year + number // 12, number % 12 + 1, 1)
    return datetime(first_after.year, first_after.month, first_after.day, tzinfo=UTC) + timedelta(days=grace_days)


def released_topic(prefix: str, subscriber: str) -> str:
    """The topic of one subscriber's released visits."""
    return prefix + released_base(subscriber)


class ReleaseStage:
    """Reads the de-identified topic and releases each subscriber's k-anonymous records."""

    def __init__(self, pool: asyncpg.Pool, broker: kafka.Broker, source_topic: str, topic_prefix: str,
                 policies: list[SubscriberPolicy], master_key: bytes, grace_days: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.pool, self.store, self.broker, self.source = pool, ReleaseStore(pool), broker, source_topic
        self.policies, self.master, self.grace, self.clock = policies, master_key, grace_days, clock
        self.topics = {p.name: released_topic(topic_prefix, p.name) for p in policies}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._lock: asyncpg.Connection | None = None
        self.caught_up = asyncio.Event()  # set once everything on the source at a look has been read

    async def start(self) -> None:
        """Take the database's lock, resume from the stored offsets and recover how far each topic got."""
        self._lock = await self.pool.acquire()
        if not await self.store.lock(self._lock):
            await self.pool.release(self._lock)
            self._lock = None
            raise ReleaseStageBusy("another analytics release stage runs on this database; run one")
        partitions = [TopicPartition(self.source, p) for p in await kafka.partitions_of(self.broker, self.source)]
        self.consumer = kafka.consumer(self.broker, "analytics-release")
        await self.consumer.start()
        self.consumer.assign(partitions)
        stored = await self.store.offsets(self.source)
        for tp in partitions:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)
        self.producer = kafka.producer(self.broker, "analytics-release")
        await self.producer.start()
        for policy in self.policies:
            await self.store.recover_published(policy.name, await self._last_published(self.topics[policy.name]))

    async def stop(self) -> None:
        """Close the clients and give the lock back."""
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()
        if self._lock is not None:
            await self.store.unlock(self._lock)
            await self.pool.release(self._lock)
            self._lock = None

    async def run(self, stop: asyncio.Event) -> None:
        """Read, hold, release and publish until stop is set."""
        assert self.consumer is not None
        await self.publish()  # what a stop left in the outbox goes first
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
            messages = [m for records in batch.values() for m in records]
            if messages:
                await self.take(messages)
                metrics.RELEASE_LAG.set(sum([max((self.consumer.highwater(tp) or 0) - await self.consumer.position(tp),
                                                  0) for tp in self.consumer.assignment()]))
            elif await self._at_end():
                await self.close_due_windows()
                await self.publish()
                self.caught_up.set()
                continue
            await self.publish()

    async def _at_end(self) -> bool:
        assert self.consumer is not None
        assigned = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(assigned)
        behind = [max(ends[tp] - await self.consumer.position(tp), 0) for tp in assigned]
        metrics.RELEASE_LAG.set(sum(behind))
        return not any(behind)

    async def take(self, messages: list[Any]) -> None:
        """Hold a batch of de-identified visits for every subscriber and release what may go, with the offsets."""
        latest: dict[str, ReadyVisit] = {}
        unreadable: list[tuple[Any, str]] = []
        for message in messages:
            try:
                ready = ready_visit(message.value or b"", self.policies, self.master)
            except UnreadableVisit as exc:
                unreadable.append((message, str(exc)))
                continue
            seen = latest.get(ready.visit["visit_ref"])
            if seen is None or seen.visit["version"] < ready.visit["version"]:
                latest[ready.visit["visit_ref"]] = ready
        offsets: dict[int, int] = {}
        for message in messages:
            offsets[message.partition] = max(offsets.get(message.partition, 0), message.offset + 1)
        async with self.pool.acquire() as conn, conn.transaction():
            for message, reason in unreadable:
                log.warning("analytics release: unreadable %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, reason)
                await self.store.set_aside(conn, message, reason)
                metrics.SET_ASIDE.inc()
            visits = list(latest.values())
            if visits:
                late_months = await self.store.keep_for_counts(conn, [
                    (r.visit["visit_ref"], r.visit["version"], r.visit["pseudonym"], r.visit["admitted_month"],
                     r.visit["province_code"], r.count_band, r.visit["sex"], r.visit["main_diagnosis_code"])
                    for r in visits])
                for month in late_months:  # late visits change a closed month's counts
                    await self.recount(conn, month)
                for policy in self.policies:
                    await self._hold(conn, policy, visits)
            await self.store.save_offsets(conn, self.source, offsets)

    async def _hold(self, conn: asyncpg.Connection, policy: SubscriberPolicy, visits: list[ReadyVisit]) -> None:
        rows = []
        for ready in visits:
            g, fine, coarse = ready.forms[policy.name]
            v = ready.visit
            rows.append((policy.name, v["visit_ref"], g.fine["visit_ref"], v["version"], v["admitted_month"],
                         v["pseudonym"], g.fine_cell, g.coarse_cell, fine, coarse))
        changed = await self.store.hold(conn, rows)
        if not changed:
            return
        months = sorted({row["admitted_month"] for row in changed})
        await self.store.open_windows(conn, policy.name, months)
        touched = list({r["fine_cell"] for r in changed})
        opened = await self.store.open_cells(conn, policy.name, FINE, touched)
        # an unopened cell holds no visit released as it is, so its waiting visits are all it counts
        waiting = await self.store.waiting_in(conn, policy.name, FINE, touched)
        await self._release(conn, policy, release_fine([_held(r) for r in waiting], policy.k, opened), FINE)
        closed = await self.store.closed_months(conn, policy.name, months)
        late = list({r["coarse_cell"] for r in changed if r["admitted_month"] in closed})
        if late:  # their window has closed: released widened if that cell has k people, otherwise suppressed
            await self._decide_widened(conn, policy, await self.store.waiting_in(conn, policy.name, COARSE, late))

    async def _decide_widened(self, conn: asyncpg.Connection, policy: SubscriberPolicy, waiting: list[Any]) -> None:
        """Release widened, or suppress, these waiting visits whose window has closed."""
        opened = await self.store.open_cells(conn, policy.name, COARSE, list({r["coarse_cell"] for r in waiting}))
        released, suppressed = release_coarse([_held(r) for r in waiting], policy.k, opened)
        await self._release(conn, policy, released, COARSE)
        if suppressed:
            months = await self.store.suppress(conn, policy.name, suppressed)
            await self.store.tally(conn, policy.name, "suppressed", _per_month(months))
            metrics.SUPPRESSED.labels(policy.name).inc(len(months))

    async def _release(self, conn: asyncpg.Connection, policy: SubscriberPolicy, refs: list[str], level: int) -> None:
        if refs:
            months = await self.store.release(conn, policy.name, refs, level)
            await self.store.tally(conn, policy.name, "released" if level == FINE else "generalised",
                                   _per_month(months))
            metrics.RELEASED.labels(policy.name, "as_given" if level == FINE else "widened").inc(len(months))

    async def close_due_windows(self) -> list[tuple[str, str]]:
        """Close each window whose month and grace have passed: widen or suppress what still waits, recount it."""
        now, closed = self.clock(), []
        async with self.pool.acquire() as conn:
            for policy in self.policies:
                for month in await self.store.unclosed_windows(conn, policy.name):
                    if window_closes(month, self.grace) > now:
                        continue
                    async with conn.transaction():
                        await self._decide_widened(conn, policy,
                                                   await self.store.waiting_in_month(conn, policy.name, month))
                        await self.store.close_window(conn, policy.name, month, now)
                        await self.recount(conn, month)
                    closed.append((policy.name, month))
                    log.info("analytics release: window %s closed for %s", month, policy.name)
        return closed

    async def recount(self, conn: asyncpg.Connection, month: str) -> None:
        """The aggregate feed of one admission month, small cells withheld."""
        per_code: dict[tuple[str, str], tuple[int, set[str]]] = {}
        per_chapter: dict[tuple[str, str], tuple[int, set[str]]] = {}
        for row in await self.store.visits_of_month(conn, month):
            base = f"{row['province_code'] or '?'}|{row['age_band']}|{row['sex']}"
            chapter = diagnosis_chapter(row["main_diagnosis_code"]) or "?"
            for table, key in ((per_code, (f"{base}|{chapter}", row["main_diagnosis_code"])),
                               (per_chapter, (base, chapter))):
                visits, people = table.get(key, (0, set()))
                people.add(row["person"])
                table[key] = (visits + 1, people)
        k = max((p.k for p in self.policies), default=5)
        chapters = suppress_small_counts({key: (v, len(p)) for key, (v, p) in per_chapter.items()}, k)
        codes = suppress_small_counts({key: (v, len(p)) for key, (v, p) in per_code.items()}, k)
        rows = [(month, *group.split("|")[:3], "chapter", item, n) for (group, item), n in chapters.items()]
        rows += [(month, *group.split("|")[:3], "code", item, n) for (group, item), n in codes.items()
                 if (group.rsplit("|", 1)[0], group.rsplit("|", 1)[1]) in chapters]
        await self.store.replace_counts(conn, month, [(m, p, b, int(s), g, d, n) for m, p, b, s, g, d, n in rows])

    async def publish(self) -> int:
        """Send what the outbox holds, in release order, and forget what the broker acknowledged."""
        assert self.producer is not None
        sent = 0
        for policy in self.policies:
            while rows := await self.store.outbox(policy.name, PUBLISH_ROWS):
                topic = self.topics[policy.name]
                futures = [await self.producer.send(topic, row["value"], key=row["key"], partition=0,
                                                    headers=[(RELEASE_SEQ_HEADER, str(row["seq"]).encode())])
                           for row in rows]
                await asyncio.gather(*futures)
                await self.store.published(policy.name, rows[-1]["seq"])
                sent += len(rows)
        return sent

    async def _last_published(self, topic: str) -> int:
        """The release sequence of the last record on a subscriber's topic (0 if none)."""
        assert self.consumer is not None
        reader = kafka.consumer(self.broker, "analytics-release-tail")
        await reader.start()
        try:
            tp = TopicPartition(topic, 0)
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            if end == 0:
                return 0
            reader.seek(tp, end - 1)
            while True:
                batch = await reader.getmany(tp, timeout_ms=2000)
                for message in batch.get(tp, []):
                    if message.offset == end - 1:
                        return release_seq(message.headers)
        finally:
            await reader.stop()


def _per_month(months: list[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for month in months:
        counted[month] = counted.get(month, 0) + 1
    return counted


def _held(row: Any) -> Held:
    return Held(row["visit_ref"], row["person"], row["fine_cell"], row["coarse_cell"], row["state"],
                row["released_as"])



async def release_until_caught_up(stage: ReleaseStage, timeout: float = 120.0) -> None:
    """Run a started stage until it has read everything, closed what is due and published it; then stop running it."""
    stop = asyncio.Event()
    running = asyncio.create_task(stage.run(stop))
    caught_up = asyncio.create_task(stage.caught_up.wait())
    try:
        await asyncio.wait([running, caught_up], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # its error, if it stopped with one
        if not caught_up.done():
            raise TimeoutError(f"the analytics release stage did not catch up with {stage.source} in {timeout:.0f} s")
    finally:
        caught_up.cancel()
        stop.set()
        await running


async def release_now(settings: Settings, master_key: bytes,
                      clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Release what visits.deidentified holds now for every policy of these settings, then stop (demo, tests)."""
    pool = await connect_pool(settings.database_url, min_size=1, max_size=3)
    try:
        stage = ReleaseStage(pool, kafka.Broker.of(settings), settings.topics.deidentified, settings.topic_prefix,
                             load_policies(settings.analytics_policy_dir), master_key, settings.analytics_grace_days,
                             clock)
        await stage.start()
        try:
            await release_until_caught_up(stage, timeout=3600)
        finally:
            await stage.stop()
    finally:
        await pool.close()


async def run_release_stage(settings: Settings, stop: asyncio.Event | None = None,
                            ready: asyncio.Event | None = None) -> None:
    """Run the release stage for every subscriber policy until stop is set (SIGTERM or SIGINT set it too)."""
    policies = load_policies(settings.analytics_policy_dir)
    if not policies:
        raise PolicyError(f"{settings.analytics_policy_dir} holds no subscriber policy (*.toml): nothing to release")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    pool = await while_unreachable("connect to PostgreSQL",
                                   partial(connect_pool, settings.database_url, min_size=1, max_size=3))
    stage = ReleaseStage(pool, kafka.Broker.of(settings), settings.topics.deidentified, settings.topic_prefix,
                         policies, load_or_create_key(settings.analytics_release_key_file),
                         settings.analytics_grace_days)
    health = None
    try:
        await stage.start()
        health = await metrics.serve(settings.analytics_metrics_port, lambda: (True, {}), "analytics-release",
                                     settings.metrics_host)
        log.info("analytics release stage ready: %s", ", ".join(f"{p.name} (k={p.k})" for p in policies))
        if ready is not None:
            ready.set()
        await stage.run(stop)
    finally:
        if health:
            await health.cleanup()
        await stage.stop()
        await pool.close()
