"""Diagnoses sensitive by content: which ICD-10 codes, and the setting that names them."""

import pytest

from domain import deidentify, replies
from domain.book_entry import BookEntry
from domain.sensitive_diagnoses import BadSensitiveRanges, SensitiveDiagnoses
from domain.sentences import SEALED_VISIT
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from tests.factories import SENSITIVE, visit


@pytest.mark.parametrize(("code", "sensitive"), [
    ("B20", True), ("B20.1", True), ("B24", True), ("b22.7", True), ("Z21", True), ("A15.0", True), ("A19.9", True),
    ("B19.9", False), ("B25", False), ("A14", False), ("A20", False), ("Z20", False), ("J06.9", False), ("", False),
    ("B2", False), (None, False),
])
def test_the_default_list_covers_hiv_b20_b24_z21_and_tuberculosis_a15_a19(code, sensitive):
    assert (code in SENSITIVE.diagnoses) is sensitive


def test_the_list_is_a_setting_and_a_wrong_one_says_which_part():
    custom = SensitiveDiagnoses.parse(" f20-F29 , O04")
    assert "F25.1" in custom and "O04" in custom and "B20" not in custom
    for wrong in ("B20-A15", "HIV", "B20-", "B2O"):
        with pytest.raises(BadSensitiveRanges, match=wrong.strip()):
            SensitiveDiagnoses.parse(f"A15-A19,{wrong}")


def _record(main: str, secondary: list[str]) -> dict:
    event = VisitEvent.model_validate(visit(main_diagnosis_code=main, secondary_diagnosis_codes=secondary))
    return event.model_dump(mode="json", exclude={"sensitive"})


def test_a_year_list_seals_a_visit_with_a_sensitive_secondary_diagnosis_and_its_detail_keeps_it():
    record = _record("J06.9", ["B20.1"])
    listed = replies.year_served("r-1", 2026, [BookEntry(record), BookEntry(_record("J20.9", []))], SENSITIVE).visits
    assert listed[0].sealed and listed[0].diagnosis_codes == [] and listed[0].diagnosis_names == SEALED_VISIT.citizen()
    assert listed[0].reason is None and listed[0].discharge_summary is None and not listed[0].medicines
    assert listed[1].diagnosis_codes == ["J20.9"] and not listed[1].sealed
    detail = replies.detail_served("r-2", 2026, BookEntry(record)).visits[0]
    assert detail.diagnosis_codes == ["J06.9", "B20.1"] and detail.diagnosis_names == record["discharge_diagnosis"]


def test_a_secondary_sensitive_diagnosis_withholds_the_visit_from_analytics():
    assert deidentify.withheld(Visit.of_model(VisitEvent.model_validate(visit(
        main_diagnosis_code="J06.9", secondary_diagnosis_codes=["A15.0"]))), SENSITIVE)
    plain = Visit.of_model(VisitEvent.model_validate(visit(main_diagnosis_code="J06.9")))
    assert not deidentify.withheld(plain, SENSITIVE)


def test_the_ranges_expand_to_their_categories_unless_there_are_too_many_to_scan_one_by_one():
    assert SENSITIVE.diagnoses.categories(64) == ("A15", "A16", "A17", "A18", "A19", "B20", "B21", "B22", "B23",
                                                  "B24", "Z21")
    assert SensitiveDiagnoses.parse("Y98-Z01").categories(64) == ("Y98", "Y99", "Z00", "Z01")
    assert SensitiveDiagnoses.parse("F00-F99").categories(64) is None
