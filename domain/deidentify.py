"""De-identification for analytics: a keyed pseudonym for the person, and only what a statistic needs."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from domain.sensitive_diagnoses import DEFAULT, SensitiveDiagnoses
from schemas import catalogue, wire
from schemas.visit import VisitEvent


def pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 of value under key, hex."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def deidentified(event: VisitEvent, key: bytes) -> dict[str, Any]:
    """The analytics record of a visit whose citizen is known."""
    assert event.personal_id is not None
    return {
        "pseudonym": pseudonym(key, event.personal_id),
        "visit_ref": pseudonym(key, event.visit_key),
        "version": event.version,
        "facility_code": event.facility_code,
        "birth_year": int(event.patient.birth_date[:4]),
        "sex": event.patient.sex,
        "province_code": event.patient.province_code,
        "visit_type": event.visit_type,
        "admitted_month": event.admitted_at[:6],
        "treatment_days": event.treatment_days,
        "main_diagnosis_code": event.main_diagnosis_code,
        "secondary_diagnosis_codes": list(event.secondary_diagnosis_codes),
        "treatment_result": event.treatment_result,
        "drug_codes": [m.drug_code for m in event.medicines],
        "total_cost": event.total_cost,
        "insurance_paid": event.insurance_paid,
    }


def withheld(event: VisitEvent, sensitive: SensitiveDiagnoses = DEFAULT) -> bool:
    """Whether a visit stays off the analytics topic: any sensitive diagnosis, since its drugs and place would
    still tell even with the code masked."""
    return sensitive.any_of([event.main_diagnosis_code, *event.secondary_diagnosis_codes])


def encode(event: VisitEvent, key: bytes) -> tuple[bytes, bytes]:
    """Message key and value for the de-identified topic (call only for a visit not withheld)."""
    record = deidentified(event, key)
    return record["pseudonym"].encode(), wire.encode(catalogue.DEIDENTIFIED_VISIT, record)
