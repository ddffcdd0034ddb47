"""The topics healthbook owns, their partitions and retention, and their idempotent creation."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from healthbook.config import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partitions and configuration."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic healthbook needs, as documented in README.md."""
    names = settings.topics
    keep_forever = {"retention.ms": "-1", "cleanup.policy": "delete"}
    compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    return [
        TopicSpec(names.visits, settings.visit_partitions, keep_forever,
                  "signed visit events from clinics, key = personal ID; kept forever so the book can be replayed"),
        TopicSpec(names.dead_letter, 1, {"retention.ms": str(90 * DAY_MS)},
                  "rejected messages with reason and original bytes; 90 days"),
        TopicSpec(names.clinic_keys, 1, compacted, "clinic public keys, key = clinic_code/key_id, compacted"),
        TopicSpec(names.identity_cards, 1, compacted, "BHYT card -> personal ID, key = card number, compacted"),
        TopicSpec(names.deidentified, settings.visit_partitions, {"retention.ms": str(365 * DAY_MS)},
                  "visits without identities for analytics, key = pseudonym; 1 year"),
        TopicSpec(names.integration_requests, 2, {"retention.ms": str(7 * DAY_MS)},
                  "citizen confirmations signed by the identity platform, key = personal ID; 7 days"),
        TopicSpec(names.integration_replies, 2, {"retention.ms": str(DAY_MS)},
                  "health-book answers, key = request id; 1 day"),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create any missing topic; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):
            response = await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config) for spec in wanted]
            )
            refused = [(error[0], error[-1] or f"error code {error[1]}") for error in response.topic_errors
                       if error[1] not in (0, TopicAlreadyExistsError.errno)]
            if refused:
                raise TopicMissing("the broker refused to create " + "; ".join(f"{n}: {m}" for n, m in refused))
        await _wait_for_leaders(admin, [spec.name for spec in wanted])
        return [spec.name for spec in wanted]
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Return once every partition of the new topics has a leader, so the first send does not fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topics(names)
        if all(not d["error_code"] and d["partitions"] and all(p["leader"] >= 0 for p in d["partitions"])
               for d in described):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TopicMissing(f"topics {names} have no partition leaders after {timeout:.0f}s; is the broker healthy?")
        await asyncio.sleep(0.2)


class TopicMissing(RuntimeError):
    """A topic healthbook needs does not exist on the broker."""


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of a topic, or raise TopicMissing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] or not described["partitions"]:
        raise TopicMissing(f"topic {topic} does not exist on {bootstrap}; create the topics with 'healthbook topics'")
    return sorted(p["partition"] for p in described["partitions"])
