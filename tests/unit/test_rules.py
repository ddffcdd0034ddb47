"""Domain rules of QĐ 4750 data, one function each."""

from datetime import datetime

import pytest

from schemas import rules
from schemas.rules import RuleBroken


def broken(call, *args) -> str:
    with pytest.raises(RuleBroken) as caught:
        call(*args)
    return caught.value.rule


def test_personal_id_accepts_one_consistent_with_birth_and_sex():
    rules.check_personal_id("079186001234", 1986, 2)
    rules.check_personal_id("001095007788", 1995, 1)
    rules.check_personal_id("048212000001", 2012, 1)
    rules.check_personal_id("048312000001", 2012, 2)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("07918600123", "personal_id_format"),
        ("0791860012345", "personal_id_format"),
        ("07918600123A", "personal_id_format"),
        ("000186001234", "personal_id_province"),
        ("097186001234", "personal_id_province"),
        ("079086001234", "personal_id_century_sex"),  # says male, record says female
        ("079386001234", "personal_id_century_sex"),  # says born 2000s
        ("079185001234", "personal_id_birth_year"),
    ],
)
def test_personal_id_rule_names_what_is_wrong(value, rule):
    assert broken(rules.check_personal_id, value, 1986, 2) == rule


def test_undetermined_sex_allows_either_digit_of_the_century():
    rules.check_personal_id("079086001234", 1986, 3)
    rules.check_personal_id("079186001234", 1986, 3)
    assert broken(rules.check_personal_id, "079286001234", 1986, 3) == "personal_id_century_sex"


def test_century_digit_table():
    assert rules.century_sex_digit(1999, 1) == {0}
    assert rules.century_sex_digit(2000, 2) == {3}
    assert rules.century_sex_digit(2101, 1) == {4}
    assert rules.century_sex_digit(1899, 1) == set()


@pytest.mark.parametrize(("value", "rule"), [
    ("7900", "facility_code_format"), ("79OO1", "facility_code_format"),
    ("00001", "facility_code_province"), ("99001", "facility_code_province"),
])
def test_facility_code(value, rule):
    rules.check_facility_code("79001")
    assert broken(rules.check_facility_code, value) == rule


def test_minute_times():
    assert rules.parse_minute("202603150830") == datetime(2026, 3, 15, 8, 30)
    assert broken(rules.parse_minute, "2026031508") == "time_format"
    assert broken(rules.parse_minute, "202602300830") == "time_format"
    assert broken(rules.parse_minute, "202603152460") == "time_format"


def test_birth_date_takes_both_forms():
    assert rules.parse_birth_date("19860412").year == 1986
    assert rules.parse_birth_date("198604120000").year == 1986
    assert broken(rules.parse_birth_date, "1986041") == "birth_date_format"
    assert broken(rules.parse_birth_date, "19861312") == "birth_date_format"


@pytest.mark.parametrize("code", ["J06.9", "E11", "K29.7", "A09", "S72.00", "U07.1"])
def test_icd10_accepts(code):
    rules.check_icd10(code)


@pytest.mark.parametrize("code", ["j06.9", "J6.9", "J069", "J06.", "06.9", "J06.9;I10", ""])
def test_icd10_refuses(code):
    assert broken(rules.check_icd10, code) == "icd10_format"


def test_not_before():
    early, late = datetime(2026, 1, 1, 8), datetime(2026, 1, 1, 9)
    rules.check_not_before(late, early, "r", "x")
    rules.check_not_before(early, early, "r", "x")
    assert broken(rules.check_not_before, early, late, "discharge_before_admission", "x") == \
        "discharge_before_admission"
