"""Reading the dead-letter topic, for operators and for checks that nothing was dropped."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from healthbook.topics import partitions_of
from schemas import catalogue, wire


async def read_dead_letters(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every dead-letter record currently on the topic, oldest first per partition."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[dict[str, Any]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for messages in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                records.extend(wire.decode(m.value, catalogue.DEAD_LETTER) for m in messages)
        return records
    finally:
        await consumer.stop()
