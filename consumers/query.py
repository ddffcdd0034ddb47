"""The query consumer: answers signed integration requests with the citizen's health book for a year."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.trusted_keys import load_trusted_keys
from domain import replies
from domain.consent import DEFAULT_WINDOW, REPLAYED, read_request
from domain.fhir_bundle import book_bundle
from domain.replies import Reply
from domain.sensitive_diagnoses import DEFAULT as DEFAULT_SENSITIVE
from domain.sensitive_diagnoses import SensitiveDiagnoses
from healthbook import kafka
from healthbook import observability as metrics
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from healthbook.store import BookReader

log = logging.getLogger(__name__)
BOOK = BookReader()
INTERNAL_ERROR = ("Hệ thống chưa xử lý được yêu cầu này; vui lòng thử lại sau "
                  "(healthbook failed on this request and has logged it).")


@dataclass(frozen=True)
class Source:
    """Where a request was read: its partition and offset on the requests topic, and when it is judged."""

    partition: int
    offset: int
    now: datetime | None = None


@dataclass(frozen=True)
class QueryPolicy:
    """What the query consumer trusts and how it answers: identity-platform keys, freshness, sensitive codes."""

    trusted: dict[str, bytes]
    window: timedelta = DEFAULT_WINDOW
    sensitive: SensitiveDiagnoses = DEFAULT_SENSITIVE

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryPolicy:
        """The policy the settings describe, reading the trusted identity-platform keys."""
        return cls(load_trusted_keys(settings.identity_keys_file), timedelta(seconds=settings.request_window_seconds),
                   SensitiveDiagnoses.parse(settings.sensitive_diagnoses))


async def answer(conn: asyncpg.Connection, raw: bytes, policy: QueryPolicy, source: Source) -> Reply:
    """Decide one request, record consent and access, and build its reply."""
    request, refusal = read_request(raw, policy.trusted, source.now, policy.window)
    if request is None:
        assert refusal is not None
        await BOOK.log_access(conn, "", None, None, "refused", refusal.code)
        return replies.refused("", refusal.code, refusal.message)
    request_id, personal_id, year = request["request_id"], request["personal_id"], request["year"]
    async with conn.transaction():
        if refusal:
            await BOOK.log_access(conn, request_id, personal_id, year, "refused", refusal.code)
            return replies.refused(request_id, refusal.code, refusal.message, year)
        if not await BOOK.claim_request(conn, request_id, request["requested_at"], (source.partition, source.offset)):
            await BOOK.log_access(conn, request_id, personal_id, year, "refused", REPLAYED.code)
            return replies.refused(request_id, REPLAYED.code, REPLAYED.message, year)
        await BOOK.record_consent(conn, personal_id, request["requested_at"], request_id)
        detail = request.get("detail")
        if detail:
            found = await BOOK.visit_detail(conn, personal_id, detail["facility_code"], detail["visit_code"])
            if found is None:
                await BOOK.log_access(conn, request_id, personal_id, year, "refused", "not_found")
                return replies.refused(request_id, "not_found", replies.NOT_FOUND, year)
            await BOOK.log_access(conn, request_id, personal_id, year, "served_detail", None, 1)
            if request["format"] == "fhir":
                return _bundle_reply(request_id, year, personal_id, [found], policy, detail=True)
            return replies.detail_served(request_id, year, found)
        scope = None if request["every_year"] else year  # None: every year
        entries = await BOOK.visits_of(conn, personal_id, scope)
        await BOOK.log_access(conn, request_id, personal_id, scope, "served", None, len(entries))
    if request["format"] == "fhir":
        return _bundle_reply(request_id, year, personal_id, entries, policy, detail=False)
    return replies.year_served(request_id, year, entries, policy.sensitive)


def _bundle_reply(request_id: str, year: int, personal_id: str, entries: list[replies.BookEntry],
                  policy: QueryPolicy, detail: bool) -> Reply:
    """The answer as a FHIR R4 Bundle in the reply's fhir_bundle."""
    bundle = book_bundle(personal_id, entries, detail=detail, sensitive=policy.sensitive)
    message = f"FHIR R4 Bundle: {len(entries)} lượt khám" if entries else replies.EMPTY_HISTORY
    return Reply(request_id=request_id, status="ok", message=message, year=year,
                 fhir_bundle=orjson.dumps(bundle).decode())


