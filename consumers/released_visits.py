"""Reads a subscriber's topic of released visits: every record, in release order, with its sequence number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthbook.kafka import Broker
from healthbook.topic_follower import TopicFollower
from schemas import catalogue, wire
from schemas.headers import release_seq


@dataclass(frozen=True)
class Released:
    """One record on a subscriber's topic and the release sequence it was sent under."""

    seq: int
    record: dict[str, Any]


async def read_released(broker: Broker, topic: str) -> list[Released]:
    """Everything on one subscriber's topic now."""
    found: list[Released] = []

    def keep(message: Any) -> None:
        record = wire.decode(message.value or b"", catalogue.RELEASED_VISIT)
        found.append(Released(release_seq(message.headers), record))

    await TopicFollower(broker, topic, keep, whole_message=True).snapshot()
    return found
