"""The one place Kafka clients are made, with the project's defaults, and the idempotent creation of its topics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord

from healthbook.config import Settings
from schemas.topics import TOPICS, TopicDefinition

CLIENT_PREFIX = "healthbook"


class TopicMissing(RuntimeError):
    """A topic healthbook needs does not exist on the broker."""


def producer(bootstrap: str, client: str, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer named healthbook-<client>; overrides tune batching or timeouts."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    options.update(overrides)
    return AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=f"{CLIENT_PREFIX}-{client}", **options)


def consumer(bootstrap: str, client: str, *topics: str, group_id: str | None = None,
             **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and starts from the earliest offset; no group unless given."""
    options: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    options.update(overrides)
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group_id,
                            client_id=f"{CLIENT_PREFIX}-{client}", **options)


def admin(bootstrap: str, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client for topic creation and description."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{CLIENT_PREFIX}-admin", **overrides)


def topic_names(settings: Settings) -> dict[str, TopicDefinition]:
    """Every topic healthbook creates, by its prefixed name."""
    return {settings.topic_prefix + topic.name: topic for topic in TOPICS}


async def ensure_topics(settings: Settings) -> list[str]:
    """Create any missing topic of the catalogue; return the names created."""
    client = admin(settings.kafka_bootstrap)
    await client.start()
    try:
        existing = set(await client.list_topics())
        await _align_configs(client, {name: t for name, t in topic_names(settings).items() if name in existing})
        wanted = {name: t for name, t in topic_names(settings).items() if name not in existing}
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            response = await client.create_topics([
                NewTopic(name, t.partitions_for(settings.visit_partitions), 1, topic_configs=t.config)
                for name, t in wanted.items()])
            refused = [(error[0], error[-1] or f"error code {error[1]}") for error in response.topic_errors
                       if error[1] not in (0, TopicAlreadyExistsError.errno)]
            if refused:
                raise TopicMissing("the broker refused to create " + "; ".join(f"{n}: {m}" for n, m in refused))
        await _wait_for_leaders(client, list(wanted))
        return list(wanted)
    finally:
        await client.close()


async def _align_configs(client: AIOKafkaAdminClient, topics: dict[str, TopicDefinition]) -> None:
    """Give existing topics the catalogue's configuration (say, append-time stamps added to a topic made before)."""
    topics = {name: t for name, t in topics.items() if t.config}
    if not topics:
        return
    described = await client.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, dict(t.config)) for name, t in topics.items()])
    current = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
               for response in described for resource in response.resources}
    stale = [name for name, t in topics.items() if any(current.get(name, {}).get(k) != v for k, v in t.config.items())]
    if stale:
        await client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, dict(topics[name].config))
                                    for name in stale])


async def _wait_for_leaders(client: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Return once every partition of the new topics has a leader, so the first send does not fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await client.describe_topics(names)
        if all(not d["error_code"] and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
               for d in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMissing(f"topics {names} have no partition leaders after {timeout:.0f}s; is the broker healthy?")
        await asyncio.sleep(0.2)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of a topic, or raise TopicMissing."""
    client = admin(bootstrap)
    await client.start()
    try:
        (described,) = await client.describe_topics([topic])
    finally:
        await client.close()
    if described["error_code"] or not described["partitions"]:
        raise TopicMissing(f"topic {topic} does not exist on {bootstrap}; create the topics with 'healthbook topics'")
    return sorted(p["partition"] for p in described["partitions"])


async def send_all(bootstrap: str, client: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records in order and wait until the broker acknowledged each one."""
    sender = producer(bootstrap, client)
    await sender.start()
    try:
        for key, value in records:
            await sender.send_and_wait(topic, value, key=key)
    finally:
        await sender.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset to be written on each partition of a topic."""
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    reader = consumer(bootstrap, "end-offsets")
    await reader.start()
    try:
        return {tp.partition: offset for tp, offset in (await reader.end_offsets(partitions)).items()}
    finally:
        await reader.stop()


async def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[ConsumerRecord]:
    """The records of one partition from offset start up to (not including) end, as the topic still holds them."""
    reader = consumer(bootstrap, "read-range")
    await reader.start()
    found: list[ConsumerRecord] = []
    try:
        tp = TopicPartition(topic, partition)
        reader.assign([tp])
        reader.seek(tp, start)
        while await reader.position(tp) < end:
            fetched = await reader.getmany(tp, timeout_ms=10_000, max_records=end - start)
            if not fetched:
                break
            found += [r for r in fetched.get(tp, []) if start <= r.offset < end]
        return found
    finally:
        await reader.stop()
