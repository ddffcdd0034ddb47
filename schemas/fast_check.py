"""The fast path of the visit rules: a decoded record that certainly passes them all, checked without pydantic.

`accepted(record)` returns the Visit when every rule of schemas.visit holds for the record exactly as it
is (its text already NFC, no control character), and None otherwise. None is not a rejection: the caller
then runs the full pydantic model, which decides and names every problem. So the fast path may only
ever accept less than the model, never more; tests/unit/test_fast_check.py holds it to that over
100,000 generated visits, valid and broken in every rule. The worker's records come from fastavro, so it
asks accepted(record, decoded=True): then only what the visit schema leaves open is checked (not the types,
the field names or a decimal's scale), and the same test holds that to the full check on every case that
could be written to the wire.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from schemas import catalogue, rules
from schemas.text import json_bytes_are_clean, json_text_is_clean
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
from schemas.visit_record import Visit, to_json, to_json_bytes

_MONEY_LIMIT = Decimal(10) ** 16  # 16 integer digits and 2 decimals: the model's max_digits=18


def _broken(check: Callable[..., Any], *args: Any) -> bool:
    try:
        check(*args)
    except rules.RuleBroken:
        return True
    return False


def _passes(rule: Callable[[str], Any], cached: int) -> Callable[[str], bool]:
    """Whether a text passes one rule, each text's verdict worked out once (the same few recur across a topic)."""
    return lru_cache(maxsize=cached)(lambda value: not _broken(rule, value))


_minute = _passes(rules.parse_minute, 1 << 16)  # a real yyyyMMddHHmm time
_day = _passes(rules.parse_day, 1 << 14)
_icd10 = _passes(rules.check_icd10, 1 << 14)
_facility = _passes(rules.check_facility_code, 1 << 12)


@lru_cache(maxsize=1 << 16)
def _person(birth: str, sex: int, personal_id: str | None) -> bool:
    """The personal ID against birth year and sex, once both are known good (as the model orders them)."""
    if _broken(rules.parse_birth_date, birth):
        return False
    return personal_id is None or not _broken(rules.check_personal_id, personal_id, int(birth[:4]), sex)


@dataclass(frozen=True)
class _Is:
    """A value of one Python type meeting a condition ({v} where the value goes), if any.

    `beyond_avro` is what is left to check of a value fastavro decoded with the visit schema, which already
    makes it of that type (and a decimal of scale 2, finite): the condition itself unless given.
    """

    kind: str
    condition: str | None = None
    beyond_avro: str | None = ""

    def full(self, v: str) -> str:
        """The whole condition on the value in variable v: its type, then the rest."""
        return f"type({v}) is {self.kind}" + (f" and {self.condition.format(v=v)}" if self.condition else "")

    def decoded(self, v: str) -> str | None:
        """What is left to check of v once the Avro schema made it of this type; None when nothing is."""
        rest = self.condition if self.beyond_avro == "" else self.beyond_avro
        return rest.format(v=v) if rest else None


@dataclass(frozen=True)
class _Maybe:
    """None, or a value that passes the inner check."""

    inner: _Spec


@dataclass(frozen=True)
class _ListOf:
    """A list, of at least so many items, each passing the item check."""

    item: _Spec
    at_least: int = 0


@dataclass(frozen=True)
class _TextMap:
    """A dict of text to text (a table's extra columns)."""


@dataclass(frozen=True)
class _Record:
    """A dict with exactly the model's fields, each passing its check, then the whole passing `then`, if given."""

    model: type[BaseModel]
    fields: dict[str, _Spec]
    then: str | None = None


_Spec = _Is | _Maybe | _ListOf | _TextMap | _Record

_STR = _Is("str")
_TEXT = _Is("str", "{v}")
_MINUTE = _Is("str", "_minute({v})")
_DAY = _Is("str", "_day({v})")
_LINE_NO = _Is("int", "{v} >= 0")
_NON_NEGATIVE = _Is("float", "0.0 <= {v} < _INFINITY")
_MONEY = _Is("Decimal", "{v}.is_finite() and {v}.as_tuple().exponent == -2 and 0 <= {v} < _MONEY_LIMIT",
             beyond_avro="0 <= {v} < _MONEY_LIMIT")