async def _answer(pool: asyncpg.Pool, message: Any, policy: QueryPolicy) -> Reply:
    async with pool.acquire() as conn:
        return await answer(conn, message.value, policy, Source(message.partition, message.offset))


async def answer_safely(pool: asyncpg.Pool, message: Any, policy: QueryPolicy) -> Reply:
    """Answer one request, waiting out an unreachable database; anything else it fails on gets a refusal.

    A request the service fails on is answered `internal_error` and logged by its place on the topic,
    never by its content, so one request can never stop the query consumer.
    """
    try:
        return await while_unreachable("answer a request", partial(_answer, pool, message, policy))
    except Exception as exc:
        log.error("failed on the request at %s[%d]@%d (%s); answered internal_error", message.topic,
                  message.partition, message.offset, type(exc).__name__,
                  extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        request, _ = read_request(message.value, {})  # only for the request id
        return replies.refused(request["request_id"] if request else "", "internal_error", INTERNAL_ERROR)


TOO_LARGE = ("Sổ sức khỏe này quá lớn để gửi trong một lần; vui lòng xem từng năm hoặc từng lượt khám "
             "(the reply would exceed the topic's largest record).")


def fitted(reply: Reply, limit: int) -> bytes:
    """The reply's bytes, or a too_large refusal's when they would not fit a record of the replies topic.

    A whole book with its signed envelopes can outgrow the topic's limit; sending it would fail every
    time, so the citizen is told to ask for less instead.
    """
    encoded = reply.encode()
    if len(encoded) <= limit:
        return encoded
    log.warning("reply to %s is %d bytes, over the %d-byte limit; answered too_large", reply.request_id,
                len(encoded), limit)
    return replies.refused(reply.request_id, "too_large", TOO_LARGE, reply.year).encode()


async def _forget_old_requests(pool: asyncpg.Pool, window: timedelta, pruned_at: float) -> float:
    """Once a minute, drop served request ids too old to be fresh again, so the table stays small."""
    clock = asyncio.get_running_loop().time()
    if clock - pruned_at < 60:
        return pruned_at
    await while_unreachable("forget old request ids", partial(
        BOOK.forget_requests_before, pool, datetime.now(UTC) - window - timedelta(minutes=1)))
    return clock


ANSWERS_AT_ONCE = 8  # requests answered side by side, one database connection each
IN_FLIGHT_AT_MOST = 500  # requests read but not yet answered and acknowledged, before reading pauses
COMMIT_EVERY_SECONDS = 0.2


class AnsweredOffsets:
    """Which read requests are answered and their replies acknowledged, so offsets are committed only past those.

    Requests are answered as soon as they are read, side by side, and finish in any order; a partition's
    offset is committed only up to its first request still in flight, so a crash answers again (the
    same request at the same place is answered again by design) rather than leaving one unanswered.
    """

    def __init__(self) -> None:
        self._in_order: dict[TopicPartition, deque[int]] = {}
        self._done: set[tuple[TopicPartition, int]] = set()
        self._committable: dict[TopicPartition, int] = {}

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._in_order.values())

    def read(self, tp: TopicPartition, offset: int) -> None:
        """A request was read and is being answered."""
        self._in_order.setdefault(tp, deque()).append(offset)

    def answered(self, tp: TopicPartition, offset: int) -> None:
        """Its reply is acknowledged by the broker."""
        self._done.add((tp, offset))
        offsets = self._in_order[tp]
        while offsets and (tp, offsets[0]) in self._done:
            self._done.discard((tp, offsets[0]))
            self._committable[tp] = offsets.popleft() + 1

    def take_committable(self) -> dict[TopicPartition, int]:
        """The offsets to commit now (each partition's next unanswered request), once each."""
        ready, self._committable = self._committable, {}
        return ready


