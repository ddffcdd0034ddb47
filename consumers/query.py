"""The query consumer: answers signed integration requests with the citizen's health book for a year."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
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
    LedgerLine,
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
from healthbook.gc_tuning import tune_for_service
from healthbook.retry import while_unreachable
from healthbook.store import PostgresQueryStore
from schemas.refusal_codes import RefusalCode

log = logging.getLogger(__name__)


class QueryStore(Protocol):
    """Where the query consumer reads the book and writes its ledger (PostgreSQL, or a fake in unit tests)."""

    async def write(self, lines: list[LedgerLine]) -> set[int]: ...

    async def books_of(self, wanted: list[tuple[str, int | None, bool]], judged_under: str | None = None
                       ) -> list[list[BookEntry]]: ...

    async def details_of(self, wanted: list[tuple[str, str, str]]) -> list[BookEntry | None]: ...

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


Source = tuple[int, int]  # a request's partition and offset on the requests topic


async def answer(store: QueryStore, raw: bytes | None, policy: QueryPolicy, source: Source,
                 now: datetime | None = None) -> Answer:
    """Decide one request, perform what the decision names in one transaction, and log its access once."""
    (answered,) = await answer_all(store, [(raw, source)], policy, now)
    return answered


async def answer_all(store: QueryStore, requests: list[tuple[bytes | None, Source]], policy: QueryPolicy,
                     now: datetime | None = None) -> list[Answer]:
    """Decide a batch of requests, read what they may see side by side, and write their ledger in one statement.

    Claims, consents and the access log of the whole batch are committed before any reply is returned,
    so a reply sent is always one the ledger holds; a crash before the commit answers them all again.
    """
    decisions = [decide(raw, policy.requests, now, source) for raw, source in requests]
    found = await _read(store, decisions, policy.sensitive.fingerprint)
    answers = [_replied(d, _performed(d, f), policy) for d, f in zip(decisions, found, strict=True)]
    replayed = await store.write([LedgerLine(entry, d if isinstance(d, Serve) else None)
                                  for d, (_, entry) in zip(decisions, answers, strict=True)])
    for i in replayed:  # another record holds the request id: the store logged it refused as a replay
        answers[i] = _replied(decisions[i], REPLAYED, policy)
    return [answered for answered, _ in answers]


async def _read(store: QueryStore, decisions: list[Decision], judged_under: str) -> list[list[BookEntry] | None]:
    """What each servable decision would show (a year's entries, or the one visit); None for refusals."""
    lists = [(i, d) for i, d in enumerate(decisions) if isinstance(d, Serve) and d.visit is None]
    details = [(i, d) for i, d in enumerate(decisions) if isinstance(d, Serve) and d.visit is not None]
    found: list[list[BookEntry] | None] = [None] * len(decisions)
    books, visits = await asyncio.gather(
        store.books_of([(d.personal_id, d.year, d.fhir) for _, d in lists], judged_under) if lists else _nothing(),
        store.details_of([(d.personal_id, *d.visit) for _, d in details]) if details else _nothing())  # type: ignore[misc]
    for (i, _), book in zip(lists, books, strict=True):
        found[i] = book
    for (i, _), visit in zip(details, visits, strict=True):
        found[i] = [] if visit is None else [visit]
    return found


async def _nothing() -> list[Any]:
    return []


def _performed(decision: Decision, found: list[BookEntry] | None) -> Refusal | list[BookEntry]:
    """What a decision comes to once read: refused, not found, or the entries to serve."""
    if isinstance(decision, Refuse):
        return decision.refusal
    assert found is not None, "every servable decision was read"
    return NOT_FOUND if decision.visit is not None and not found else found


def _replied(decision: Decision, found: Refusal | list[BookEntry], policy: QueryPolicy
             ) -> tuple[Answer, AccessEntry]:
    """The reply to one performed decision, its bytes, and its access log line."""
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
    return Answer(reply, encoded), access_entry(decision, found if isinstance(found, Refusal) else len(found))


async def answer_each_safely(store: QueryStore, messages: list[Any], policy: QueryPolicy) -> list[Answer]:
    """Answer a batch of requests together; when the batch fails on something, answer each alone instead.

    One request the service fails on must not fail the others read with it: alone, it is answered
    `internal_error` and every other request of the batch is answered as usual.
    """
    try:
        return await while_unreachable("answer requests", partial(
            answer_all, store, [(m.value, (m.partition, m.offset)) for m in messages], policy))
    except Exception as exc:
        if len(messages) == 1:
            return [await _internal_error(store, messages[0], exc)]
        log.warning("a batch of %d requests failed (%s); answering each alone", len(messages), type(exc).__name__)
    return [await answer_safely(store, message, policy) for message in messages]


async def answer_safely(store: QueryStore, message: Any, policy: QueryPolicy) -> Answer:
    """Answer one request, waiting out an unreachable database; anything else it fails on gets a refusal.

    A request the service fails on is answered `internal_error` and logged by its place on the topic,
    never by its content, so one request can never stop the query consumer.
    """
    try:
        return await while_unreachable("answer a request", partial(
            answer, store, message.value, policy, (message.partition, message.offset)))
    except Exception as exc:
        return await _internal_error(store, message, exc)


async def _internal_error(store: QueryStore, message: Any, exc: Exception) -> Answer:
    log.error("failed on the request at %s[%d]@%d (%s); answered internal_error", message.topic,
              message.partition, message.offset, type(exc).__name__,
              extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
    failed = Refuse(requester_of(message.value), INTERNAL_ERROR)
    with contextlib.suppress(Exception):  # the access is still logged where the database lets it be
        await store.write([LedgerLine(access_entry(failed, INTERNAL_ERROR))])
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


ANSWERS_AT_ONCE = 8  # database connections: a batch's reads side by side, other batches' writes
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
    """Reads requests, answers each batch read as soon as it is read (side by side), commits past those answered."""

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
        messages = [message for records in batches.values() for message in records]
        if not messages:
            return
        for message in messages:
            self.offsets.read(TopicPartition(message.topic, message.partition), message.offset)
        task = asyncio.create_task(self._reply_to(messages))
        self.answering.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.answering.discard(task)
        self.one_finished.set()
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    async def _reply_to(self, messages: list[Any]) -> None:
        answers = await answer_each_safely(self.store, messages, self.policy)
        sent = [await self.producer.send(self.replies_topic, answered.encoded, key=answered.reply.request_id.encode())
                for answered in answers]
        await asyncio.gather(*sent)
        now_ms = time.time() * 1000
        for message, answered in zip(messages, answers, strict=True):
            reply = answered.reply
            metrics.REQUESTS.labels(reply.refusal_code or reply.status).inc()
            metrics.REQUEST_SECONDS.observe(max(0.0, now_ms - message.timestamp) / 1000)
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
    tune_for_service()
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
