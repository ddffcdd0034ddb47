"""Reads a whole topic from its beginning (clinic keys, identity cards, dead letters), once or following it."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from domain.registry_trust import Untrusted
from healthbook import kafka, observability
from schemas.errors import ContractError
from schemas.registry_reasons import IgnoredBecause

log = logging.getLogger(__name__)


class TopicFollower:
    """Reads every partition of a topic without a consumer group, so each worker sees every entry."""

    def __init__(self, broker: kafka.Broker, topic: str, apply: Callable[[bytes | None, bytes | None], object],
                 *, whole_message: bool = False) -> None:
        self.topic = topic
        self.apply = apply
        self._whole = whole_message  # apply(message) instead of apply(key, value)
        self._broker = broker
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.ignored: Counter[str] = Counter()  # records skipped, by why: unreadable, failed, or Untrusted.kind

    async def start(self) -> None:
        """Load the topic up to its current end, then keep following it in the background."""
        await self._open()
        await self.catch_up()
        log.info("%s loaded", self.topic)
        self._task = asyncio.create_task(self._follow())

    async def _open(self) -> None:
        partitions = await kafka.partitions_of(self._broker, self.topic)
        self._partitions = [TopicPartition(self.topic, p) for p in partitions]
        consumer = kafka.consumer(self._broker, "follower")
        await consumer.start()
        self._consumer = consumer
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)

    async def snapshot(self) -> None:
        """Apply everything on the topic now, then close: a one-off read."""
        try:
            await self._open()
            await self.catch_up()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    async def catch_up(self) -> None:
        """Apply every record written before this call."""
        assert self._consumer is not None
        async with self._lock:
            end = await self._consumer.end_offsets(self._partitions)
            while True:
                behind = [tp for tp in self._partitions if await self._consumer.position(tp) < end[tp]]
                if not behind:
                    return
                await self._poll(behind, 500)

    async def _follow(self) -> None:
        while True:
            async with self._lock:
                await self._poll(self._partitions, 200)
            await asyncio.sleep(0)

    async def _poll(self, partitions: list[TopicPartition], timeout_ms: int) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms)
        for messages in batches.values():
            for message in messages:
                self._apply_one(message)

    def _apply_one(self, message: Any) -> None:
        """Apply one record; one that cannot be read is skipped, counted and logged without its content."""
        try:
            if self._whole:
                self.apply(message)  # type: ignore[call-arg]
            else:
                self.apply(message.key, message.value)
        except Untrusted as exc:
            self.ignored[exc.kind] += 1
            observability.IGNORED.labels(message.topic, exc.kind).inc()
            log.warning("ignoring an unverifiable record at %s[%d]@%d: %s", message.topic, message.partition,
                        message.offset, exc.message,
                        extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        except ContractError as exc:
            self.ignored[IgnoredBecause.UNREADABLE] += 1
            observability.UNREADABLE.labels(message.topic, IgnoredBecause.UNREADABLE).inc()
            log.warning("skipping unreadable record at %s[%d]@%d (%s)", message.topic, message.partition,
                        message.offset, type(exc).__name__,
                        extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        except Exception as exc:  # a bug met on one record must not stop every later key revocation
            self.ignored[IgnoredBecause.FAILED] += 1
            observability.UNREADABLE.labels(message.topic, IgnoredBecause.FAILED).inc()
            log.error("skipping a record healthbook failed on at %s[%d]@%d (%s)", message.topic, message.partition,
                      message.offset, type(exc).__name__,
                      extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
