"""The query consumer: answers signed integration requests with the citizen's health book for a year."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from consumers.trusted_keys import load_trusted_keys
from domain import replies
from domain.book_entry import BookEntry
from domain.consent import (
    INTERNAL_ERROR,
    NOT_FOUND,
    REPLAYED,
    TOO_LARGE,
    AccessEntry,
    Decision,
    Refusal,
    Refuse,
    RequestPolicy,
    Serve,
    access_entry,
    decide,
    requester_of,
)
from domain.replies import Reply
from domain.sensitive_visit import SensitivePolicy
from healthbook import kafka
from healthbook import observability as metrics
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from healthbook.store import PostgresQueryStore
from schemas.refusal_codes import RefusalCode

log = logging.getLogger(__name__)


class QueryUnit(Protocol):
    """One request's reads and writes, in one transaction: the request id's claim, consent, the book, access."""

    async def claim_request(self, request_id: str, requested_at: datetime, source: tuple[int, int]) -> bool: ...

    async def record_consent(self, personal_id: str, confirmed_at: datetime, request_id: str) -> None: ...

    async def log_access(self, entry: AccessEntry) -> None: ...

    async def visits_of(self, personal_id: str, year: int | None) -> list[BookEntry]: ...

    async def visit_detail(self, personal_id: str, facility_code: str, visit_code: str) -> BookEntry | None: ...


class QueryStore(Protocol):
    """Where the query consumer reads the book and writes its ledger (PostgreSQL, or a fake in unit tests)."""

    def transaction(self) -> AbstractAsyncContextManager[QueryUnit]: ...

    async def forget_requests_before(self, before: datetime) -> int: ...


@dataclass(frozen=True)
class QueryPolicy:
    """What the query consumer trusts and how it answers: request keys and freshness, what is sensitive, reply size."""

    requests: RequestPolicy
    sensitive: SensitivePolicy
    largest_reply: int

    @classmethod
    def from_settings(cls, settings: Settings, broker: kafka.Broker) -> QueryPolicy:
        """The policy the settings describe, reading the trusted identity-platform keys."""
        return cls(settings.request_policy(load_trusted_keys(settings.identity_keys_file)), settings.sensitive,
                   broker.largest_message)


@dataclass(frozen=True)
class Answer:
    """A request's reply and the bytes sent for it."""

    reply: Reply
    encoded: bytes


async def answer(store: QueryStore, raw: bytes | None, policy: QueryPolicy, source: tuple[int, int],
                 now: datetime | None = None) -> Answer:
    """Decide one request, perform what the decision names in one transaction, and log its access once."""
    decision = decide(raw, policy.requests, now, source)
    async with store.transaction() as unit:
        found = await _perform(unit, decision)
        if isinstance(found, Refusal):
            reply = replies.refusal(decision, found)
        else:
            assert isinstance(decision, Serve), "only a request decided servable reads the book"
            reply = replies.served(decision, found, policy.sensitive)
        reply, encoded = replies.fitted(reply, policy.largest_reply)
        if reply.refusal_code == RefusalCode.TOO_LARGE:
            log.warning("reply to %s would exceed the %d-byte limit; answered too_large", reply.request_id,
                        policy.largest_reply)
            found = TOO_LARGE
        await unit.log_access(access_entry(decision, found if isinstance(found, Refusal) else len(found)))
    return Answer(reply, encoded)


async def _perform(unit: QueryUnit, decision: Decision) -> Refusal | list[BookEntry]:
    """The book's entries a decision serves, or why it is refused after all (replayed, or no such visit)."""
    if isinstance(decision, Refuse):
        return decision.refusal
    if not await unit.claim_request(decision.request_id, decision.requested_at, decision.source):
        return REPLAYED
    await unit.record_consent(decision.personal_id, decision.requested_at, decision.request_id)
    if decision.visit is None:
        return await unit.visits_of(decision.personal_id, decision.year)
    found = await unit.visit_detail(decision.personal_id, *decision.visit)
    return NOT_FOUND if found is None else [found]


