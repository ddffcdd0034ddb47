"""The analytics record on the wire: the straight writer writes fastavro's bytes; pseudonyms are HMAC-SHA256."""

from __future__ import annotations

import hmac
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import deidentify
from schemas import catalogue, wire
from schemas.straight_writer import UnsupportedForStraightWriting, straight_writer
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from tests.factories import citizen, full_visit

ANALYTICS = catalogue.DEIDENTIFIED_VISIT
WRITE = straight_writer(ANALYTICS)
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_MONEY = st.decimals(min_value=-(Decimal(10) ** 16) + 1, max_value=Decimal(10) ** 16 - 1, places=2,
                     allow_nan=False, allow_infinity=False)


def _values(kind: Any) -> st.SearchStrategy[Any]:
    """Any value the schema allows for one field, the edges of each integer type included."""
    if isinstance(kind, list):
        other = next(k for k in kind if k != "null")
        return st.none() | _values(other)
    if kind == "string":
        return _TEXT
    if kind == "int":
        return st.integers(-(2 ** 31), 2 ** 31 - 1)
    if kind == "long":
        return st.integers(-(2 ** 63), 2 ** 63 - 1)
    if kind.get("logicalType") == "decimal":
        return _MONEY
    return st.lists(_TEXT, max_size=5)


RECORDS = st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in ANALYTICS.parsed["fields"]})


@given(record=RECORDS)
@settings(max_examples=2_000, deadline=None)
def test_every_record_the_schema_allows_is_written_byte_for_byte_as_fastavro_writes_it(record):
    written = WRITE(record)
    assert written == wire.encode(ANALYTICS, record)
    assert wire.decode(written, ANALYTICS) == record


VISIT = Visit(VisitEvent.model_validate(full_visit(citizen(3), 5, datetime(2026, 3, 2, 8, 15))).model_dump())


def test_a_real_visit_reaches_analytics_in_fastavros_bytes():
    key, value = deidentify.encode(VISIT, b"k" * 32)
    record = deidentify.deidentified(VISIT, b"k" * 32)
    assert value == wire.encode(ANALYTICS, record)
    assert key == record["pseudonym"].encode()


def test_an_amount_with_more_places_than_the_schema_is_refused_as_fastavro_refuses_it():
    record = deidentify.deidentified(VISIT, b"k" * 32) | {"total_cost": Decimal("12.345")}
    with pytest.raises(ValueError, match="decimal places"):
        WRITE(record)
    with pytest.raises(ValueError):
        wire.encode(ANALYTICS, record)


def test_a_schema_with_a_type_it_does_not_write_is_refused_when_the_writer_is_built():
    with pytest.raises(UnsupportedForStraightWriting, match="does not write"):
        straight_writer(catalogue.VISIT_EVENT)


@given(key=st.binary(min_size=32, max_size=64), values=st.lists(_TEXT, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_the_pseudonyms_are_hmac_sha256_of_each_value_under_its_own_key(key, values):
    """The keyed state is copied for each value: no value's digest carries another's, under any key."""
    for value in values:
        assert deidentify.pseudonym(key, value) == hmac.digest(key, value.encode(), "sha256").hex()


# The writer in C (schemas/_native.c) reads the visit itself: held to deidentified() and the straight writer.

def test_the_c_writer_is_built_and_written_for_this_schema():
    assert deidentify._write_in_c is not None, (
        "schemas/_native.c was not built, or deidentified_visit.avsc no longer has the fields it writes "
        "(deidentify.WRITTEN_IN_C)")


_LONG = st.integers(-(2 ** 64), 2 ** 64)
_WIDE_MONEY = st.one_of(_MONEY, st.decimals(allow_nan=False, allow_infinity=False, places=3),
                        st.decimals(min_value=Decimal(10) ** 17, max_value=Decimal(10) ** 30, places=2))
_CODES = st.lists(_TEXT, max_size=4)
RECORD_PARTS = st.fixed_dictionaries({}, optional={
    "version": _LONG, "facility_code": _TEXT, "visit_type": _LONG, "main_diagnosis_code": _TEXT,
    "admitted_at": st.one_of(st.just("202603020815"), _TEXT), "treatment_days": st.none() | _LONG,
    "treatment_result": st.none() | _LONG, "secondary_diagnosis_codes": _CODES | _CODES.map(tuple),
    "medicines": st.lists(st.fixed_dictionaries({"drug_code": _TEXT}), max_size=4),
    "total_cost": _WIDE_MONEY, "insurance_paid": _WIDE_MONEY,
})
PATIENT_PARTS = st.fixed_dictionaries({}, optional={
    "birth_date": st.one_of(st.just("19800101"), _TEXT), "sex": _LONG, "province_code": st.none() | _TEXT,
    "personal_id": _TEXT,
})


def _outcome(write: Any) -> Any:
    try:
        return write()
    except Exception as exc:  # the model's refusal: the C path must end the same way
        return type(exc)


@given(record_parts=RECORD_PARTS, patient_parts=PATIENT_PARTS)
@settings(max_examples=3_000, deadline=None)
def test_the_c_writer_writes_what_the_model_writes_or_leaves_the_visit_to_it(record_parts, patient_parts):
    """Integers past int and long, amounts past 18 digits or 2 places, text not ASCII where a prefix is cut."""
    visit = Visit({**VISIT.record, **record_parts, "patient": {**VISIT.record["patient"], **patient_parts}})
    key = b"k" * 32

    def by_the_model() -> tuple[bytes, bytes]:
        record = deidentify.deidentified(visit, key)
        return record["pseudonym"].encode(), WRITE(record)

    assert _outcome(lambda: deidentify.encode(visit, key)) == _outcome(by_the_model)


def test_the_c_writer_is_the_one_that_wrote_a_real_visit(monkeypatch):
    written = deidentify.encode(VISIT, b"k" * 32)
    monkeypatch.setattr(deidentify, "_write_in_c", None)
    assert deidentify.encode(VISIT, b"k" * 32) == written
    monkeypatch.setattr(deidentify, "_write_in_c", lambda *args: b"in C")
    assert deidentify.encode(VISIT, b"k" * 32)[1] == b"in C"
