"""The signed envelope: what the signature covers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_the_sealed_size_is_known_without_the_private_key(signer):
    event = visit()
    event["discharge_diagnosis"] = "Viêm họng cấp " * 500
    counted = envelope.sealed_size(len(envelope.encode_visit(event)), event, "79001", "k1")
    assert counted == len(envelope.seal_visit(event, "79001", signer))


def test_a_visit_above_the_limit_is_named_with_its_size_and_the_setting():
    from producers.publisher import size_problem

    assert size_problem(1000, 1000) is None
    problem = size_problem(1001, 1000)
    assert problem is not None and problem.rule == "visit_too_large"
    assert "1,001 bytes" in problem.sentence() and "HEALTHBOOK_MAX_VISIT_BYTES" in problem.sentence()


def test_a_dead_letter_lists_a_bounded_number_of_problems_each_cut_short():
    from schemas.problems import Problem
    from schemas.topics import MAX_LISTED_PROBLEMS, MAX_PROBLEM_VALUE_CHARS
    from streams.dead_letters import listed

    many = [Problem(f"medicines.{i}.name", "x" * 5000, "control_character", "bad") for i in range(250)]
    shown = listed(many)
    assert len(shown) == MAX_LISTED_PROBLEMS + 1
    assert shown[-1]["rule"] == "more_problems" and "150 more problems" in shown[-1]["message"]
    assert all(len(p["value"]) < MAX_PROBLEM_VALUE_CHARS + 30 for p in shown[:-1])
    assert listed(many[:2]) == [dict(p.to_record(), value="x" * MAX_PROBLEM_VALUE_CHARS + "… (5,000 characters)")
                                for p in many[:2]]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 96 * 8 - 1), st.booleans())
def test_libsodium_verification_accepts_what_openssl_does_and_is_never_looser(message, bit, flip):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signer = Signer.generate("k")
    signature = signer.sign(message)
    blob = bytearray(signer.public_key + signature)
    if flip:
        blob[bit // 8] ^= 1 << (bit % 8)
    public, signed = bytes(blob[:32]), bytes(blob[32:96])
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signed, message)
        openssl = True
    except (InvalidSignature, ValueError):
        openssl = False
    ours = envelope.verify(public, signed, message)
    assert ours == (not flip)  # every honest signature verifies, and any flipped bit is caught
    assert not ours or openssl


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 9000), st.integers(0, 2**62), st.text(max_size=80), st.text(min_size=1, max_size=70))
def test_the_counted_size_is_the_sealed_size_across_varint_boundaries(filler, version, key_id, event_id):
    signer = Signer(key_id, Signer.generate("x").private_key)
    event = visit(version=version)
    event["event_id"] = event_id
    event["extra"] = {"GHI_CHU": "a" * filler}
    counted = envelope.sealed_size(len(envelope.encode_visit(event)), event, "79001", key_id)
    assert counted == len(envelope.seal_visit(event, "79001", signer))
