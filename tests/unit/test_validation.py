"""The validation decision: every rejection reason, and the accepted path."""

import pytest

from domain.keyring import ClinicKey, Keyring
from domain.validation import Accepted, Rejected, RejectionCode, validate, validate_safely
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from tests.factories import visit, with_patient

SIGNER = Signer.generate("k1")


@pytest.fixture
def keyring():
    ring = Keyring()
    ring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))
    ring.put(ClinicKey("01002", "k1", Signer.generate("k1").public_key, 0))
    return ring


def key_of(event) -> bytes:
    return event["patient"]["personal_id"].encode()


def rejected(result) -> RejectionCode:
    assert isinstance(result, Rejected), result
    assert result.reason
    return result.code


def test_a_signed_valid_visit_is_accepted(keyring):
    event = visit()
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert isinstance(result, Accepted)
    assert result.event.visit_code == event["visit_code"] and result.key_id == "k1"


def test_malformed(keyring):
    assert rejected(validate(b"k", b"garbage bytes", keyring)) is RejectionCode.MALFORMED
    assert rejected(validate(b"k", None, keyring)) is RejectionCode.MALFORMED


def test_unsupported_schema(keyring):
    event = visit()
    raw = wire.encode(catalogue.VISIT_EVENT, event)  # a bare event, not an envelope
    assert rejected(validate(key_of(event), raw, keyring)) is RejectionCode.UNSUPPORTED_SCHEMA


def test_unknown_clinic_and_unknown_key(keyring):
    event = visit(facility="48003")
    result = validate(key_of(event), envelope.seal_visit(event, "48003", SIGNER), keyring)
    assert rejected(result) is RejectionCode.UNKNOWN_CLINIC and result.clinic_code == "48003"
    other = Signer.generate("k7")
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", other), keyring)) \
        is RejectionCode.UNKNOWN_KEY


def test_revoked_key(keyring):
    keyring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0, revoked_at_ms=1_000))
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER, signed_at=2_000), keyring)) \
        is RejectionCode.KEY_REVOKED
    assert isinstance(validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER, signed_at=999), keyring),
                      Accepted)


def test_forged_signature(keyring):
    event = visit()
    env = wire.decode(envelope.seal_visit(event, "79001", SIGNER), catalogue.SIGNED_VISIT)
    tampered = visit(reason="changed after signing")
    env["payload"] = wire.encode(catalogue.VISIT_EVENT, tampered)
    raw = wire.encode(catalogue.SIGNED_VISIT, env)
    assert rejected(validate(key_of(event), raw, keyring)) is RejectionCode.BAD_SIGNATURE


def test_signed_by_a_key_registered_under_another_id(keyring):
    impostor = Signer("k1", Signer.generate("x").private_key)
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", impostor), keyring)) \
        is RejectionCode.BAD_SIGNATURE


def test_clinic_signing_another_facilitys_visit(keyring):
    event = visit(facility="01002")
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert rejected(result) is RejectionCode.CLINIC_MISMATCH
    assert "01002" in result.reason


def test_wrong_message_key(keyring):
    event = visit()
    assert rejected(validate(b"079000000000", envelope.seal_visit(event, "79001", SIGNER), keyring)) \
        is RejectionCode.WRONG_KEY
    assert rejected(validate(None, envelope.seal_visit(event, "79001", SIGNER), keyring)) is RejectionCode.WRONG_KEY


def test_rule_violations_are_listed(keyring):
    event = with_patient(visit(discharged_at="202603150700"), sex=1)
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert rejected(result) is RejectionCode.INVALID_EVENT
    assert {v.field for v in result.problems} >= {"discharged_at"}
    assert "discharged_at='202603150700'" in result.reason


def test_an_unexpected_error_becomes_a_rejection_not_a_loss(keyring, monkeypatch):
    def explode(*_):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("domain.validation.validate", explode)
    result = validate_safely(b"k", b"v", keyring)
    assert rejected(result) is RejectionCode.INTERNAL_ERROR
    assert "ZeroDivisionError" in result.reason
