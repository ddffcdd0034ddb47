"""The signed envelope: what the signature covers."""

import pytest

from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from tests.factories import visit


@pytest.fixture(scope="module")
def signer():
    return Signer.generate("k1")


def opened(data: bytes) -> dict:
    return wire.decode(data, catalogue.SIGNED_VISIT)


def test_sealed_visit_verifies(signer):
    env = opened(envelope.seal_visit(visit(), "79001", signer))
    assert env["clinic_code"] == "79001" and env["key_id"] == "k1" and env["visit_version"] == 1
    assert envelope.verify(signer.public_key, env["signature"], envelope.visit_signing_input(env))


@pytest.mark.parametrize(("field", "value"), [
    ("clinic_code", "79002"), ("key_id", "k2"), ("event_id", "other"), ("visit_version", 2),
    ("signed_at", 1), ("payload", b"\x00\x00\x00\x00\x01changed"),
])
def test_changing_any_signed_field_breaks_the_signature(signer, field, value):
    env = opened(envelope.seal_visit(visit(), "79001", signer))
    env[field] = value
    assert not envelope.verify(signer.public_key, env["signature"], envelope.visit_signing_input(env))


def test_another_key_does_not_verify(signer):
    env = opened(envelope.seal_visit(visit(), "79001", signer))
    assert not envelope.verify(Signer.generate("k1").public_key, env["signature"], envelope.visit_signing_input(env))


def test_garbage_public_key_is_a_failed_verification_not_a_crash():
    assert not envelope.verify(b"short", b"sig", b"message")


def test_canonical_form_separates_fields():
    assert envelope.canonical(b"c", "ab", "c") != envelope.canonical(b"c", "a", "bc")
    assert envelope.canonical(b"c", 1) != envelope.canonical(b"c", "1")


def test_a_signed_datetime_with_microseconds_verifies_after_the_wire_truncates_it():
    from datetime import UTC, datetime

    from schemas.envelope import Signer, request_signing_input, seal_request, to_millis

    signer = Signer.generate("vneid-1")
    moment = datetime(2025, 11, 27, 23, 59, 59, 999_999, tzinfo=UTC)
    request = {"request_id": "r-1", "personal_id": "079186001234", "year": 2025, "identity_level": 2,
               "consent_confirmed": True, "requested_at": moment, "detail": None}
    decoded = wire.decode(seal_request(request, signer), catalogue.INTEGRATION_REQUEST)
    assert to_millis(decoded["requested_at"]) == to_millis(moment) == to_millis(moment.replace(microsecond=999_000))
    assert envelope.verify(signer.public_key, decoded["signature"], request_signing_input(decoded))
    assert to_millis(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1
