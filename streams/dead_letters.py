"""Dead-letter records as the worker writes them: what was refused, why, where it was read, and its original bytes."""

from __future__ import annotations

from domain.batch import Refused
from schemas import catalogue, envelope, wire
from schemas.errors import ContractError


def dead_letter(refused: Refused) -> bytes:
    """Encode the dead-letter record of a refused message."""
    rejected, source = refused.rejected, refused.delivery
    return wire.encode(
        catalogue.DEAD_LETTER,
        {
            "reason_code": str(rejected.code),
            "reason": rejected.reason,
            "violations": [p.to_record() for p in rejected.problems],
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


def original_append_time(dead_letter_raw: bytes | None, redriven_value: bytes | None) -> int | None:
    """When the broker first appended the message a dead letter holds, if it holds exactly these bytes."""
    try:
        record = wire.decode(dead_letter_raw, catalogue.DEAD_LETTER)
    except ContractError:
        return None
    if record["original_value"] != redriven_value or record.get("retry_of") is not None:
        return None
    return envelope.to_millis(record["source_timestamp"])
