"""The FHIR R4 export: valid Bundles (fhir.resources' R4 models), every book element in them, sensitive parts gated."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from domain.book_entry import BookEntry, ClinicSignature
from domain.fhir_bundle import ICD10, book_bundle
from healthbook.config import PROJECT_ROOT
from producers.xml_ingest.dossier_mapping import map_hoso
from producers.xml_ingest.giamdinhhs import DossierReader
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer, seal_visit
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from tests.factories import SENSITIVE, citizen, full_visit, visit

SAMPLE = PROJECT_ROOT / "tests" / "fixtures" / "giamdinhhs-sample.xml"
SIGNER = Signer.generate("his-1")
# What a stored visit holds that is not health-book content: the event's own bookkeeping, the order of lines,
# the insurance settlement period, and the vendor elements kept verbatim beside the mapped ones.
NOT_IN_A_BOOK = {"event_id", "version", "line_no", "extra", "settlement_year", "settlement_month"}
DATES = {"birth_date", "issued_on", "appointment_date", "follow_up_date", "card_valid_from", "card_valid_to"}


def stored(event: dict[str, Any]) -> BookEntry:
    """A visit as the book stores and the query consumer reads it: record, sensitive tables, signature."""
    sealed = seal_visit(VisitEvent.model_validate(event).model_dump(), event["facility_code"], SIGNER)
    accepted = Visit.of_model(VisitEvent.model_validate(event))
    sensitive = orjson.loads(accepted.sensitive_json())
    signed = ClinicSignature(clinic_code=event["facility_code"], key_id=SIGNER.key_id,
                             signed_at=datetime(2026, 3, 15, 2, 0, tzinfo=UTC),
                             signature=wire.decode(sealed, catalogue.SIGNED_VISIT)["signature"],
                             public_key=SIGNER.public_key, signed_message=sealed)
    return BookEntry(orjson.loads(accepted.book_json()), signed, bool(sensitive), sensitive)


def sample_entries() -> list[BookEntry]:
    reader = DossierReader(SAMPLE)
    return [stored(map_hoso(hoso, "79001", 20260315)) for hoso in reader]


def validated(bundle: dict[str, Any]) -> Bundle:
    """The Bundle as fhir.resources' R4 (R4B) models read it; raises on any element out of place."""
    return Bundle.model_validate(bundle)


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def everything_said(bundle: dict[str, Any]) -> str:
    """The Bundle's text, with base64 attachments and binaries decoded where they are text."""
    parts = [json.dumps(bundle, ensure_ascii=False)]
    for entry in bundle["entry"]:
        resource = entry["resource"]
        datas = [resource.get("data")] + [c["attachment"].get("data") for c in resource.get("content", [])]
        parts += [base64.b64decode(d).decode("utf-8", "replace") for d in datas if d]
    return "\n".join(parts)


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (field, value) of a stored record that a book shows."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() if key not in NOT_IN_A_BOOK
                for leaf in leaves(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item, path)]
    return [] if value is None else [(path, value)]


def as_shown(field: str, value: Any) -> list[str]:
    """The texts a value must appear as in a Bundle: FHIR dates and times, numbers as JSON writes them."""
    name = field.rsplit(".", 1)[-1]
    if name == "sex":
        return [{1: '"male"', 2: '"female"', 3: '"other"'}[value]]
    if name == "discharge_diagnosis" and field == "discharge_diagnosis":
        return [part.strip() for part in value.split(";")]
    if isinstance(value, bool | int):
        return [json.dumps(value) if name != "visit_type" else f'"{value}"']
    if isinstance(value, float | Decimal) or name in {"total_cost", "insurance_paid", "patient_paid"}:
        return [json.dumps(float(Decimal(str(value))))]
    if name in DATES and len(value) == 8 and value.isdigit():
        return [f"{value[:4]}-{value[4:6]}-{value[6:8]}"]
    if name.endswith("_at") and len(value) == 12 and value.isdigit():
        return [f"{value[:4]}-{value[4:6]}-{value[6:8]}T{value[8:10]}:{value[10:12]}:00+07:00"]
    return [value]


def missing_from(bundle: dict[str, Any], entry: BookEntry, with_sensitive: bool) -> list[str]:
    said = everything_said(bundle)
    record = dict(entry.record, sensitive=entry.sensitive) if with_sensitive else entry.record
    return [f"{field}={value!r}" for field, value in leaves(record)
            if not all(text in said for text in as_shown(field, value))]


def test_every_element_of_the_sample_dossier_that_belongs_in_a_book_reaches_its_bundle():
    entries = sample_entries()
    assert len(entries) == 2
    for entry in entries:
        bundle = book_bundle(entry.record["patient"]["personal_id"], [entry], detail=True, sensitive=SENSITIVE)
        validated(bundle)
        assert missing_from(bundle, entry, with_sensitive=True) == []


