"""The fixed catalogue of healthbook schemas and their Confluent schema ids.

healthbook runs without a schema registry: ids are assigned here, once, and never
reused. A registry deployment registers these files under the same ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from schemas import topic_names as names
from schemas.topic_names import value_subject

AVRO_DIR = Path(__file__).with_name("avro")


@dataclass(frozen=True)
class SchemaEntry:
    """One schema of the catalogue: its id, file and parsed form."""

    schema_id: int
    subject: str
    path: Path

    @property
    def parsed(self) -> Any:
        """The schema parsed by fastavro, cached per file."""
        return _parse(self.path)


_ENTRIES = (
    SchemaEntry(1, value_subject(names.VISIT_PAYLOAD), AVRO_DIR / "visit_event_v1.avsc"),
    SchemaEntry(2, value_subject(names.VISITS), AVRO_DIR / "signed_visit.avsc"),
    SchemaEntry(3, value_subject(names.CLINIC_KEYS), AVRO_DIR / "clinic_key.avsc"),
    SchemaEntry(4, value_subject(names.DEAD_LETTER), AVRO_DIR / "dead_letter.avsc"),
    SchemaEntry(5, value_subject(names.INTEGRATION_REQUESTS), AVRO_DIR / "integration_request.avsc"),
    SchemaEntry(6, value_subject(names.INTEGRATION_REPLIES), AVRO_DIR / "integration_reply.avsc"),
    SchemaEntry(7, value_subject(names.VISIT_PAYLOAD), AVRO_DIR / "visit_event_v2.avsc"),
    SchemaEntry(8, value_subject(names.IDENTITY_CARDS), AVRO_DIR / "identity_card.avsc"),
    SchemaEntry(9, value_subject(names.INTEGRATION_REQUESTS), AVRO_DIR / "integration_request_v2.avsc"),
    SchemaEntry(10, value_subject(names.INTEGRATION_REPLIES), AVRO_DIR / "integration_reply_v2.avsc"),
    SchemaEntry(11, value_subject(names.DEIDENTIFIED), AVRO_DIR / "deidentified_visit.avsc"),
    SchemaEntry(12, value_subject(names.DEAD_LETTER), AVRO_DIR / "dead_letter_v2.avsc"),
    SchemaEntry(13, value_subject(names.CLINIC_KEYS), AVRO_DIR / "clinic_key_v2.avsc"),
    SchemaEntry(14, value_subject(names.IDENTITY_CARDS), AVRO_DIR / "identity_card_v2.avsc"),
    SchemaEntry(15, value_subject(names.INTEGRATION_REQUESTS), AVRO_DIR / "integration_request_v3.avsc"),
    SchemaEntry(16, value_subject(names.INTEGRATION_REPLIES), AVRO_DIR / "integration_reply_v3.avsc"),
    SchemaEntry(17, value_subject(names.INTEGRATION_REPLIES), AVRO_DIR / "integration_reply_v4.avsc"),
    SchemaEntry(18, value_subject(names.CLINIC_KEYS), AVRO_DIR / "clinic_key_v3.avsc"),
    SchemaEntry(19, value_subject(names.INTEGRATION_REQUESTS), AVRO_DIR / "integration_request_v4.avsc"),
    SchemaEntry(20, value_subject(names.RELEASED), AVRO_DIR / "released_visit.avsc"),
)

BY_ID = {entry.schema_id: entry for entry in _ENTRIES}

VISIT_EVENT_V1 = BY_ID[1]
VISIT_EVENT = BY_ID[7]  # what producers write; decoding resolves older versions of the subject to it
SIGNED_VISIT = BY_ID[2]
CLINIC_KEY_V1 = BY_ID[3]
CLINIC_KEY_V2 = BY_ID[13]  # signed under the retired healthbook/clinic-key/v2
CLINIC_KEY = BY_ID[18]
DEAD_LETTER_V1 = BY_ID[4]
DEAD_LETTER = BY_ID[12]
INTEGRATION_REQUEST_V1 = BY_ID[5]
INTEGRATION_REPLY_V1 = BY_ID[6]
INTEGRATION_REQUEST_V2 = BY_ID[9]
INTEGRATION_REPLY_V2 = BY_ID[10]
INTEGRATION_REQUEST_V3 = BY_ID[15]  # v1-v3 signed under the retired integration-request/v1
INTEGRATION_REQUEST = BY_ID[19]
INTEGRATION_REPLY_V3 = BY_ID[16]
INTEGRATION_REPLY = BY_ID[17]
IDENTITY_CARD_V1 = BY_ID[8]
IDENTITY_CARD = BY_ID[14]
DEIDENTIFIED_VISIT = BY_ID[11]
RELEASED_VISIT = BY_ID[20]  # every subscriber's analytics.<name>.visits topic


@cache
def _parse(path: Path) -> Any:
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
