"""The pydantic visit model: every rule failure names field, value and rule."""

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.catalogue import AVRO_DIR
from schemas.compatibility import records
from schemas.problems import problems_of
from schemas.visit import (
    DischargePaper,
    Document,
    FollowUp,
    LabResult,
    Medicine,
    Patient,
    ProgressNote,
    RecordSummary,
    Referral,
    Service,
    VisitEvent,
)
from tests.factories import visit, with_patient


def violations(record):
    with pytest.raises(ValidationError) as caught:
        VisitEvent.model_validate(record)
    return problems_of(caught.value)


def test_a_synthetic_visit_is_valid():
    event = VisitEvent.model_validate(visit())
    assert event.visit_key == "79001/79001-2026-0000001"
    assert event.year == 2026
    assert event.personal_id == event.patient.personal_id


def test_discharge_before_admission_names_field_value_and_rule():
    (found,) = violations(visit(discharged_at="202603150700"))
    assert (found.field, found.value, found.rule) == ("discharged_at", "202603150700", "discharge_before_admission")
    assert "admission 202603150830" in found.message


def test_personal_id_inconsistent_with_birth_year():
    record = visit()
    wrong = record["patient"]["personal_id"][:4] + "00" + record["patient"]["personal_id"][6:]
    (found,) = violations(with_patient(record, personal_id=wrong))
    assert found.field == "patient.personal_id"
    assert found.value == wrong
    assert found.rule == "personal_id_birth_year"


def test_several_violations_are_all_reported():
    record = visit(main_diagnosis_code="flu", facility_code="123", admitted_at="2026-03-15")
    found = {v.field: v.rule for v in violations(record)}
    assert found == {
        "facility_code": "facility_code_format",
        "admitted_at": "time_format",
        "main_diagnosis_code": "icd10_format",
    }


def test_required_text_cannot_be_empty():
    found = violations(with_patient(visit(), full_name=""))
    assert [(v.field, v.rule) for v in found] == [("patient.full_name", "string_too_short")]


def test_secondary_codes_are_checked_one_by_one():
    (found,) = violations(visit(secondary_diagnosis_codes=["I10", "bad"]))
    assert (found.field, found.value, found.rule) == ("secondary_diagnosis_codes.1", "bad", "icd10_format")


def test_negative_money_and_unknown_fields_are_refused():
    found = {v.field: v.rule for v in violations(visit(insurance_paid=Decimal("-1"), surprise=1))}
    assert found == {"insurance_paid": "greater_than_equal", "surprise": "extra_forbidden"}


def test_medicine_order_time_is_checked():
    record = visit()
    record["medicines"][0]["ordered_at"] = "20260315"
    (found,) = violations(record)
    assert (found.field, found.rule) == ("medicines.0.ordered_at", "time_format")


@pytest.mark.parametrize(("model", "record_name"), [
    (VisitEvent, "VisitEvent"), (Patient, "Patient"), (Medicine, "Medicine"), (LabResult, "LabResult"),
    (Service, "Service"), (ProgressNote, "ProgressNote"), (DischargePaper, "DischargePaper"),
    (RecordSummary, "RecordSummary"), (Referral, "Referral"), (FollowUp, "FollowUp"), (Document, "Document"),
])
def test_model_fields_match_the_avro_schema(model, record_name):
    schema = json.loads((AVRO_DIR / "visit_event_v2.avsc").read_text())

    avro_fields = {f["name"] for f in records(schema)[record_name]["fields"]}
    assert avro_fields == set(model.model_fields)


@pytest.mark.parametrize("name", ["visit_event_v1.avsc", "visit_event_v2.avsc"])
def test_every_avro_field_documents_its_source(name):
    schema = json.loads((AVRO_DIR / name).read_text())
    undocumented = [f"{record}.{field['name']}" for record, definition in records(schema).items()
                    for field in definition["fields"] if not field.get("doc")]
    assert undocumented == []