def test_a_visit_with_every_part_filled_reaches_its_bundle_and_each_resource_has_its_kind():
    event = full_visit(citizen(4), 41, datetime(2025, 4, 2, 9, 0))
    event.update(
        progress_notes=[{"line_no": 1, "clinical_course": "Sốt 38.5", "stage": "Cấp", "consultation": "Không",
                         "surgery": "Không", "noted_at": "202504020930", "noted_by": "DD0001"}],
        record_summary={"admission_diagnosis": "Viêm họng", "discharge_diagnosis": "Viêm họng cấp",
                        "clinical_course": "Ổn định", "results_summary": "Bạch cầu tăng", "treatment": "Nội khoa",
                        "treatment_result": "Đỡ", "note": "Không"},
        certificates=[{"table": "XML11", "records": [{"SO_SERI": "NV-0042", "SO_NGAY": "3"}]}],
        traditional_diagnosis_codes=["U50.001"], procedure_codes=["89.52"], weight_kg=52.5, inpatient_at=None,
        treatment_days=1, discharge_type=1, department_code="K01",
        patient=dict(event["patient"], blood_type="O", phone="0900000000", registered_facility="79001",
                     card_valid_from="20250101", card_valid_to="20251231"),
    )
    entry = stored(event)
    bundle = book_bundle(entry.record["patient"]["personal_id"], [entry], detail=True, sensitive=SENSITIVE)
    validated(bundle)
    assert missing_from(bundle, entry, with_sensitive=True) == []
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert kinds >= {"Patient", "Organization", "Encounter", "Condition", "MedicationRequest", "Observation",
                     "Procedure", "ClinicalImpression", "ServiceRequest", "Appointment", "DocumentReference",
                     "ExplanationOfBenefit", "Provenance", "Binary"}
    (patient,) = resources(bundle, "Patient")
    assert {"system": "https://fhir.healthbook.vn/sid/so-dinh-danh-ca-nhan", "use": "official",
            "value": event["patient"]["personal_id"]} in patient["identifier"]
    conditions = {c["code"]["coding"][0]["code"]: c for c in resources(bundle, "Condition")
                  if c["code"]["coding"][0]["system"] == ICD10}
    assert set(conditions) == {"J02.9", "I10"}
    (result,) = [o for o in resources(bundle, "Observation") if o["code"].get("text") == "Số lượng bạch cầu"]
    assert result["valueQuantity"] == {"value": 11.2, "unit": "G/L"}
    assert result["interpretation"][0]["coding"][0]["code"] == "H"
    assert result["referenceRange"] == [{"text": "4.0 - 10.0"}]
    (paid,) = resources(bundle, "ExplanationOfBenefit")
    assert {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in paid["total"]} == {
        "submitted": float(event["total_cost"]), "benefit": float(event["insurance_paid"]),
        "patient-paid": float(event["patient_paid"])}


def test_the_provenance_carries_a_signature_anyone_can_verify_from_the_bundle_alone():
    entry = stored(visit(person=citizen(5), sequence=51))
    bundle = book_bundle(entry.record["patient"]["personal_id"], [entry], sensitive=SENSITIVE)
    validated(bundle)
    (provenance,) = resources(bundle, "Provenance")
    binaries = {e["fullUrl"]: e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary"}
    message = base64.b64decode(binaries[provenance["entity"][0]["what"]["reference"]]["data"])
    key_ref = next(x["valueReference"]["reference"] for x in provenance["signature"][0]["extension"]
                   if x["url"].endswith("/signing-key"))
    key = base64.b64decode(binaries[key_ref]["data"])
    sealed = wire.decode(message, catalogue.SIGNED_VISIT)
    signature = base64.b64decode(provenance["signature"][0]["data"])
    assert signature == sealed["signature"]
    assert envelope.verify(key, signature, envelope.visit_signing_input(sealed))
    (encounter,) = resources(bundle, "Encounter")
    assert {"reference": next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is encounter)} in \
        provenance["target"]


@pytest.mark.parametrize("main, secondary", [("B20.1", ["J06.9"]), ("J06.9", ["A15.0"])])
def test_a_list_bundle_leaves_sensitive_diagnoses_and_tables_out_and_the_detail_has_them(main, secondary):
    event = full_visit(citizen(6), 61, datetime(2025, 6, 1, 8, 0))
    event.update(main_diagnosis_code=main, secondary_diagnosis_codes=secondary,
                 discharge_diagnosis="Bệnh nhạy cảm; Bệnh khác")
    entry = stored(event)
    listed = book_bundle(entry.record["patient"]["personal_id"], [entry], sensitive=SENSITIVE)
    validated(listed)
    said = everything_said(listed)
    sensitive_code = main if main.startswith("B") else secondary[0]
    for hidden in (sensitive_code, "Bệnh nhạy cảm", "2RHZE/4RHE", "XML15", event["reason"], "Paracetamol",
                   "Số lượng bạch cầu", "79004", "Viêm họng cấp"):
        assert hidden not in said, f"{hidden!r} leaked into a list Bundle"
    assert {e["resource"]["resourceType"] for e in listed["entry"]} == {"Patient", "Organization", "Encounter"}
    (encounter,) = resources(listed, "Encounter")
    assert encounter["meta"]["security"][0]["code"] == "MASKED"
    assert all(b["contentType"] != "application/vnd.healthbook.signed-visit+avro"
               for b in resources(listed, "Binary")), "the signed message holds the whole visit"
    detail = book_bundle(entry.record["patient"]["personal_id"], [entry], detail=True, sensitive=SENSITIVE)
    validated(detail)
    said = everything_said(detail)
    assert sensitive_code in said and "2RHZE/4RHE" in said
    (document,) = [d for d in resources(detail, "DocumentReference") if d["type"]["coding"][0]["code"] == "XML15"]
    assert document["securityLabel"][0]["coding"][0]["code"] == "R"


def test_a_year_without_visits_is_a_bundle_with_the_citizen_only():
    bundle = book_bundle("079186001234", [], sensitive=SENSITIVE)
    validated(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient"]


def test_a_broken_resource_fails_validation():
    entry = stored(visit(person=citizen(8), sequence=81))
    bundle = book_bundle(entry.record["patient"]["personal_id"], [entry], sensitive=SENSITIVE)
    resources(bundle, "Encounter")[0]["period"]["start"] = "202603150830"  # a QĐ 4750 time, not a FHIR dateTime
    with pytest.raises(ValueError, match=r"period\.start"):
        validated(bundle)
