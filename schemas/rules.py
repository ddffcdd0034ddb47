"""Domain rules of the QĐ 4750 data, as plain functions that raise RuleBroken."""

from __future__ import annotations

import re
from datetime import datetime

PROVINCE_MIN, PROVINCE_MAX = 1, 96
_PERSONAL_ID = re.compile(r"[0-9]{12}")
_FACILITY = re.compile(r"[0-9]{5}")
_MINUTE = re.compile(r"[0-9]{12}")
_DAY = re.compile(r"[0-9]{8}")
_ICD10 = re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?")
SEX_MALE, SEX_FEMALE, SEX_UNDETERMINED = 1, 2, 3


class RuleBroken(ValueError):
    """A value breaks a named domain rule; the message says what was expected."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def parse_minute(value: str, rule: str = "time_format") -> datetime:
    """Parse a yyyyMMddHHmm time, the standard's form for admission, discharge and orders."""
    if not _MINUTE.fullmatch(value):
        raise RuleBroken(rule, "must be 12 digits yyyyMMddHHmm")
    try:  # direct construction: strptime costs ~30 µs and runs several times per event
        return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        raise RuleBroken(rule, "is not a real date and time in yyyyMMddHHmm") from None


def parse_day(value: str, rule: str = "date_format") -> datetime:
    """Parse a yyyyMMdd date."""
    if not _DAY.fullmatch(value):
        raise RuleBroken(rule, "must be 8 digits yyyyMMdd")
    try:
        return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise RuleBroken(rule, "is not a real date in yyyyMMdd") from None


def parse_birth_date(value: str) -> datetime:
    """Parse a date of birth, which the standard allows as yyyyMMdd or yyyyMMddHHmm."""
    if len(value) == 12:
        return parse_minute(value, "birth_date_format")
    if len(value) == 8:
        return parse_day(value, "birth_date_format")
    raise RuleBroken("birth_date_format", "must be yyyyMMdd or yyyyMMddHHmm")


def check_province(code: int, rule: str) -> None:
    """Check a province code is in the national range 01-96."""
    if not PROVINCE_MIN <= code <= PROVINCE_MAX:
        raise RuleBroken(rule, f"province code {code:02d} is outside 01-96")


def check_facility_code(value: str) -> None:
    """Check a facility code (MA_CSKCB): 5 digits, the first two a province."""
    if not _FACILITY.fullmatch(value):
        raise RuleBroken("facility_code_format", "must be 5 digits")
    check_province(int(value[:2]), "facility_code_province")


def century_sex_digit(birth_year: int, sex: int) -> set[int]:
    """Return the digits a personal ID may carry in position 4 for this birth year and sex."""
    base = (birth_year // 100 - 19) * 2
    if not 0 <= base <= 8:
        return set()
    if sex == SEX_MALE:
        return {base}
    if sex == SEX_FEMALE:
        return {base + 1}
    return {base, base + 1}


def check_personal_id(value: str, birth_year: int | None, sex: int | None) -> None:
    """Check a 12-digit personal ID and that it encodes the given birth year and sex."""
    if not _PERSONAL_ID.fullmatch(value):
        raise RuleBroken("personal_id_format", "must be exactly 12 digits")
    check_province(int(value[:3]), "personal_id_province")
    if birth_year is None or sex is None:
        return
    allowed = century_sex_digit(birth_year, sex)
    if int(value[3]) not in allowed:
        raise RuleBroken(
            "personal_id_century_sex",
            f"digit 4 is {value[3]} but a person of sex {sex} born in {birth_year} "
            f"must have {' or '.join(str(d) for d in sorted(allowed)) or 'a year from 1900 to 2399'}",
        )
    if int(value[4:6]) != birth_year % 100:
        raise RuleBroken(
            "personal_id_birth_year",
            f"digits 5-6 are {value[4:6]} but the birth year is {birth_year}",
        )


def check_icd10(value: str) -> None:
    """Check the form of an ICD-10 code such as J06.9 or E11."""
    if not _ICD10.fullmatch(value):
        raise RuleBroken("icd10_format", "is not an ICD-10 code like J06.9 or E11")


def check_not_before(later: datetime, earlier: datetime, rule: str, what: str) -> None:
    """Check that one time is not before another."""
    if later < earlier:
        raise RuleBroken(rule, f"is before {what}")
