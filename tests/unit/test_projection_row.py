"""What an accepted visit becomes in the health book, and how the reply shows it."""

import json
from datetime import UTC, datetime

from consumers.health_book import visit_summary
from schemas.visit import VisitEvent
from streams.projection import visit_row
from streams.validation import Accepted
from tests.factories import visit


def accepted(**changes) -> Accepted:
    return Accepted(VisitEvent.model_validate(visit(**changes)), "k1", b"sig", 1_773_563_400_000)


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
    assert visit_row(accepted(), 0, 0).record == visit_row(accepted(), 0, 0).record


def test_reply_summary_lists_diagnoses_medicines_and_results():
    event = visit(secondary_diagnosis_codes=["I10"])
    summary = visit_summary(json.loads(visit_row(accepted(secondary_diagnosis_codes=["I10"]), 0, 0).record))
    assert summary["diagnosis_codes"] == [event["main_diagnosis_code"], "I10"]
    assert summary["diagnosis_names"] == event["discharge_diagnosis"]
    assert [m["name"] for m in summary["medicines"]] == [m["name"] for m in event["medicines"]]
    assert [m["dose"] for m in summary["medicines"]] == [m["dose"] for m in event["medicines"]]
    assert [r["value"] for r in summary["results"]] == [r["value"] for r in event["results"]]
    assert "personal_id" not in json.dumps(summary, default=str)
    assert summary["sensitive"] == []