def _int(low: int | None = None, high: int | None = None) -> _Is:
    bounds = [*([f"{{v}} >= {low}"] if low is not None else []), *([f"{{v}} <= {high}"] if high is not None else [])]
    return _Is("int", " and ".join(bounds) or None)


def _record(model: type[BaseModel], *, text: tuple[str, ...] = (), optional_text: tuple[str, ...] = (),
            minutes: tuple[str, ...] = (), optional_minutes: tuple[str, ...] = (),
            optional_days: tuple[str, ...] = (), other: dict[str, _Spec] | None = None,
            then: str | None = None) -> _Record:
    """A record of model, exactly its fields, each of the kind named."""
    fields: dict[str, _Spec] = {
        **dict.fromkeys(text, _TEXT), **dict.fromkeys(optional_text, _Maybe(_STR)),
        **dict.fromkeys(minutes, _MINUTE), **dict.fromkeys(optional_minutes, _Maybe(_MINUTE)),
        **dict.fromkeys(optional_days, _Maybe(_DAY)), **(other or {})}
    named = [*text, *optional_text, *minutes, *optional_minutes, *optional_days, *(other or {})]
    if sorted(named) != sorted(model.model_fields):
        raise AssertionError(f"the fast path of {model.__name__} must check each of its fields once")
    return _Record(model, fields, then)


class _Writer:
    """Writes one straight function of a spec: no call or loop of our own per field on the worker's hot path.

    With from_avro, it checks only what the visit schema leaves open, for a record as fastavro decoded it: the
    types, the field names and the decimals' scale are then the schema's, as _avro_guarantees proves once.
    """

    def __init__(self, from_avro: bool = False) -> None:
        self.from_avro = from_avro
        self.lines = ["def check(record):"]
        self.scope: dict[str, Any] = {"_minute": _minute, "_day": _day, "_icd10": _icd10, "_facility": _facility,
                                      "_person": _person, "Decimal": Decimal, "_INFINITY": float("inf"),
                                      "_MONEY_LIMIT": _MONEY_LIMIT}
        self.names = 0

    def name(self) -> str:
        self.names += 1
        return f"v{self.names}"

    def fail_unless(self, condition: str | None, depth: int) -> None:
        if condition:
            self.lines += [f"{'    ' * depth}if not ({condition}):", f"{'    ' * depth}    return False"]

    def condition(self, spec: _Is, v: str) -> str | None:
        """The condition this writer checks of one value."""
        return spec.decoded(v) if self.from_avro else spec.full(v)

    def write(self, spec: _Spec, v: str, depth: int) -> None:
        pad = "    " * depth
        if isinstance(spec, _Is):
            self.fail_unless(self.condition(spec, v), depth)
        elif isinstance(spec, _Maybe) and isinstance(spec.inner, _Is):
            inner = self.condition(spec.inner, v)
            self.fail_unless(inner and f"{v} is None or ({inner})", depth)
        elif isinstance(spec, _Maybe):
            self.lines.append(f"{pad}if {v} is not None:")
            size = len(self.lines)
            self.write(spec.inner, v, depth + 1)
            if len(self.lines) == size:  # nothing left to check inside
                self.lines.pop()
        elif isinstance(spec, _ListOf):
            self.fail_unless(" and ".join([*([] if self.from_avro else [f"type({v}) is list"]),
                                           *([f"len({v}) >= {spec.at_least}"] if spec.at_least else [])]), depth)
            item = self.name()
            self.lines.append(f"{pad}for {item} in {v}:")
            size = len(self.lines)
            self.write(spec.item, item, depth + 1)
            if len(self.lines) == size:  # nothing left to check of each item
                self.lines.pop()
        elif isinstance(spec, _TextMap):
            if not self.from_avro:
                self.fail_unless(f"type({v}) is dict", depth)
                key, item = self.name(), self.name()
                self.lines.append(f"{pad}for {key}, {item} in {v}.items():")
                self.fail_unless(f"type({key}) is str and type({item}) is str", depth + 1)
        else:
            if not self.from_avro:
                names = f"_names_{self.name()}"
                self.scope[names] = frozenset(spec.fields)
                self.fail_unless(f"type({v}) is dict and {v}.keys() == {names}", depth)
            for field, field_spec in spec.fields.items():
                value = self.name()
                self.lines.append(f"{pad}{value} = {v}[{field!r}]")
                size = len(self.lines)
                self.write(field_spec, value, depth)
                if len(self.lines) == size:  # nothing to check: the value need not be read
                    self.lines.pop()
            if spec.then:
                self.fail_unless(spec.then.format(v=v), depth)

    def compiled(self, spec: _Record) -> Callable[[Any], bool]:
        self.write(spec, "record", 1)
        self.lines.append("    return True")
        source = f"<fast check of {spec.model.__name__}{' as decoded' if self.from_avro else ''}>"
        exec(compile("\n".join(self.lines), source, "exec"), self.scope)  # text of our own
        return self.scope["check"]  # type: ignore[no-any-return]


