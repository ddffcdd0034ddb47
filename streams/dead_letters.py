"""Dead-letter records as the worker writes them: what was rejected, why, where it was read, and its original bytes."""

from __future__ import annotations

from domain.batch import RejectedDelivery
from schemas import catalogue, envelope, wire
from schemas.errors import ContractError
from schemas.problems import Problem
from schemas.topics import MAX_LISTED_PROBLEMS, MAX_PROBLEM_VALUE_CHARS


def dead_letter(item: RejectedDelivery) -> bytes:
    """Encode the dead-letter record of a rejected message."""
    rejected, source = item.rejected, item.delivery
    return wire.encode(
        catalogue.DEAD_LETTER,
        {
            "reason_code": str(rejected.code),
            "reason": rejected.reason,
            "violations": listed(rejected.problems),
            "clinic_code": rejected.clinic_code,
            "event_id": rejected.event_id,
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "source_timestamp": source.timestamp_ms,
            "original_key": source.key,
            "original_value": source.value,
            "failed_at": envelope.now_millis(),
            "retry_of": None if source.retry_of is None else
            {"partition": source.retry_of[0], "offset": source.retry_of[1]},
        },
    )


def listed(problems: list[Problem]) -> list[dict[str, object]]:
    """The problems a dead letter lists: at most MAX_LISTED_PROBLEMS, each value cut, so its size stays bounded."""
    shown = [p.to_record() for p in problems[:MAX_LISTED_PROBLEMS]]
    for record in shown:
        value = record["value"]
        if isinstance(value, str) and len(value) > MAX_PROBLEM_VALUE_CHARS:
            record["value"] = value[:MAX_PROBLEM_VALUE_CHARS] + f"… ({len(value):,} characters)"
    if len(problems) > MAX_LISTED_PROBLEMS:
        shown.append(Problem("…", None, "more_problems", (
            f"{len(problems) - MAX_LISTED_PROBLEMS:,} more problems are not listed; the original bytes hold "
            "the visit to check again")).to_record())
    return shown


def original_append_time(dead_letter_raw: bytes | None, redriven_value: bytes | None) -> int | None:
    """When the broker first appended the message a dead letter holds, if it holds exactly these bytes."""
    try:
        record = wire.decode(dead_letter_raw, catalogue.DEAD_LETTER)
    except ContractError:
        return None
    if record["original_value"] != redriven_value or record.get("retry_of") is not None:
        return None
    return envelope.to_millis(record["source_timestamp"])
