"""An example analytics subscriber: visits per diagnosis per province per month, from the de-identified topic."""

from __future__ import annotations

from collections import Counter
from typing import Any

from healthbook.kafka import Broker
from healthbook.topic_follower import TopicFollower
from schemas import catalogue, wire


def latest_versions(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per visit: the highest version (the topic is at-least-once and carries corrections)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        seen = latest.get(record["visit_ref"])
        if seen is None or seen["version"] < record["version"]:
            latest[record["visit_ref"]] = record
    return latest


def visits_per_diagnosis_province_month(records: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """(ICD-10 main code, province of residence, yyyyMM) -> number of visits."""
    return Counter((r["main_diagnosis_code"], r["province_code"] or "?", r["admitted_month"])
                   for r in latest_versions(records).values())


async def read_deidentified(broker: Broker, topic: str) -> list[dict[str, Any]]:
    """Everything on the de-identified topic now."""
    records: list[dict[str, Any]] = []
    await TopicFollower(broker, topic,
                        lambda _k, value: records.append(wire.decode(value, catalogue.DEIDENTIFIED_VISIT))).snapshot()
    return records
