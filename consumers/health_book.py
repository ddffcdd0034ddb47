"""Reading one citizen's health book for one year and shaping it for the reply."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


def visit_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The reply's view of a stored visit record."""
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
    }


async def visits_of(conn: asyncpg.Connection, personal_id: str, year: int) -> list[dict[str, Any]]:
    """The citizen's visits admitted in the year, oldest first, as reply summaries."""
    rows = await conn.fetch(
        "select record from health_book_visits where personal_id = $1 and year = $2 "
        "order by admitted_at, facility_code, visit_code",
        personal_id, year,
    )
    return [visit_summary(json.loads(row["record"])) for row in rows]
