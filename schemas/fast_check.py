"""The fast path of the visit rules: a decoded record that certainly passes them all, checked without pydantic.

`accepted(record)` returns the Visit when every rule of schemas.visit holds for the record exactly as it
is (its text already NFC, no control character), and None otherwise. None is not a rejection: the caller
then runs the full pydantic model, which decides and names every problem. So the fast path may only
ever accept less than the model, never more; tests/unit/test_fast_check.py holds it to that over
100,000 generated visits, valid and broken in every rule.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from schemas import rules
from schemas.text import json_text_is_clean
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
from schemas.visit_record import Visit, to_json

Check = Callable[[Any], bool]
_MONEY_LIMIT = Decimal(10) ** 16  # 16 integer digits and 2 decimals: the model's max_digits=18


def _broken(check: Callable[..., Any], *args: Any) -> bool:
    try:
        check(*args)
    except rules.RuleBroken:
        return True
    return False


@lru_cache(maxsize=1 << 16)
def _minute(value: str) -> bool:
    """Whether text is a real yyyyMMddHHmm time; the same few thousand times recur across a topic."""
    return not _broken(rules.parse_minute, value)


@lru_cache(maxsize=1 << 14)
def _day(value: str) -> bool:
    return not _broken(rules.parse_day, value)


def _is_minute(value: Any) -> bool:
    return type(value) is str and _minute(value)


def _is_day(value: Any) -> bool:
    return type(value) is str and _day(value)


def _int_range(low: int | None, high: int | None, optional: bool = False) -> Check:
    bounds = ["type(v) is int", *([f"v >= {low}"] if low is not None else []),
              *([f"v <= {high}"] if high is not None else [])]
    return _inline(" and ".join(bounds), optional)


def _non_negative_float(optional: bool = False) -> Check:
    return _inline("type(v) is float and 0.0 <= v < _INFINITY", optional)


def _inline(condition: str, optional: bool) -> Check:
    """A check of one value written as a condition on v, which _fields writes into its generated code."""
    expression = f"v is None or ({condition})" if optional else condition
    check: Check = eval(f"lambda v: {expression}", {"_INFINITY": float("inf")})  # text of our own
    check.condition = expression  # type: ignore[attr-defined]
    return check


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _money(value: Any) -> bool:
    return type(value) is Decimal and value.is_finite() and value.as_tuple().exponent == -2 \
        and 0 <= value < _MONEY_LIMIT


def _icd10(value: Any) -> bool:
    return type(value) is str and not _broken(rules.check_icd10, value)


def _facility(value: Any) -> bool:
    return type(value) is str and not _broken(rules.check_facility_code, value)


def _list_of(check: Check, at_least: int = 0) -> Check:
    def each(value: Any) -> bool:
        if type(value) is not list or len(value) < at_least:
            return False
        for item in value:  # noqa: SIM110 - a loop, not all(): no generator per call on the hot path
            if not check(item):
                return False
        return True
    return each


_text = _inline("type(v) is str and v != ''", optional=False)
_str = _inline("type(v) is str", optional=False)


def _text_map(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for key, item in value.items():  # noqa: SIM110 - as above
        if type(key) is not str or type(item) is not str:
            return False
    return True


def _fields(model: type[BaseModel], *, text: tuple[str, ...] = (), optional_text: tuple[str, ...] = (),
            minutes: tuple[str, ...] = (), optional_minutes: tuple[str, ...] = (),
            optional_days: tuple[str, ...] = (), other: dict[str, Check] | None = None) -> Check:
    """A check of one record of model: exactly its fields, each of the kind named.

    It is generated once as one straight function of the model's fields, so a record is checked without a
    call or a loop per field on the worker's hot path.
    """
    others = tuple((other or {}).items())
    named = [*text, *optional_text, *minutes, *optional_minutes, *optional_days, *(name for name, _ in others)]
    if sorted(named) != sorted(model.model_fields):
        raise AssertionError(f"the fast path of {model.__name__} must check each of its fields once")
    conditions = [
        *((name, "type(v) is str and v") for name in text),
        *((name, "v is None or type(v) is str") for name in optional_text),
        *((name, "type(v) is str and _minute(v)") for name in minutes),
        *((name, "v is None or (type(v) is str and _minute(v))") for name in optional_minutes),
        *((name, "v is None or (type(v) is str and _day(v))") for name in optional_days),
        *((name, getattr(ok, "condition", f"_other_{index}(v)")) for index, (name, ok) in enumerate(others)),
    ]
    lines = ["def check(value):", "    if type(value) is not dict or value.keys() != _names:", "        return False"]
    for name, condition in conditions:
        lines += [f"    v = value[{name!r}]", f"    if not ({condition}):", "        return False"]
    lines.append("    return True")
    scope: dict[str, Any] = {"_names": frozenset(named), "_minute": _minute, "_day": _day,
                             "_INFINITY": float("inf"), **{f"_other_{i}": ok for i, (_, ok) in enumerate(others)}}
    exec(compile("\n".join(lines), f"<fast check of {model.__name__}>", "exec"), scope)  # text of our own
    return scope["check"]  # type: ignore[no-any-return]


_LINE_NO = _int_range(0, None)


def _patient_rules(patient: dict[str, Any]) -> bool:
    """The personal ID against birth year and sex, once both are known good (as the model orders them)."""
    birth, sex, personal_id = patient["birth_date"], patient["sex"], patient["personal_id"]
    if type(birth) is not str or _broken(rules.parse_birth_date, birth):
        return False
    return personal_id is None or not _broken(rules.check_personal_id, personal_id, int(birth[:4]), sex)


_PATIENT_FIELDS = _fields(
    Patient, text=("patient_code", "full_name"),
    optional_text=("address", "province_code", "phone", "blood_type", "registered_facility", "card_valid_from",
                   "card_valid_to"),
    other={"birth_date": _str, "sex": _int_range(1, 3), "personal_id": _optional(_text),
           "insurance_card_numbers": _list_of(_text, at_least=1)})
_MEDICINE = _fields(
    Medicine, text=("drug_code", "name"),
    optional_text=("unit", "strength", "route", "dose", "instructions", "prescriber_code"),
    minutes=("ordered_at",), optional_minutes=("administered_at",),
    other={"line_no": _LINE_NO, "quantity": _non_negative_float(), "extra": _text_map})
_LAB_RESULT = _fields(
    LabResult, text=("service_code", "indicator_name"),
    optional_text=("indicator_code", "value", "unit", "description", "conclusion", "reader_code"),
    optional_minutes=("result_at",), other={"line_no": _LINE_NO, "extra": _text_map})
_SERVICE = _fields(
    Service, optional_text=("service_code", "service_name", "supply_code", "supply_name", "result", "performed_by"),
    optional_minutes=("ordered_at", "result_at"),
    other={"line_no": _LINE_NO, "quantity": _non_negative_float(), "extra": _text_map})
_PROGRESS_NOTE = _fields(
    ProgressNote, optional_text=("clinical_course", "stage", "consultation", "surgery", "noted_by"),
    optional_minutes=("noted_at",), other={"line_no": _LINE_NO, "extra": _text_map})
_DISCHARGE_PAPER = _fields(
    DischargePaper,
    optional_text=("archive_no", "discharge_department", "diagnosis", "treatment", "note", "doctor_name"),
    optional_minutes=("admitted_at", "discharged_at"), optional_days=("issued_on",), other={"extra": _text_map})
_RECORD_SUMMARY = _fields(
    RecordSummary, optional_text=("admission_diagnosis", "discharge_diagnosis", "clinical_course",
                                  "results_summary", "treatment", "treatment_result", "note"),
    other={"extra": _text_map})
_REFERRAL = _fields(
    Referral, optional_text=("referral_no", "from_facility", "to_facility", "reason_code", "diagnosis",
                             "clinical_course", "results_summary", "treatment", "direction"),
    optional_days=("issued_on",), other={"extra": _text_map})
_FOLLOW_UP = _fields(
    FollowUp, optional_text=("appointment_no", "diagnosis", "doctor_code"),
    optional_days=("appointment_date", "issued_on"), other={"extra": _text_map})
_DOCUMENT = _fields(Document, text=("table",), other={"records": _list_of(_text_map)})
_VISIT = _fields(
    VisitEvent, text=("event_id", "visit_code", "discharge_diagnosis"),
    optional_text=("reason", "admission_diagnosis", "department_code"),
    minutes=("admitted_at", "discharged_at"), optional_minutes=("inpatient_at",), optional_days=("follow_up_date",),
    other={
        "version": _int_range(0, None), "facility_code": _facility,
        "patient": lambda value: _PATIENT_FIELDS(value) and _patient_rules(value),
        "visit_type": _int_range(1, 99), "main_diagnosis_code": _icd10,
        "secondary_diagnosis_codes": _list_of(_icd10),
        "traditional_diagnosis_codes": _list_of(_str), "procedure_codes": _list_of(_str),
        "treatment_result": _int_range(1, 9, optional=True),
        "discharge_type": _int_range(None, None, optional=True),
        "treatment_days": _int_range(0, None, optional=True),
        "weight_kg": _non_negative_float(optional=True),
        "settlement_year": _int_range(None, None, optional=True),
        "settlement_month": _int_range(1, 12, optional=True),
        "total_cost": _money, "insurance_paid": _money, "patient_paid": _money,
        "medicines": _list_of(_MEDICINE), "results": _list_of(_LAB_RESULT), "services": _list_of(_SERVICE),
        "progress_notes": _list_of(_PROGRESS_NOTE),
        "discharge_paper": _optional(_DISCHARGE_PAPER), "record_summary": _optional(_RECORD_SUMMARY),
        "referral": _optional(_REFERRAL), "follow_up": _optional(_FOLLOW_UP),
        "certificates": _list_of(_DOCUMENT), "sensitive": _list_of(_DOCUMENT), "extra": _text_map,
    })


def accepted(record: dict[str, Any]) -> Visit | None:
    """The visit when the record as it is passes every rule; None when the full model must decide."""
    if not _VISIT(record) or record["discharged_at"] < record["admitted_at"]:  # same-width digits: text order
        return None
    try:
        book_json = to_json({k: v for k, v in record.items() if k != "sensitive"})
        sensitive_clean = not record["sensitive"] or json_text_is_clean(to_json(record["sensitive"]))
    except TypeError:  # text that is not valid Unicode: the model names it
        return None
    return Visit(record, book_json) if sensitive_clean and json_text_is_clean(book_json) else None
