"""The validation decision: every rejection reason, and the accepted path."""

import pytest

from domain.keyring import ClinicKey, Keyring
from domain.validation import Accepted, Rejected, validate, validate_safely
from schemas import catalogue, envelope, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import Signer
from tests.factories import visit, with_patient

SIGNER = Signer.generate("k1")


@pytest.fixture
def keyring():
    ring = Keyring(None)
    ring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))
    ring.put(ClinicKey("01002", "k1", Signer.generate("k1").public_key, 0))
    return ring


def key_of(event) -> bytes:
    return event["patient"]["personal_id"].encode()


def rejected(result) -> DeadLetterReason:
    assert isinstance(result, Rejected), result
    assert result.reason
    return result.code


def test_a_signed_valid_visit_is_accepted(keyring):
    event = visit()
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert isinstance(result, Accepted)
    assert result.event.visit_code == event["visit_code"] and result.key_id == "k1"


def test_malformed(keyring):
    assert rejected(validate(b"k", b"garbage bytes", keyring)) is DeadLetterReason.MALFORMED
    assert rejected(validate(b"k", None, keyring)) is DeadLetterReason.MALFORMED


def test_unsupported_schema(keyring):
    event = visit()
    raw = wire.encode(catalogue.VISIT_EVENT, event)  # a bare event, not an envelope
    assert rejected(validate(key_of(event), raw, keyring)) is DeadLetterReason.UNSUPPORTED_SCHEMA


def test_unknown_clinic_and_unknown_key(keyring):
    event = visit(facility="48003")
    result = validate(key_of(event), envelope.seal_visit(event, "48003", SIGNER), keyring)
    assert rejected(result) is DeadLetterReason.UNKNOWN_CLINIC and result.clinic_code == "48003"
    other = Signer.generate("k7")
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", other), keyring)) \
        is DeadLetterReason.UNKNOWN_KEY


def test_revoked_key(keyring):
    keyring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0, revoked_at_ms=1_000))
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER, signed_at=2_000), keyring)) \
        is DeadLetterReason.KEY_REVOKED
    assert isinstance(validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER, signed_at=999), keyring),
                      Accepted)


def test_forged_signature(keyring):
    event = visit()
    env = wire.decode(envelope.seal_visit(event, "79001", SIGNER), catalogue.SIGNED_VISIT)
    tampered = visit(reason="changed after signing")
    env["payload"] = wire.encode(catalogue.VISIT_EVENT, tampered)
    raw = wire.encode(catalogue.SIGNED_VISIT, env)
    assert rejected(validate(key_of(event), raw, keyring)) is DeadLetterReason.BAD_SIGNATURE


def test_signed_by_a_key_registered_under_another_id(keyring):
    impostor = Signer("k1", Signer.generate("x").private_key)
    event = visit()
    assert rejected(validate(key_of(event), envelope.seal_visit(event, "79001", impostor), keyring)) \
        is DeadLetterReason.BAD_SIGNATURE


def test_clinic_signing_another_facilitys_visit(keyring):
    event = visit(facility="01002")
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert rejected(result) is DeadLetterReason.CLINIC_MISMATCH
    assert "01002" in result.reason


def test_wrong_message_key(keyring):
    event = visit()
    assert rejected(validate(b"079000000000", envelope.seal_visit(event, "79001", SIGNER), keyring)) \
        is DeadLetterReason.WRONG_KEY
    assert rejected(validate(None, envelope.seal_visit(event, "79001", SIGNER), keyring)) is DeadLetterReason.WRONG_KEY


def test_rule_violations_are_listed(keyring):
    event = with_patient(visit(discharged_at="202603150700"), sex=1)
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER), keyring)
    assert rejected(result) is DeadLetterReason.INVALID_EVENT
    assert {v.field for v in result.problems} >= {"discharged_at"}
    assert "discharged_at='202603150700'" in result.reason


def test_an_unexpected_error_becomes_a_rejection_not_a_loss(keyring, monkeypatch):
    def explode(*_):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("domain.validation.validate", explode)
    result = validate_safely(b"k", b"v", keyring)
    assert rejected(result) is DeadLetterReason.INTERNAL_ERROR
    assert "ZeroDivisionError" in result.reason


@pytest.mark.parametrize(("signed_at", "appended_at", "refused"), [
    (1_000_000, 1_000_000, None), (1_000_000, 1_000_000 + 3_600_000, None),
    (1_000_000, 1_000_001 + 3_600_000, "before the broker appended"),
    (1_300_000, 1_000_000, None), (1_300_001, 1_000_000, "after the broker appended"),
])
def test_a_signing_time_is_judged_against_the_brokers_append_time(keyring, signed_at, appended_at, refused):
    from healthbook.config import Settings

    event = visit()
    result = validate(key_of(event), envelope.seal_visit(event, "79001", SIGNER, signed_at=signed_at), keyring,
                      appended_at, Settings().signing_window)
    if refused is None:
        assert not isinstance(result, Rejected)
    else:
        assert result.code == "signed_at_out_of_range" and refused in result.reason
    tampered = envelope.seal_visit(event, "79001", Signer.generate("k1"), signed_at=signed_at)
    assert validate(key_of(event), tampered, keyring, appended_at).code == "bad_signature", "forgery is named first"


def test_a_redriven_message_is_judged_by_the_append_time_the_workers_own_dead_letter_recorded():
    from domain.batch import Delivery, RejectedDelivery
    from streams.dead_letters import dead_letter, original_append_time

    original = Delivery("visits", 0, 7, 1_000_000, b"k", b"the signed bytes")
    letter = dead_letter(RejectedDelivery(original, Rejected(DeadLetterReason.UNKNOWN_CLINIC, "no such clinic")))
    assert original_append_time(letter, b"the signed bytes") == 1_000_000
    assert original_append_time(letter, b"other bytes") is None, "a header pointing at another message is ignored"
    retried = Delivery("visits", 0, 9, 2_000_000, b"k", b"the signed bytes", retry_of=(0, 3))
    again = dead_letter(RejectedDelivery(retried, Rejected(DeadLetterReason.BAD_SIGNATURE, "no")))
    assert original_append_time(again, b"the signed bytes") is None
    assert original_append_time(b"\x00garbage", b"the signed bytes") is None
    assert original_append_time(None, b"the signed bytes") is None