_AVRO_KINDS = {"str": ("string",), "int": ("int", "long"), "float": ("double",)}


def _avro_guarantees(spec: _Spec, avro: Any, named: dict[str, Any], where: str) -> None:
    """Raise AssertionError unless the Avro type makes every value it decodes of the spec's types and fields."""
    if isinstance(avro, str) and avro in named:
        avro = named[avro]
    if isinstance(avro, dict) and "name" in avro:
        named[avro["name"]] = avro
    kind = avro.get("type") if isinstance(avro, dict) else avro
    if isinstance(spec, _Is) and spec.kind == "Decimal":
        ok = kind == "bytes" and avro.get("logicalType") == "decimal" and avro.get("scale") == 2
    elif isinstance(spec, _Is):
        ok = kind in _AVRO_KINDS[spec.kind]
    elif isinstance(spec, _Maybe):
        ok = isinstance(avro, list) and len(avro) == 2 and "null" in avro
        if ok:
            _avro_guarantees(spec.inner, next(a for a in avro if a != "null"), named, where)
    elif isinstance(spec, _ListOf):
        ok = kind == "array"
        if ok:
            _avro_guarantees(spec.item, avro["items"], named, f"{where}[]")
    elif isinstance(spec, _TextMap):
        ok = kind == "map" and avro["values"] == "string"
    else:
        ok = kind == "record" and sorted(f["name"] for f in avro["fields"]) == sorted(spec.fields)
        if ok:
            for field in avro["fields"]:
                _avro_guarantees(spec.fields[field["name"]], field["type"], named, f"{where}.{field['name']}")
    if not ok:
        raise AssertionError(f"the visit schema does not guarantee the fast path's types at {where or 'the record'}")


_PATIENT = _record(
    Patient, text=("patient_code", "full_name"),
    optional_text=("address", "province_code", "phone", "blood_type", "registered_facility", "card_valid_from",
                   "card_valid_to"),
    other={"birth_date": _STR, "sex": _int(1, 3), "personal_id": _Maybe(_TEXT),
           "insurance_card_numbers": _ListOf(_TEXT, at_least=1)},
    then="_person({v}['birth_date'], {v}['sex'], {v}['personal_id'])")
_MEDICINE = _record(
    Medicine, text=("drug_code", "name"),
    optional_text=("unit", "strength", "route", "dose", "instructions", "prescriber_code"),
    minutes=("ordered_at",), optional_minutes=("administered_at",),
    other={"line_no": _LINE_NO, "quantity": _NON_NEGATIVE, "extra": _TextMap()})
_LAB_RESULT = _record(
    LabResult, text=("service_code", "indicator_name"),
    optional_text=("indicator_code", "value", "unit", "description", "conclusion", "reader_code"),
    optional_minutes=("result_at",), other={"line_no": _LINE_NO, "extra": _TextMap()})
_SERVICE = _record(
    Service, optional_text=("service_code", "service_name", "supply_code", "supply_name", "result", "performed_by"),
    optional_minutes=("ordered_at", "result_at"),
    other={"line_no": _LINE_NO, "quantity": _NON_NEGATIVE, "extra": _TextMap()})
_PROGRESS_NOTE = _record(
    ProgressNote, optional_text=("clinical_course", "stage", "consultation", "surgery", "noted_by"),
    optional_minutes=("noted_at",), other={"line_no": _LINE_NO, "extra": _TextMap()})
