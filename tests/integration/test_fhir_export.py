"""'healthbook export': a citizen's book as a FHIR R4 Bundle, asked of the running query consumer."""

import json
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
    assert _kinds(bundle)["Encounter"] == 1 and _kinds(bundle)["Provenance"] == 1
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
