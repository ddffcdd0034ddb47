"""Dead-letter records: what was refused, why, and the original bytes, ready for the DLQ topic."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import catalogue, envelope, wire
from streams.validation import Rejected


@dataclass(frozen=True)
class Source:
    """Where a message was read from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    retry_of: tuple[int, int] | None = None


def dead_letter(rejected: Rejected, source: Source) -> bytes:
    """Encode the dead-letter record for a rejection."""
    return wire.encode(
        catalogue.DEAD_LETTER,
        {
            "reason_code": str(rejected.code),
            "reason": rejected.reason,
            "violations": [v.model_dump() for v in rejected.violations],
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
