"""Reading the dead-letter topic, for operators and for checks that nothing was dropped."""

from __future__ import annotations

from typing import Any

from healthbook.topic_follower import TopicFollower
from schemas import catalogue, wire


async def read_dead_letters(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every dead-letter record currently on the topic, oldest first per partition."""
    records: list[dict[str, Any]] = []
    await TopicFollower(bootstrap, topic,
                        lambda _key, value: records.append(wire.decode(value, catalogue.DEAD_LETTER))).snapshot()
    return records