_DISCHARGE_PAPER = _record(
    DischargePaper,
    optional_text=("archive_no", "discharge_department", "diagnosis", "treatment", "note", "doctor_name"),
    optional_minutes=("admitted_at", "discharged_at"), optional_days=("issued_on",), other={"extra": _TextMap()})
_RECORD_SUMMARY = _record(
    RecordSummary, optional_text=("admission_diagnosis", "discharge_diagnosis", "clinical_course",
                                  "results_summary", "treatment", "treatment_result", "note"),
    other={"extra": _TextMap()})
_REFERRAL = _record(
    Referral, optional_text=("referral_no", "from_facility", "to_facility", "reason_code", "diagnosis",
                             "clinical_course", "results_summary", "treatment", "direction"),
    optional_days=("issued_on",), other={"extra": _TextMap()})
_FOLLOW_UP = _record(
    FollowUp, optional_text=("appointment_no", "diagnosis", "doctor_code"),
    optional_days=("appointment_date", "issued_on"), other={"extra": _TextMap()})
_DOCUMENT = _record(Document, text=("table",), other={"records": _ListOf(_TextMap())})
_ICD10 = _Is("str", "_icd10({v})")
_VISIT_SPEC = _record(
    VisitEvent, text=("event_id", "visit_code", "discharge_diagnosis"),
    optional_text=("reason", "admission_diagnosis", "department_code"),
    minutes=("admitted_at", "discharged_at"), optional_minutes=("inpatient_at",), optional_days=("follow_up_date",),
    other={
        "version": _int(0), "facility_code": _Is("str", "_facility({v})"), "patient": _PATIENT,
        "visit_type": _int(1, 99), "main_diagnosis_code": _ICD10, "secondary_diagnosis_codes": _ListOf(_ICD10),
        "traditional_diagnosis_codes": _ListOf(_STR), "procedure_codes": _ListOf(_STR),
        "treatment_result": _Maybe(_int(1, 9)), "discharge_type": _Maybe(_int()),
        "treatment_days": _Maybe(_int(0)), "weight_kg": _Maybe(_NON_NEGATIVE),
        "settlement_year": _Maybe(_int()), "settlement_month": _Maybe(_int(1, 12)),
        "total_cost": _MONEY, "insurance_paid": _MONEY, "patient_paid": _MONEY,
        "medicines": _ListOf(_MEDICINE), "results": _ListOf(_LAB_RESULT), "services": _ListOf(_SERVICE),
        "progress_notes": _ListOf(_PROGRESS_NOTE),
        "discharge_paper": _Maybe(_DISCHARGE_PAPER), "record_summary": _Maybe(_RECORD_SUMMARY),
        "referral": _Maybe(_REFERRAL), "follow_up": _Maybe(_FOLLOW_UP),
        "certificates": _ListOf(_DOCUMENT), "sensitive": _ListOf(_DOCUMENT), "extra": _TextMap(),
    })
_avro_guarantees(_VISIT_SPEC, json.loads(catalogue.VISIT_EVENT.path.read_text(encoding="utf-8")), {}, "")
_VISIT = _Writer().compiled(_VISIT_SPEC)
_VISIT_AS_DECODED = _Writer(from_avro=True).compiled(_VISIT_SPEC)


def accepted(record: dict[str, Any], *, decoded: bool = False) -> Visit | None:
    """The visit when the record as it is passes every rule; None when the full model must decide.

    decoded says the record is as wire.decode(..., catalogue.VISIT_EVENT) returned it: then what the schema
    already guarantees is not checked again.
    """
    if not (_VISIT_AS_DECODED if decoded else _VISIT)(record) or record["discharged_at"] < record["admitted_at"]:
        return None
    try:
        book = dict(record)  # a copy in C, not a comprehension: the book keeps the sensitive tables apart
        del book["sensitive"]
        book_bytes = to_json_bytes(book)
        sensitive_clean = not record["sensitive"] or json_text_is_clean(to_json(record["sensitive"]))
    except TypeError:  # text that is not valid Unicode: the model names it
        return None
    if not (sensitive_clean and json_bytes_are_clean(book_bytes)):
        return None
    return Visit(record, book_bytes.decode(), book_bytes)
