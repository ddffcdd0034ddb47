"""The consent decision for integration requests."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from commands.identity_standin import confirmation
from consumers.trusted_keys import TrustedKeysMissing, load_trusted_keys
from domain.consent import Refuse, RequestPolicy, Serve, check_request, decide
from healthbook.config import Settings
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer

PLATFORM = Signer.generate("vneid-1")
TRUSTED = {"vneid-1": PLATFORM.public_key}
POLICY = Settings().request_policy(TRUSTED)  # the default five-minute window


def signed(**changes) -> dict:
    request = confirmation("079186001234", 2026, **changes)
    return wire.decode(envelope.seal_request(request, PLATFORM), catalogue.INTEGRATION_REQUEST)


def code(request) -> str | None:
    refusal = check_request(request, POLICY)
    return refusal.code if refusal else None


def test_a_signed_confirmed_level_2_request_is_served():
    assert code(signed()) is None
    assert code(signed(identity_level=3)) is None


def test_refusals():
    assert code(signed(identity_level=1)) == "identity_level"
    assert code(signed(consent_confirmed=False)) == "no_consent"
    assert code(dict(signed(), signature=b"")) == "unsigned"
    assert code(dict(signed(), key_id="someone-else")) == "unknown_key"


@pytest.mark.parametrize(("field", "value"), [("personal_id", "001095007788"), ("year", 2025),
                                              ("identity_level", 2), ("consent_confirmed", True)])
def test_changing_a_signed_field_breaks_the_signature(field, value):
    request = signed(identity_level=1, consent_confirmed=False) if field in ("identity_level", "consent_confirmed") \
        else signed()
    request[field] = value
    assert code(request) == "bad_signature"


def test_trusted_keys_file(tmp_path):
    path = tmp_path / "keys.json"
    with pytest.raises(TrustedKeysMissing, match="HEALTHBOOK_IDENTITY_KEYS_FILE"):
        load_trusted_keys(path)
    path.write_text(json.dumps({"vneid-1": base64.b64encode(PLATFORM.public_key).decode()}))
    assert load_trusted_keys(path) == TRUSTED


NOW = datetime(2026, 3, 15, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(("requested_at", "refused"), [
    (NOW, False), (NOW - timedelta(minutes=4, seconds=59), False), (NOW + timedelta(minutes=5), False),
    (NOW - timedelta(minutes=5, seconds=1), True), (NOW + timedelta(minutes=6), True),
    (datetime(1970, 1, 1, tzinfo=UTC), True), (NOW - timedelta(days=365), True), (NOW + timedelta(days=30), True),
])
def test_a_request_must_be_dated_within_the_window_of_the_consumers_clock(requested_at, refused):
    request = dict(signed(), requested_at=requested_at)
    request["signature"] = PLATFORM.sign(envelope.request_signing_input(request))
    refusal = check_request(request, POLICY, NOW)
    assert (refusal.code if refusal else None) == ("stale_request" if refused else None)
    if refused:
        assert "window" in refusal.message and "requested_at" in refusal.message


def test_the_window_is_a_setting_and_a_forged_date_is_a_bad_signature_first():
    request = dict(signed(), requested_at=NOW - timedelta(minutes=20))
    request["signature"] = PLATFORM.sign(envelope.request_signing_input(request))
    assert check_request(request, RequestPolicy(TRUSTED, timedelta(minutes=30)), NOW) is None
    assert check_request(dict(request, requested_at=NOW), POLICY, NOW).code == "bad_signature"


def test_a_version_3_request_signs_its_format_and_scope_and_refuses_an_unknown_format():
    bundle = signed(answer_format="fhir", every_year=True)
    assert code(bundle) is None and (bundle["format"], bundle["every_year"]) == ("fhir", True)
    assert code(dict(bundle, format="book")) == "bad_signature", "the format is part of what was signed"
    assert code(dict(bundle, every_year=False)) == "bad_signature"
    raw = envelope.seal_request(confirmation("079186001234", 2026, answer_format="pdf"), PLATFORM)
    decision = decide(raw, POLICY)
    assert isinstance(decision, Refuse) and decision.refusal.code == "malformed"
    assert "format" in decision.refusal.message
    assert decision.requester.personal_id is None, "nothing of a malformed request is stored"


def test_a_version_2_request_is_still_read_as_a_request_for_the_books_list_and_its_signature_holds():
    body = {k: v for k, v in confirmation("079186001234", 2026).items() if k not in ("format", "every_year")}
    body["key_id"] = PLATFORM.key_id
    body["signature"] = PLATFORM.sign(envelope.legacy_request_signing_input(body))
    decision = decide(wire.encode(catalogue.INTEGRATION_REQUEST_V2, body), POLICY)
    assert isinstance(decision, Serve)
    assert (decision.fhir, decision.year, decision.visit) == (False, 2026, None)


def test_a_malformed_request_is_answered_with_every_field_that_could_be_read():
    raw = envelope.seal_request(dict(confirmation("079186001234", 2026), personal_id="12345"), PLATFORM)
    decision = decide(raw, POLICY)
    assert isinstance(decision, Refuse) and decision.refusal.code == "malformed"
    assert decision.requester.request_id and decision.requester.year == 2026
    unreadable_id = envelope.seal_request(dict(confirmation("079186001234", 2026), request_id="r\x00"), PLATFORM)
    assert decide(unreadable_id, POLICY).requester.request_id == ""
    assert decide(b"\x00garbage", POLICY).requester.request_id == ""


@pytest.mark.parametrize(("changes", "scope"), [
    ({}, (2026, None, False)),
    ({"every_year": True}, (None, None, False)),
    ({"answer_format": "fhir", "every_year": True}, (None, None, True)),
    ({"detail": ("79001", "79001-2026-1")}, (2026, ("79001", "79001-2026-1"), False)),
])
def test_a_served_request_names_its_scope_and_form(changes, scope):
    decision = decide(envelope.seal_request(confirmation("079186001234", 2026, **changes), PLATFORM), POLICY,
                      source=(3, 41))
    assert isinstance(decision, Serve) and (decision.year, decision.visit, decision.fhir) == scope
    assert decision.source == (3, 41) and decision.personal_id == "079186001234"