class RequestLoop:
    """Reads requests, answers each as soon as it is read (side by side), and commits past those answered."""

    def __init__(self, settings: Settings, policy: QueryPolicy, pool: asyncpg.Pool, consumer: AIOKafkaConsumer,
                 producer: AIOKafkaProducer) -> None:
        self.settings, self.policy, self.pool = settings, policy, pool
        self.consumer, self.producer = consumer, producer
        self.offsets = AnsweredOffsets()
        self.answering: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []
        self.one_finished = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Answer until stop is set, then finish the requests in flight and commit past them."""
        pruned_at = committed_at = 0.0
        while not stop.is_set():
            pruned_at = await _forget_old_requests(self.pool, self.policy.window, pruned_at)
            if self.failures:  # only the broker can fail a reply's send: stop, restart, answer again
                raise self.failures[0]
            if len(self.offsets) < IN_FLIGHT_AT_MOST:
                self._answer_all(await self.consumer.getmany(timeout_ms=COMMIT_EVERY_SECONDS * 500, max_records=100))
            else:  # as many in flight as allowed: wait for one to finish rather than read more
                self.one_finished.clear()
                await self.one_finished.wait()
            clock = asyncio.get_running_loop().time()
            if clock - committed_at >= COMMIT_EVERY_SECONDS:
                committed_at = clock
                await self._commit()
        if self.answering:
            await asyncio.gather(*self.answering)
        await self._commit()

    def cancel(self) -> None:
        """Abandon the requests in flight (they are answered again after a restart)."""
        for task in self.answering:
            task.cancel()

    def _answer_all(self, batches: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batches.items():
            for message in records:
                self.offsets.read(tp, message.offset)
                task = asyncio.create_task(self._reply_to(message))
                self.answering.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.answering.discard(task)
        self.one_finished.set()
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    async def _reply_to(self, message: Any) -> None:
        reply = await answer_safely(self.pool, message, self.policy)
        encoded = fitted(reply, kafka.largest_message())
        await (await self.producer.send(self.settings.topics.integration_replies, encoded,
                                        key=reply.request_id.encode()))
        metrics.REQUESTS.labels(reply.refusal_code or reply.status).inc()
        log.info("request %s: %s %s", reply.request_id, reply.status, reply.refusal_code or "",
                 extra={"request_id": reply.request_id, "partition": message.partition, "offset": message.offset})
        self.offsets.answered(TopicPartition(message.topic, message.partition), message.offset)

    async def _commit(self) -> None:
        assigned = self.consumer.assignment()  # a partition lost to a rebalance is answered again by its new owner
        ready = {tp: offset for tp, offset in self.offsets.take_committable().items() if tp in assigned}
        if ready:
            await self.consumer.commit(ready)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Consume integration requests and produce replies until stop is set."""
    policy = QueryPolicy.from_settings(settings)
    pool = await while_unreachable("connect to PostgreSQL",
                                   partial(connect_pool, settings.database_url, min_size=1,
                                           max_size=ANSWERS_AT_ONCE))
    consumer = await kafka.started(partial(kafka.consumer, settings.kafka_bootstrap, "query-consumer",
                                           settings.topics.integration_requests, group_id=settings.query_group_id))
    producer = await kafka.started(partial(kafka.producer, settings.kafka_bootstrap, "query-consumer"))
    health = await metrics.serve(settings.query_metrics_port, lambda: (True, {}), "query-consumer",
                                 settings.metrics_host)
    log.info("query consumer ready on %s", settings.topics.integration_requests)
    requests = RequestLoop(settings, policy, pool, consumer, producer)
    try:
        await requests.run(stop or asyncio.Event())
    finally:
        requests.cancel()
        if health:
            await health.cleanup()
        await consumer.stop()
        await producer.stop()
        await pool.close()
