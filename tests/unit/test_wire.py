"""Confluent wire format: framing, schema ids, and what bad bytes say."""

import struct

import pytest

from schemas import catalogue, wire
from schemas.errors import MalformedMessage, UnsupportedSchema
from schemas.visit import VisitEvent
from tests.factories import visit


def test_round_trip_keeps_every_field():
    record = VisitEvent.model_validate(visit()).model_dump()
    data = wire.encode(catalogue.VISIT_EVENT, record)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == catalogue.VISIT_EVENT.schema_id == 7
    assert wire.decode(data, catalogue.VISIT_EVENT) == record


def test_vietnamese_text_survives():
    record = visit()
    record["patient"]["full_name"] = "Nguyễn Thị Lan"
    assert wire.decode(wire.encode(catalogue.VISIT_EVENT, record), catalogue.VISIT_EVENT)["patient"]["full_name"] \
        == "Nguyễn Thị Lan"


@pytest.mark.parametrize("data", [b"", b"\x00\x00", None])
def test_too_short(data):
    with pytest.raises(MalformedMessage, match="at least 5"):
        wire.decode(data, catalogue.VISIT_EVENT)


def test_wrong_magic_byte():
    with pytest.raises(MalformedMessage, match="magic byte"):
        wire.decode(b"<xml>not avro</xml>", catalogue.VISIT_EVENT)


def test_unknown_and_unexpected_schema_ids():
    with pytest.raises(UnsupportedSchema, match="not in healthbook's catalogue"):
        wire.decode(b"\x00\x00\x00\x03\xe7" + b"\x00" * 10, catalogue.VISIT_EVENT)
    data = wire.encode(catalogue.VISIT_EVENT, visit())
    with pytest.raises(UnsupportedSchema, match="where visits-value was expected"):
        wire.decode(data, catalogue.SIGNED_VISIT)


def test_truncated_and_padded_bodies():
    data = wire.encode(catalogue.VISIT_EVENT, visit())
    with pytest.raises(MalformedMessage):
        wire.decode(data[:-40], catalogue.VISIT_EVENT)
    with pytest.raises(MalformedMessage, match="left over"):
        wire.decode(data + b"\x00", catalogue.VISIT_EVENT)
