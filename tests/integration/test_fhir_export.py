"""'healthbook export': a citizen's book as a FHIR R4 Bundle, asked of the running query consumer."""

import json
import re
from datetime import datetime

import pytest
from fhir.resources.R4B.bundle import Bundle

from tests.factories import full_visit, visit
from tests.integration.conftest import new_citizen, next_sequence, publish_and_wait
from tests.integration.test_cli import healthbook

pytestmark = pytest.mark.integration


def _kinds(bundle: dict) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for entry in bundle["entry"]:
        kinds[entry["resource"]["resourceType"]] = kinds.get(entry["resource"]["resourceType"], 0) + 1
    return kinds


async def test_export_prints_a_valid_bundle_of_a_year_the_whole_book_and_one_visit_in_full(
        clinics, db, identity, settings, tmp_path):
    carol = new_citizen()
    full = full_visit(carol, next_sequence(), datetime(2025, 4, 2, 9, 0))
    older = visit(person=carol, sequence=next_sequence(), admitted=datetime(2024, 11, 20, 10, 0))
    await publish_and_wait(clinics, db, full, older)

    year = healthbook(settings, "export", "--personal-id", carol.personal_id, "--year", "2025")
    assert year.returncode == 0, year.stderr
    bundle = json.loads(year.stdout)
    Bundle.model_validate(bundle)
    assert _kinds(bundle)["Encounter"] == 1 and "Provenance" not in _kinds(bundle), "its XML15 table seals it"
    assert "2RHZE/4RHE" not in year.stdout and "XML15" not in year.stdout, "sensitive tables only in a detail"

    out = tmp_path / "book.json"
    whole = healthbook(settings, "export", "--personal-id", carol.personal_id, "--out", str(out))
    assert whole.returncode == 0, whole.stderr
    book = json.loads(out.read_text(encoding="utf-8"))
    Bundle.model_validate(book)
    encounters = [e["resource"] for e in book["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert sorted(e["identifier"][0]["value"] for e in encounters) == sorted([full["visit_code"],
                                                                               older["visit_code"]])

    detail = healthbook(settings, "export", "--personal-id", carol.personal_id, "--visit",
                        f"79001/{full['visit_code']}")
    assert detail.returncode == 0, detail.stderr
    one = json.loads(detail.stdout)
    Bundle.model_validate(one)
    (document,) = [e["resource"] for e in one["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    assert document["type"]["coding"][0]["code"] == "XML15" and document["securityLabel"][0]["coding"][0]["code"] == "R"

    missing = healthbook(settings, "export", "--personal-id", carol.personal_id, "--visit", "79001/no-such-visit")
    assert missing.returncode != 0 and "not_found" in missing.stderr


def _sensitive_year(person, admitted_month: int) -> list[dict]:
    """Four visits an outside reader must not find in a list export, whatever they grep for."""
    def at(day: int) -> datetime:
        return datetime(2025, admitted_month, day, 9, 0)
    hiv = visit(person=person, sequence=next_sequence(), admitted=at(2), main_diagnosis_code="B20",
                discharge_diagnosis="Bệnh do HIV", medicines=[{
                    "line_no": 1, "drug_code": "J05AR27", "name": "Tenofovir/Lamivudine/Dolutegravir (TLD)",
                    "quantity": 30.0, "instructions": "Uống thuốc ARV đúng giờ",
                    "ordered_at": at(2).strftime("%Y%m%d%H%M")}],
                results=[{"line_no": 1, "service_code": "24.0117.1714", "indicator_name": "Tải lượng HIV",
                          "value": "<50", "unit": "copies/mL"}])
    carrier = visit(person=person, sequence=next_sequence(), admitted=at(3), main_diagnosis_code="Z21",
                    discharge_diagnosis="Nhiễm HIV không triệu chứng")
    tb = visit(person=person, sequence=next_sequence(), admitted=at(4), main_diagnosis_code="A15.0",
               discharge_diagnosis="Lao phổi")
    tb_table = visit(person=person, sequence=next_sequence(), admitted=at(5), main_diagnosis_code="Z76.0",
                     discharge_diagnosis="Cấp thuốc định kỳ")
    tb_table["sensitive"] = [{"table": "XML15", "records": [{"MA_LK": tb_table["visit_code"],
                                                             "PHAC_DO_DTRI_LAO": "2RHZE/4RHE", "MA_THUOC": "40.RHZE"}]}]
    return [hiv, carrier, tb, tb_table]


async def test_an_exported_year_names_nothing_of_its_sensitive_visits_to_an_outside_reader(clinics, db, identity,
                                                                                             settings):
    dan = new_citizen()
    sensitive = _sensitive_year(dan, 6)
    plain = visit(person=dan, sequence=next_sequence(), admitted=datetime(2025, 6, 20, 9, 0),
                  main_diagnosis_code="J06.9", discharge_diagnosis="Viêm họng cấp")
    await publish_and_wait(clinics, db, *sensitive, plain)
    year = healthbook(settings, "export", "--personal-id", dan.personal_id, "--year", "2025")
    assert year.returncode == 0, year.stderr
    for marker in ("HIV", "ARV", "lao", "J05AR", "RHZE", "B20", "Z21", "A15", "Z76.0", "Tenofovir", "24.0117"):
        # as a word or code, not inside a urn:uuid's hex digits
        found = re.search(rf"(?<![0-9a-z]){re.escape(marker.casefold())}", year.stdout.casefold())
        assert found is None, f"{marker!r} is in the list export"
    assert "J06.9" in year.stdout, "the plain visit is there in full"
    encounters = [e["resource"] for e in json.loads(year.stdout)["entry"]
                  if e["resource"]["resourceType"] == "Encounter"]
    assert sorted(e["meta"]["security"][0]["code"] for e in encounters if e.get("meta")) == ["MASKED"] * 4
    detail = healthbook(settings, "export", "--personal-id", dan.personal_id, "--visit",
                        f"79001/{sensitive[0]['visit_code']}")
    assert detail.returncode == 0 and "J05AR27" in detail.stdout and "Tải lượng HIV" in detail.stdout
