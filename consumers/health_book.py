"""Reading one citizen's health book (a year's list, or one visit in full) and shaping it for the reply."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg


def _discharge_summary(record: dict[str, Any]) -> str | None:
    paper = record.get("discharge_paper") or {}
    summary = record.get("record_summary") or {}
    parts = [
        ("Chẩn đoán ra viện", paper.get("diagnosis") or summary.get("discharge_diagnosis")),
        ("Tóm tắt kết quả", summary.get("results_summary")),
        ("Phương pháp điều trị", paper.get("treatment") or summary.get("treatment")),
        ("Ghi chú", paper.get("note") or summary.get("note")),
    ]
    text = "; ".join(f"{label}: {value}" for label, value in parts if value)
    return text or None


def visit_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The reply's view of a stored visit record (never its sensitive tables, which are stored apart)."""
    referral = record.get("referral")
    follow_up = record.get("follow_up") or {}
    return {
        "facility_code": record["facility_code"],
        "visit_code": record["visit_code"],
        "visit_type": record["visit_type"],
        "admitted_at": record["admitted_at"],
        "discharged_at": record["discharged_at"],
        "reason": record.get("reason"),
        "diagnosis_codes": [record["main_diagnosis_code"], *record.get("secondary_diagnosis_codes", [])],
        "diagnosis_names": record["discharge_diagnosis"],
        "treatment_result": record.get("treatment_result"),
        "medicines": [
            {"name": m["name"], "strength": m.get("strength"), "dose": m.get("dose"),
             "instructions": m.get("instructions")}
            for m in record.get("medicines", [])
        ],
        "results": [
            {"name": r["indicator_name"], "value": r.get("value"), "unit": r.get("unit"),
             "conclusion": r.get("conclusion")}
            for r in record.get("results", [])
        ],
        "services": [
            {"name": s.get("service_name") or s.get("supply_name") or s.get("service_code") or "?",
             "quantity": s.get("quantity", 0.0), "result": s.get("result")}
            for s in record.get("services", [])
        ],
        "discharge_summary": _discharge_summary(record),
        "referral": None if not referral else {
            "to_facility": referral.get("to_facility"), "reason": referral.get("reason_code"),
            "direction": referral.get("direction"), "issued_on": referral.get("issued_on")},
        "follow_up_date": follow_up.get("appointment_date") or record.get("follow_up_date"),
        "insurance_paid": _money(record.get("insurance_paid")),
        "patient_paid": _money(record.get("patient_paid")),
        "sensitive": [],
    }


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))


async def visits_of(conn: asyncpg.Connection, personal_id: str, year: int) -> list[dict[str, Any]]:
    """The citizen's visits admitted in the year, oldest first, as reply summaries."""
    rows = await conn.fetch(
        "select record from health_book_visits where personal_id = $1 and year = $2 "
        "order by admitted_at, facility_code, visit_code",
        personal_id, year,
    )
    return [visit_summary(json.loads(row["record"])) for row in rows]


async def visit_detail(conn: asyncpg.Connection, personal_id: str, facility_code: str,
                       visit_code: str) -> dict[str, Any] | None:
    """One visit of the citizen in full, sensitive tables included; None when it is not theirs or not there."""
    row = await conn.fetchrow(
        "select record, sensitive from health_book_visits "
        "where personal_id = $1 and facility_code = $2 and visit_code = $3",
        personal_id, facility_code, visit_code,
    )
    if row is None:
        return None
    return dict(visit_summary(json.loads(row["record"])), sensitive=json.loads(row["sensitive"]))
