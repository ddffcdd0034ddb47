"""De-identification for analytics: a keyed pseudonym for the person, and only what a statistic needs."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from domain.sensitive_visit import SensitivePolicy, Sensitivity
from schemas import catalogue
from schemas.straight_writer import straight_writer
from schemas.visit_record import Visit


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
    record = deidentified(event, key)
    return record["pseudonym"].encode(), _write(record)


_write = straight_writer(catalogue.DEIDENTIFIED_VISIT)  # the hot path: each analytics record, bytes as fastavro's