async def answer_safely(store: QueryStore, message: Any, policy: QueryPolicy) -> Answer:
    """Answer one request, waiting out an unreachable database; anything else it fails on gets a refusal.

    A request the service fails on is answered `internal_error` and logged by its place on the topic,
    never by its content, so one request can never stop the query consumer.
    """
    try:
        return await while_unreachable("answer a request", partial(
            answer, store, message.value, policy, (message.partition, message.offset)))
    except Exception as exc:
        log.error("failed on the request at %s[%d]@%d (%s); answered internal_error", message.topic,
                  message.partition, message.offset, type(exc).__name__,
                  extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        failed = Refuse(requester_of(message.value), INTERNAL_ERROR)
        with contextlib.suppress(Exception):  # the access is still logged where the database lets it be
            async with store.transaction() as unit:
                await unit.log_access(access_entry(failed, INTERNAL_ERROR))
        reply = replies.refusal(failed, INTERNAL_ERROR)
        return Answer(reply, reply.encode())


async def _forget_old_requests(store: QueryStore, window: timedelta, pruned_at: float) -> float:
    """Once a minute, drop served request ids too old to be fresh again, so the table stays small."""
    clock = asyncio.get_running_loop().time()
    if clock - pruned_at < 60:
        return pruned_at
    await while_unreachable("forget old request ids", partial(
        store.forget_requests_before, datetime.now(UTC) - window - timedelta(minutes=1)))
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

    def __init__(self, replies_topic: str, policy: QueryPolicy, store: QueryStore, consumer: AIOKafkaConsumer,
                 producer: AIOKafkaProducer) -> None:
        self.replies_topic, self.policy, self.store = replies_topic, policy, store
        self.consumer, self.producer = consumer, producer
        self.offsets = AnsweredOffsets()
        self.answering: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []
        self.one_finished = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Answer until stop is set, then finish the requests in flight and commit past them."""
        pruned_at = committed_at = 0.0
        while not stop.is_set():
            pruned_at = await _forget_old_requests(self.store, self.policy.requests.window, pruned_at)
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
        answered = await answer_safely(self.store, message, self.policy)
        reply = answered.reply
        await (await self.producer.send(self.replies_topic, answered.encoded, key=reply.request_id.encode()))
        metrics.REQUESTS.labels(reply.refusal_code or reply.status).inc()
        log.info("request %s: %s %s", reply.request_id, reply.status, reply.refusal_code or "",
                 extra={"request_id": reply.request_id, "partition": message.partition, "offset": message.offset})
        self.offsets.answered(TopicPartition(message.topic, message.partition), message.offset)

    async def _commit(self) -> None:
        assigned = self.consumer.assignment()  # a partition lost to a rebalance is answered again by its new owner
        ready = {tp: offset for tp, offset in self.offsets.take_committable().items() if tp in assigned}
        if not ready:
            return
        try:
            await self.consumer.commit(ready)
        except CommitFailedError:
            # The group moved these partitions while this member was away (paused, cut off from the
            # coordinator): their new owner answers the requests past its last commit again, and a
            # citizen's app keeps the first reply per request id. This member rejoins at its next read.
            log.warning("the group was rebalanced before offsets %s could be committed; their requests are "
                        "answered again by the partitions' new owner",
                        {f"{tp.topic}[{tp.partition}]": offset for tp, offset in ready.items()})


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Consume integration requests and produce replies until stop is set."""
    broker = kafka.Broker.of(settings)
    policy = QueryPolicy.from_settings(settings, broker)
    pool = await while_unreachable("connect to PostgreSQL",
                                   partial(connect_pool, settings.database_url, min_size=1,
                                           max_size=ANSWERS_AT_ONCE))
    consumer = await kafka.started(partial(kafka.consumer, broker, "query-consumer",
                                           settings.topics.integration_requests, group_id=settings.query_group_id))
    producer = await kafka.started(partial(kafka.producer, broker, "query-consumer"))
    health = await metrics.serve(settings.query_metrics_port, lambda: (True, {}), "query-consumer",
                                 settings.metrics_host)
    log.info("query consumer ready on %s", settings.topics.integration_requests)
    requests = RequestLoop(settings.topics.integration_replies, policy, PostgresQueryStore(pool), consumer,
                           producer)
    try:
        await requests.run(stop or asyncio.Event())
    finally:
        requests.cancel()
        if health:
            await health.cleanup()
        await consumer.stop()
        await producer.stop()
        await pool.close()
