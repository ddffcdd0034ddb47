"""Test data: valid visit events and signed messages built from the synthetic clinic."""

from __future__ import annotations

import copy
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson

from domain.book_entry import BookEntry, ClinicSignature
from healthbook.config import Settings
from schemas import catalogue, wire
from schemas.envelope import Signer, seal_visit
from schemas.visit_record import Visit
from synthetic.population import Citizen, make_citizen, make_visit

SENSITIVE = Settings().sensitive  # the deployment default, HEALTHBOOK_SENSITIVE_DIAGNOSES


def citizen(seed: int = 7, province: str = "079") -> Citizen:
    """An invented citizen."""
    return make_citizen(random.Random(seed), province)


def visit(seed: int = 7, *, person: Citizen | None = None, facility: str = "79001", sequence: int = 1,
          admitted: datetime = datetime(2026, 3, 15, 8, 30), version: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid VisitEvent record, with top-level fields overridden by changes."""
    rng = random.Random(seed)
    event = make_visit(rng, person or citizen(seed), facility, sequence, admitted, version)
    event["event_id"] = str(uuid.uuid4())  # every call is another event, even with the same seed
    event.update(changes)
    return event


def with_patient(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of event with patient fields overridden."""
    changed = copy.deepcopy(event)
    changed["patient"].update(changes)
    return changed


def full_visit(person: Citizen, sequence: int, admitted: datetime) -> dict[str, Any]:
    """A visit with every part a health book shows filled: services, medicines, flagged results, papers, XML15."""
    day = admitted.strftime("%Y%m%d")
    minute = admitted.strftime("%Y%m%d%H%M")
    return visit(
        person=person, sequence=sequence, admitted=admitted, main_diagnosis_code="J02.9",
        secondary_diagnosis_codes=["I10"], discharge_diagnosis="Viêm họng cấp; Tăng huyết áp",
        reason="Sốt, ho, đau họng 3 ngày", treatment_result=2,
        medicines=[{"line_no": 1, "drug_code": "40.1", "name": "Paracetamol", "unit": "Viên", "strength": "500mg",
                    "route": "1.01", "dose": "1 viên/lần, 3 lần/ngày", "instructions": "Uống sau ăn",
                    "quantity": 15.0, "prescriber_code": "BS0001", "ordered_at": minute}],
        results=[{"line_no": 1, "service_code": "22.0120.1494", "indicator_code": "WBC",
                  "indicator_name": "Số lượng bạch cầu", "value": "11.2", "unit": "G/L", "description": "4.0 - 10.0",
                  "conclusion": "Tăng nhẹ", "result_at": minute}],
        services=[{"line_no": 1, "service_code": "22.0120.1494", "service_name": "Tổng phân tích tế bào máu",
                   "quantity": 1.0, "ordered_at": minute, "result": "Bạch cầu tăng nhẹ"}],
        discharge_paper={"diagnosis": "Viêm họng cấp", "treatment": "Kháng viêm, hạ sốt", "note": "Tái khám sau 7 ngày",
                         "doctor_name": "BS. Lê Văn Hùng", "issued_on": day},
        referral={"referral_no": "CT0042", "from_facility": "79001", "to_facility": "79004", "reason_code": "1",
                  "direction": "Khám chuyên khoa tim mạch", "issued_on": day},
        follow_up={"appointment_no": "GH0123", "appointment_date": (admitted + timedelta(days=7)).strftime("%Y%m%d"),
                   "diagnosis": "Viêm họng cấp", "doctor_code": "BS0001", "issued_on": day},
        sensitive=[{"table": "XML15", "records": [{"MA_LK": f"79001-{admitted:%Y}-{sequence:07d}",
                                                   "PHAC_DO_DTRI_LAO": "2RHZE/4RHE"}]}],
    )


def signed_entry(event: dict[str, Any], signer: Signer, certificate: bytes | None, clinic: str = "79001") -> BookEntry:
    """A visit as the book keeps it: sealed by the clinic's signer now, with the certificate the key registry holds."""
    sealed = seal_visit(event, clinic, signer)
    read = wire.decode(sealed, catalogue.SIGNED_VISIT)
    record = orjson.loads(Visit(wire.decode(read["payload"], catalogue.VISIT_EVENT)).book_json())
    return BookEntry(record, ClinicSignature(clinic_code=clinic, key_id=signer.key_id, signed_at=read["signed_at"],
                                             signature=read["signature"], public_key=signer.public_key,
                                             certificate=certificate, signed_message=sealed))
