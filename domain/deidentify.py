"""De-identification for analytics: a keyed pseudonym for the person, and only what a statistic needs."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from domain.sensitive_visit import SensitivePolicy, Sensitivity
from schemas import catalogue
from schemas.native import compiled
from schemas.straight_writer import straight_writer
from schemas.visit_record import Visit
from schemas.wire import frame_header


def pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 of value under key, hex."""
    keyed = _keyed(key).copy()  # the key's HMAC state, copied: cheaper than keying SHA-256 again for each value
    keyed.update(value.encode("utf-8"))
    return keyed.hexdigest()


@lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def deidentified(event: Visit, key: bytes) -> dict[str, Any]:
    """The analytics record of a visit whose citizen is known."""
    record, patient = event.record, event.patient
    assert patient["personal_id"] is not None
    return {
        "pseudonym": pseudonym(key, patient["personal_id"]),
        "visit_ref": pseudonym(key, event.visit_key),
        "version": record["version"],
        "facility_code": record["facility_code"],
        "birth_year": int(patient["birth_date"][:4]),
        "sex": patient["sex"],
        "province_code": patient["province_code"],
        "visit_type": record["visit_type"],
        "admitted_month": record["admitted_at"][:6],
        "treatment_days": record["treatment_days"],
        "main_diagnosis_code": record["main_diagnosis_code"],
        "secondary_diagnosis_codes": list(record["secondary_diagnosis_codes"]),
        "treatment_result": record["treatment_result"],
        "drug_codes": [m["drug_code"] for m in record["medicines"]],
        "total_cost": record["total_cost"],
        "insurance_paid": record["insurance_paid"],
    }


def withheld(event: Visit, sensitive: SensitivePolicy, known: Sensitivity | None = None) -> bool:
    """Whether a visit stays off the analytics topic: a sensitive visit, whatever part of it makes it so."""
    return sensitive.judged(event.record, known, clean_json=event.clean_json)


def encode(event: Visit, key: bytes) -> tuple[bytes, bytes]:
    """Message key and value for the de-identified topic (call only for a visit not withheld)."""
    if _write_in_c is not None:
        patient = event.patient
        assert patient["personal_id"] is not None
        person = pseudonym(key, patient["personal_id"])
        written = _write_in_c(_FRAME, event.record, patient, person, pseudonym(key, event.visit_key))
        if written is not None:
            return person.encode(), written
    record = deidentified(event, key)
    return record["pseudonym"].encode(), _write(record)


_write = straight_writer(catalogue.DEIDENTIFIED_VISIT)  # each analytics record, bytes as fastavro's
_FRAME = frame_header(catalogue.DEIDENTIFIED_VISIT)
# The fields, in order, that schemas/_native.c writes as deidentified() maps them; with any other schema the
# straight writer does it all.
WRITTEN_IN_C = (
    ("pseudonym", "string"), ("visit_ref", "string"), ("version", "long"), ("facility_code", "string"),
    ("birth_year", "int"), ("sex", "int"), ("province_code", ["null", "string"]), ("visit_type", "int"),
    ("admitted_month", "string"), ("treatment_days", ["null", "int"]), ("main_diagnosis_code", "string"),
    ("secondary_diagnosis_codes", {"type": "array", "items": "string"}), ("treatment_result", ["null", "int"]),
    ("drug_codes", {"type": "array", "items": "string"}),
    ("total_cost", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}),
    ("insurance_paid", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}),
)
_write_in_c = compiled.write_deidentified if compiled is not None and tuple(
    (f["name"], f["type"]) for f in catalogue.DEIDENTIFIED_VISIT.parsed["fields"]) == WRITTEN_IN_C else None
