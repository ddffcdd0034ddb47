"""What an accepted visit becomes in PostgreSQL: one row, in the health book or among the pending visits."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import lru_cache

from domain.validation import Accepted
from schemas import keys, rules
from schemas.visit_record import Visit


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs four times as much, once per visit
class VisitRow:
    """One visit as stored: in the health book once its person is known, else among the pending visits."""

    facility_code: str
    visit_code: str
    personal_id: str | None
    card_number: str
    version: int
    event_id: str
    year: int
    admitted_at: datetime
    discharged_at: datetime
    record: str
    sensitive: str
    clinic_key_id: str
    signature: bytes
    signed_at: datetime
    source_partition: int
    source_offset: int
    signed_message: bytes
    clinic_public_key: bytes
    clinic_certificate: bytes | None
    sealed: bool | None = None  # whether the list shows it sealed, judged under sealed_under's policy
    sealed_under: str | None = None  # that policy's fingerprint; None when it was not judged on the way in

    @property
    def visit_key(self) -> str:
        """facility code / MA_LK."""
        return keys.visit_key(self.facility_code, self.visit_code)


ROW_COLUMNS = [f.name for f in fields(VisitRow)]
# The same few thousand admission and discharge minutes recur across a topic; a datetime is immutable.
_minute_time = lru_cache(maxsize=1 << 16)(rules.parse_minute)
BOOK_COLUMNS = [c for c in ROW_COLUMNS if c != "card_number"]
PENDING_COLUMNS = [c for c in ROW_COLUMNS if c != "personal_id"]


def visit_row(accepted: Accepted, partition: int, offset: int, event: Visit | None = None) -> VisitRow:
    """The row an accepted visit becomes; event overrides the accepted one once its person is resolved."""
    event = event or accepted.event
    return VisitRow(
        facility_code=event.facility_code,
        visit_code=event.visit_code,
        personal_id=event.personal_id,
        card_number=event.card_number,
        version=event.version,
        event_id=event.event_id,
        year=event.year,
        admitted_at=_minute_time(event.admitted_at),
        discharged_at=_minute_time(event.discharged_at),
        record=event.book_json(),
        sensitive=event.sensitive_json(),
        clinic_key_id=accepted.key_id,
        signature=accepted.signature,
        signed_at=datetime.fromtimestamp(accepted.signed_at_ms / 1000, UTC),
        source_partition=partition,
        source_offset=offset,
        signed_message=accepted.signed_message,
        clinic_public_key=accepted.public_key,
        clinic_certificate=accepted.certificate,
        sealed=accepted.sensitivity.sensitive if accepted.sensitivity else None,
        sealed_under=accepted.sensitivity.under if accepted.sensitivity else None,
    )


def resolved_row(stored: dict[str, object], card_number: str, personal_id: str) -> VisitRow:
    """A pending visit's stored row once its card is known to belong to personal_id."""
    record = json.loads(str(stored["record"]))
    record["patient"]["personal_id"] = personal_id
    values = dict(stored, personal_id=personal_id, card_number=card_number,
                  record=json.dumps(record, ensure_ascii=False))
    return VisitRow(**{c: values[c] for c in ROW_COLUMNS})  # type: ignore[arg-type]


@dataclass(frozen=True)
class WeightedRow:
    """A row to upsert and how many messages of the batch it stands for."""

    row: VisitRow
    messages: int


def latest(rows: Iterable[VisitRow]) -> list[WeightedRow]:
    """One row per visit, the highest version, weighted by how many messages it stands for."""
    chosen: dict[str, VisitRow] = {}
    weights: Counter[str] = Counter()
    for row in rows:
        weights[row.visit_key] += 1
        if row.visit_key not in chosen or chosen[row.visit_key].version < row.version:
            chosen[row.visit_key] = row
    return [WeightedRow(row, weights[key]) for key, row in chosen.items()]
