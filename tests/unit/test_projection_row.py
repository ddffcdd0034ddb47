"""What an accepted visit becomes in the health book, and how the reply shows it."""

import json
from datetime import UTC, datetime

from domain.replies import visit_view
from domain.rows import visit_row
from domain.validation import Accepted
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from tests.factories import visit


def accepted(**changes) -> Accepted:
    return Accepted(Visit.of_model(VisitEvent.model_validate(visit(**changes))), "k1", b"sig", 1_773_563_400_000)


def test_row_carries_identity_times_and_the_full_record():
    row = visit_row(accepted(), partition=3, offset=42)
    assert (row.facility_code, row.visit_code, row.version, row.year) == ("79001", "79001-2026-0000001", 1, 2026)
    assert row.admitted_at == datetime(2026, 3, 15, 8, 30)
    assert row.signed_at == datetime.fromtimestamp(1_773_563_400, UTC)
    assert (row.source_partition, row.source_offset, row.clinic_key_id, row.signature) == (3, 42, "k1", b"sig")
    record = json.loads(row.record)
    assert record["total_cost"] == str(visit()["total_cost"])
    assert record["patient"]["personal_id"] == row.personal_id


def test_record_json_is_canonical_so_replays_compare_equal():
    same = accepted()
    again = Accepted(Visit.of_model(VisitEvent.model_validate(same.event.record)), "k1", b"sig", 0)
    assert visit_row(same, 0, 0).record == visit_row(again, 0, 0).record


def test_reply_summary_lists_diagnoses_medicines_and_results():
    event = visit(secondary_diagnosis_codes=["I10"])
    summary = visit_view(json.loads(visit_row(accepted(secondary_diagnosis_codes=["I10"]), 0, 0).record))
    assert summary.diagnosis_codes == [event["main_diagnosis_code"], "I10"]
    assert summary.diagnosis_names == event["discharge_diagnosis"]
    assert [m.name for m in summary.medicines] == [m["name"] for m in event["medicines"]]
    assert [m.dose for m in summary.medicines] == [m["dose"] for m in event["medicines"]]
    assert [r.value for r in summary.results] == [r["value"] for r in event["results"]]
    assert "personal_id" not in summary.model_dump_json()
    assert summary.sensitive == []


def test_reply_summary_carries_services_papers_follow_up_and_payments():
    event = visit()
    event.update(
        services=[{"line_no": 1, "service_name": "Chụp X-quang ngực thẳng", "quantity": 1.0, "result": "Bình thường"}],
        discharge_paper={"diagnosis": "Viêm phế quản cấp", "treatment": "Kháng sinh 7 ngày", "note": "Tái khám"},
        referral={"to_facility": "79010", "reason_code": "1", "direction": "Điều trị tiếp", "issued_on": "20260316"},
        follow_up={"appointment_date": "20260322"},
        sensitive=[{"table": "XML6", "records": [{"MA_LK": "x", "MA_THE_ARV": "123"}]}],
    )
    row = visit_row(Accepted(Visit.of_model(VisitEvent.model_validate(event)), "k1", b"s", 0), 0, 0)
    summary = visit_view(json.loads(row.record))
    assert [s.model_dump() for s in summary.services] == [
        {"name": "Chụp X-quang ngực thẳng", "quantity": 1.0, "result": "Bình thường"}]
    assert summary.discharge_summary == ("Chẩn đoán ra viện: Viêm phế quản cấp; Phương pháp điều trị: "
                                            "Kháng sinh 7 ngày; Ghi chú: Tái khám")
    assert summary.referral.model_dump() == {"to_facility": "79010", "reason": "1", "direction": "Điều trị tiếp",
                                   "issued_on": "20260316"}
    assert summary.follow_up_date == "20260322"
    assert (summary.insurance_paid, summary.patient_paid) == (event["insurance_paid"], event["patient_paid"])
    assert summary.sensitive == [] and "MA_THE_ARV" not in row.record
    assert json.loads(row.sensitive) == [{"table": "XML6", "records": [{"MA_LK": "x", "MA_THE_ARV": "123"}]}]
