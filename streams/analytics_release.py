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
from domain.k_anonymity import COARSE, FINE, RELEASED, Held, release_coarse, release_fine, suppress_small_counts
from domain.release_input import ReadyVisit, UnreadableVisit, ready_visit
from healthbook import kafka
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from schemas.headers import RELEASE_SEQ_HEADER, release_seq
from schemas.topic_names import released_topic as released_base
from streams.pseudonym_key import load_or_create_key

log = logging.getLogger(__name__)
LOCK_ID = 0x48424B41  # one release stage per database: pg_advisory_lock on this number
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
        self.pool, self.broker, self.source = pool, broker, source_topic
        self.policies, self.master, self.grace, self.clock = policies, master_key, grace_days, clock
        self.topics = {p.name: released_topic(topic_prefix, p.name) for p in policies}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._lock: asyncpg.Connection | None = None
        self.caught_up = asyncio.Event()  # set once everything on the source at a look has been read

    async def start(self) -> None:
        """Take the database's lock, resume from the stored offsets and recover how far each topic got."""
        self._lock = await self.pool.acquire()
        if not await self._lock.fetchval("select pg_try_advisory_lock($1)", LOCK_ID):
            await self.pool.release(self._lock)
            self._lock = None
            raise ReleaseStageBusy("another analytics release stage runs on this database; run one")
        partitions = [TopicPartition(self.source, p) for p in await kafka.partitions_of(self.broker, self.source)]
        self.consumer = kafka.consumer(self.broker, "analytics-release")
        await self.consumer.start()
        self.consumer.assign(partitions)
        stored = {row["partition"]: row["next_offset"] for row in await self.pool.fetch(
            "select partition, next_offset from analytics_offsets where topic = $1", self.source)}
        for tp in partitions:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                await self.consumer.seek_to_beginning(tp)
        self.producer = kafka.producer(self.broker, "analytics-release")
        await self.producer.start()
        async with self.pool.acquire() as conn:
            for policy in self.policies:
                await conn.execute("insert into analytics_sequences values ($1, 1, 0) on conflict do nothing",
                                   policy.name)
                on_topic = await self._last_published(self.topics[policy.name])
                await conn.execute(
                    "update analytics_sequences set published_seq = greatest(published_seq, $2) where subscriber = $1",
                    policy.name, on_topic)
                await conn.execute("delete from analytics_outbox where subscriber = $1 and seq <= "
                                   "(select published_seq from analytics_sequences where subscriber = $1)", policy.name)

    async def stop(self) -> None:
        """Close the clients and give the lock back."""
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()
        if self._lock is not None:
            await self._lock.execute("select pg_advisory_unlock($1)", LOCK_ID)
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
        return all([await self.consumer.position(tp) >= ends[tp] for tp in assigned])

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
                await conn.execute("insert into analytics_unreadable values ($1, $2, $3, $4, $5) "
                                   "on conflict do nothing", message.topic, message.partition, message.offset, reason,
                                   message.value)
            visits = list(latest.values())
            await self._keep_for_counts(conn, visits)
            for policy in self.policies:
                await self._hold(conn, policy, visits)
            await conn.executemany(
                "insert into analytics_offsets values ($1, $2, $3) on conflict (topic, partition) "
                "do update set next_offset = excluded.next_offset", [(self.source, p, o) for p, o in offsets.items()])

    async def _keep_for_counts(self, conn: asyncpg.Connection, visits: list[ReadyVisit]) -> None:
        rows = [(r.visit["visit_ref"], r.visit["version"], r.visit["pseudonym"], r.visit["admitted_month"],
                 r.visit["province_code"], r.count_band, r.visit["sex"], r.visit["main_diagnosis_code"])
                for r in visits]
        await conn.executemany(
            "insert into analytics_visits values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (visit_ref) do update "
            "set version = excluded.version, person = excluded.person, admitted_month = excluded.admitted_month, "
            "province_code = excluded.province_code, age_band = excluded.age_band, sex = excluded.sex, "
            "main_diagnosis_code = excluded.main_diagnosis_code where analytics_visits.version < excluded.version",
            rows)
        closed = await conn.fetch("select distinct admitted_month from analytics_windows where closed_at is not null "
                                  "and admitted_month = any($1::text[])",
                                  list({r.visit["admitted_month"] for r in visits}))
        for row in closed:  # late visits change a closed month's counts
            await self.recount(conn, row["admitted_month"])

    async def _hold(self, conn: asyncpg.Connection, policy: SubscriberPolicy, visits: list[ReadyVisit]) -> None:
        if not visits:
            return
        rows = []
        for ready in visits:
            g, fine, coarse = ready.forms[policy.name]
            v = ready.visit
            rows.append((policy.name, v["visit_ref"], g.fine["visit_ref"], v["version"], v["admitted_month"],
                         v["pseudonym"], g.fine_cell, g.coarse_cell, fine, coarse))
        changed = await conn.fetch(
            """insert into analytics_held (subscriber, visit_ref, release_key, version, admitted_month, person,
                                           fine_cell, coarse_cell, fine_value, coarse_value, state, released_as)
               select *, 'waiting', null::smallint from unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                   $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::bytea[])
               on conflict (subscriber, visit_ref) do update set
                   release_key = excluded.release_key, version = excluded.version,
                   admitted_month = excluded.admitted_month, person = excluded.person,
                   fine_cell = excluded.fine_cell, coarse_cell = excluded.coarse_cell,
                   fine_value = excluded.fine_value, coarse_value = excluded.coarse_value,
                   state = 'waiting', released_as = null
               where analytics_held.version < excluded.version
               returning visit_ref, admitted_month, fine_cell, coarse_cell""",
            *[list(column) for column in zip(*rows, strict=True)])
        if not changed:
            return
        months = sorted({row["admitted_month"] for row in changed})
        await conn.executemany("insert into analytics_windows (subscriber, admitted_month) values ($1, $2) "
                               "on conflict do nothing", [(policy.name, m) for m in months])
        touched = list({r["fine_cell"] for r in changed})
        opened = await self._open(conn, policy, FINE, touched)
        waiting = await conn.fetch(  # an unopened cell holds no visit released as it is: its waiting ones are all
            "select visit_ref, person, fine_cell, coarse_cell, state, released_as from analytics_held "
            "where subscriber = $1 and fine_cell = any($2::text[]) and state = 'waiting'", policy.name, touched)
        await self._release(conn, policy, release_fine([_held(r) for r in waiting], policy.k, opened), FINE)
        closed = {row["admitted_month"] for row in await conn.fetch(
            "select admitted_month from analytics_windows where subscriber = $1 and closed_at is not null "
            "and admitted_month = any($2::text[])", policy.name, months)}
        late = list({r["coarse_cell"] for r in changed if r["admitted_month"] in closed})
        if late:  # their window has closed: released widened if that cell has k people, otherwise suppressed
            await self._decide_widened(conn, policy, await conn.fetch(
                "select visit_ref, person, fine_cell, coarse_cell, state, released_as from analytics_held "
                "where subscriber = $1 and coarse_cell = any($2::text[]) and state = 'waiting'", policy.name, late))

    async def _open(self, conn: asyncpg.Connection, policy: SubscriberPolicy, level: int, cells: list[str]) -> set[str]:
        """Which of these cells already went out with k people."""
        return {row["cell"] for row in await conn.fetch(
            "select cell from analytics_open_cells where subscriber = $1 and level = $2 and cell = any($3::text[])",
            policy.name, level, cells)}

    async def _decide_widened(self, conn: asyncpg.Connection, policy: SubscriberPolicy, waiting: list[Any]) -> None:
        """Release widened, or suppress, these waiting visits whose window has closed."""
        opened = await self._open(conn, policy, COARSE, list({r["coarse_cell"] for r in waiting}))
        released, suppressed = release_coarse([_held(r) for r in waiting], policy.k, opened)
        await self._release(conn, policy, released, COARSE)
        if suppressed:
            months = await conn.fetch(
                "update analytics_held set state = 'suppressed' where subscriber = $1 and visit_ref = any($2::text[]) "
                "and state = 'waiting' returning admitted_month", policy.name, suppressed)
            await self._tally(conn, policy, "suppressed", [r["admitted_month"] for r in months])

    async def _release(self, conn: asyncpg.Connection, policy: SubscriberPolicy, refs: list[str], level: int) -> None:
        if not refs:
            return
        picked = await conn.fetch(
            f"""update analytics_held set state = '{RELEASED}', released_as = $3
                where subscriber = $1 and visit_ref = any($2::text[]) and state = 'waiting'
                returning admitted_month, release_key, {'fine_value' if level == FINE else 'coarse_value'} as value,
                          {'fine_cell' if level == FINE else 'coarse_cell'} as cell""",
            policy.name, refs, level)
        await conn.execute("insert into analytics_open_cells select $1, $2, unnest($3::text[]) on conflict do nothing",
                           policy.name, level, list({row["cell"] for row in picked}))
        first = await conn.fetchval("update analytics_sequences set next_seq = next_seq + $2 where subscriber = $1 "
                                    "returning next_seq - $2", policy.name, len(picked))
        await conn.executemany("insert into analytics_outbox values ($1, $2, $3, $4)",
                               [(policy.name, first + i, row["release_key"].encode(), row["value"])
                                for i, row in enumerate(picked)])
        await self._tally(conn, policy, "released" if level == FINE else "generalised",
                          [row["admitted_month"] for row in picked])

    async def _tally(self, conn: asyncpg.Connection, policy: SubscriberPolicy, column: str, months: list[str]) -> None:
        per_month: dict[str, int] = {}
        for month in months:
            per_month[month] = per_month.get(month, 0) + 1
        await conn.executemany(
            f"insert into analytics_windows (subscriber, admitted_month, {column}) values ($1, $2, $3) "
            f"on conflict (subscriber, admitted_month) do update set {column} = analytics_windows.{column} + $3",
            [(policy.name, month, n) for month, n in per_month.items()])

    async def close_due_windows(self) -> list[tuple[str, str]]:
        """Close each window whose month and grace have passed: widen or suppress what still waits, recount it."""
        now, closed = self.clock(), []
        async with self.pool.acquire() as conn:
            for policy in self.policies:
                for row in await conn.fetch("select admitted_month from analytics_windows where subscriber = $1 "
                                            "and closed_at is null order by admitted_month", policy.name):
                    month = row["admitted_month"]
                    if window_closes(month, self.grace) > now:
                        continue
                    async with conn.transaction():
                        await self._decide_widened(conn, policy, await conn.fetch(
                            "select visit_ref, person, fine_cell, coarse_cell, state, released_as from analytics_held "
                            "where subscriber = $1 and admitted_month = $2 and state = 'waiting'",
                            policy.name, month))
                        await conn.execute("update analytics_windows set closed_at = $3 where subscriber = $1 "
                                           "and admitted_month = $2", policy.name, month, now)
                        await self.recount(conn, month)
                    closed.append((policy.name, month))
                    log.info("analytics release: window %s closed for %s", month, policy.name)
        return closed

    async def recount(self, conn: asyncpg.Connection, month: str) -> None:
        """The aggregate feed of one admission month, small cells withheld."""
        per_code: dict[tuple[str, str], tuple[int, set[str]]] = {}
        per_chapter: dict[tuple[str, str], tuple[int, set[str]]] = {}
        for row in await conn.fetch("select province_code, age_band, sex, main_diagnosis_code, person "
                                    "from analytics_visits where admitted_month = $1", month):
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
        await conn.execute("delete from analytics_visit_counts where admitted_month = $1", month)
        await conn.executemany("insert into analytics_visit_counts values ($1, $2, $3, $4::int, $5, $6, $7)",
                               [(m, p, b, int(s), g, d, n) for m, p, b, s, g, d, n in rows])

    async def publish(self) -> int:
        """Send what the outbox holds, in release order, and forget what the broker acknowledged."""
        assert self.producer is not None
        sent = 0
        for policy in self.policies:
            while True:
                rows = await self.pool.fetch(
                    "select seq, key, value from analytics_outbox where subscriber = $1 and seq > "
                    "(select published_seq from analytics_sequences where subscriber = $1) order by seq limit $2",
                    policy.name, PUBLISH_ROWS)
                if not rows:
                    break
                topic = self.topics[policy.name]
                futures = [await self.producer.send(topic, row["value"], key=row["key"], partition=0,
                                                    headers=[(RELEASE_SEQ_HEADER, str(row["seq"]).encode())])
                           for row in rows]
                await asyncio.gather(*futures)
                last = rows[-1]["seq"]
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute("update analytics_sequences set published_seq = $2 where subscriber = $1",
                                       policy.name, last)
                    await conn.execute("delete from analytics_outbox where subscriber = $1 and seq <= $2",
                                       policy.name, last)
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
    try:
        await stage.start()
        log.info("analytics release stage ready: %s", ", ".join(f"{p.name} (k={p.k})" for p in policies))
        if ready is not None:
            ready.set()
        await stage.run(stop)
    finally:
        await stage.stop()
        await pool.close()
