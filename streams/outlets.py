"""Where a batch's side records go before its commit: dead letters and de-identified analytics records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from domain import deidentify
from domain.batch import RejectedDelivery
from domain.sensitive_visit import SensitivePolicy, Sensitivity
from healthbook import observability as metrics
from schemas.topics import TopicNames
from schemas.visit_record import Visit
from streams.dead_letters import dead_letter

log = logging.getLogger(__name__)
_PARTITIONER = DefaultPartitioner()  # murmur2 of the key, as every producer of the topic places records


class Outlets(Protocol):
    """Where a batch's side records go: Kafka for the worker, nowhere for a replay, a list in unit tests."""

    async def dead_letters(self, rejected: list[RejectedDelivery]) -> None: ...

    async def deidentified(self, visits: list[tuple[Visit, Sensitivity | None]]) -> None: ...


class KafkaOutlets:
    """Sends dead letters and analytics records and waits for the broker, so none is lost by a later commit."""

    def __init__(self, producer: AIOKafkaProducer, topics: TopicNames, pseudonym_key: bytes,
                 sensitive: SensitivePolicy, registered: Callable[[str], bool] = lambda clinic: False) -> None:
        self.producer, self.topics, self.pseudonym_key, self.sensitive = producer, topics, pseudonym_key, sensitive
        self.registered = registered  # whether a clinic code may be a metric's label: any other is one label

    async def dead_letters(self, rejected: list[RejectedDelivery]) -> None:
        """Dead-letter each rejected message, logging where it was read and why (never its content)."""
        sends = []
        for item in rejected:
            message, result = item.delivery, item.rejected
            log.warning("rejected %s[%d]@%d: %s (clinic %s)", message.topic, message.partition, message.offset,
                        result.code, result.clinic_code,
                        extra={"topic": message.topic, "partition": message.partition, "offset": message.offset,
                               "reason": str(result.code), "clinic": result.clinic_code,
                               "event_id": result.event_id})
            sends.append(await self.producer.send(self.topics.dead_letter, dead_letter(item), key=message.key))
        if sends:
            await asyncio.gather(*sends)
        for item in rejected:
            clinic = item.rejected.clinic_code
            metrics.DEAD_LETTERS.labels(str(item.rejected.code),
                                        clinic if clinic and self.registered(clinic) else "unregistered").inc()

    async def deidentified(self, visits: list[tuple[Visit, Sensitivity | None]]) -> None:
        """Send the analytics records of these visits, none of a sensitive visit, and wait for the broker.

        Each comes with the judgement made when it was checked, used when made under this same policy.
        """
        sends = []
        for event, known in visits:
            if deidentify.withheld(event, self.sensitive, known):
                metrics.ANALYTICS_WITHHELD.inc()
                continue
            sends.append(deidentify.encode(event, self.pseudonym_key))
        await send_keyed(self.producer, self.topics.deidentified, sends)
        metrics.ANALYTICS_SENT.inc(len(sends))


async def send_keyed(producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send keyed records in one batch per partition, each placed as producer.send places it, and wait for the broker.

    One future per partition rather than per record: per-record sends were a tenth of a draining worker's time.
    """
    if not records:
        return
    partitions = sorted(await producer.partitions_for(topic))
    batches: dict[int, list[BatchBuilder]] = {}
    for key, value in records:
        partition = _PARTITIONER(key, partitions, partitions)
        open_batches = batches.setdefault(partition, [producer.create_batch()])
        if open_batches[-1].append(key=key, value=value, timestamp=None) is None:  # full: start the next
            open_batches.append(producer.create_batch())
            open_batches[-1].append(key=key, value=value, timestamp=None)
    sent = [await producer.send_batch(batch, topic, partition=partition)
            for partition, builders in batches.items() for batch in builders]
    await asyncio.gather(*sent)


class NoOutlets:
    """For a replay: what the live worker already sent is not sent again."""

    async def dead_letters(self, rejected: list[RejectedDelivery]) -> None:
        """Send nothing."""

    async def deidentified(self, visits: list[tuple[Visit, Sensitivity | None]]) -> None:
        """Send nothing."""
