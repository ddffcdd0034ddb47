"""Unambiguous signing inputs: an absent optional field never signs the bytes of a present one."""

from datetime import UTC, datetime, timedelta

import pytest

from commands.identity_standin import confirmation
from commands.local_ca import LocalCA
from domain.consent import Refuse, RequestPolicy, Serve, decide
from domain.keyring import Keyring
from domain.registry_trust import Untrusted
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer

CLINIC = Signer.generate("k1")
PLATFORM = Signer.generate("vneid-1")


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


def test_absent_and_present_never_sign_the_same_bytes():
    assert envelope.canonical(b"c", None) != envelope.canonical(b"c", (b"",))
    assert envelope.canonical(b"c", None, (1,)) != envelope.canonical(b"c", (1,), None)
    record = {"clinic_code": "79001", "key_id": "k1", "public_key": b"k" * 32, "registered_at": 1000,
              "revoked_at": None, "certificate": None, "issued_at": 2000}
    forms = {envelope.clinic_key_signing_input(dict(record, **change)) for change in (
        {}, {"revoked_at": -1}, {"certificate": b""}, {"issued_at": None})}
    assert len(forms) == 4
    assert envelope.legacy_clinic_key_signing_input(record) == envelope.legacy_clinic_key_signing_input(
        dict(record, revoked_at=-1)), "the retired form is the ambiguity this change removes"


def test_a_request_for_one_visit_never_signs_the_bytes_of_a_request_for_a_bundle():
    base = {"request_id": "r", "personal_id": "079186001234", "year": 2026, "identity_level": 2,
            "consent_confirmed": True, "requested_at": 1000, "key_id": "vneid-1"}
    bundle = dict(base, format="fhir", every_year=True, detail=None)
    lookalike = dict(base, detail={"facility_code": "fhir", "visit_code": "\x00" * 7 + "\x01"})
    assert envelope.legacy_request_signing_input(bundle) == envelope.legacy_request_signing_input(lookalike)
    assert envelope.request_signing_input(bundle) != envelope.request_signing_input(lookalike)


def _record(ca: LocalCA) -> dict:
    return ca.entry("79001", CLINIC).to_record()


def _reason(keyring: Keyring, value: bytes) -> str:
    with pytest.raises(Untrusted) as caught:
        keyring.apply(b"79001/k1", value)
    return caught.value.kind


def test_the_genuine_unrevoked_record_resent_with_revoked_at_minus_one_revokes_nothing(ca):
    genuine = ca.key_registry().clinic_key(_record(ca))
    keyring = Keyring(ca.trust_anchors())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, genuine))
    forged = wire.encode(catalogue.CLINIC_KEY, dict(genuine, revoked_at=-1))
    assert _reason(keyring, forged) in ("bad_signature", "dated_ahead")
    assert keyring.key_for("79001", "k1", envelope.now_millis()).revoked_at_ms is None


def _retired(ca: LocalCA, record: dict) -> bytes:
    """A version 2 record, signed in the retired form as registries did before."""
    body = {k: v for k, v in record.items() if k != "issued_at"}
    body["registry_certificate"] = ca.key_registry().certificate
    body["registry_signature"] = ca.key_registry().private_key.sign(envelope.legacy_clinic_key_signing_input(body))
    return wire.encode(catalogue.CLINIC_KEY_V2, body)


def test_a_retired_form_record_counts_until_the_stated_date_and_never_with_minus_one(ca):
    now = datetime.now(UTC)
    record = _record(ca)
    until = now + timedelta(days=30)
    before = Keyring(ca.trust_anchors(legacy_signatures_until=until))
    before.apply(b"79001/k1", _retired(ca, record))
    assert before.get("79001", "k1") is not None
    forged = wire.decode(_retired(ca, record), catalogue.CLINIC_KEY_V2)
    assert _reason(Keyring(ca.trust_anchors(legacy_signatures_until=until)),
                   wire.encode(catalogue.CLINIC_KEY_V2, dict(forged, revoked_at=-1))) == "dated_ahead"
    after = Keyring(ca.trust_anchors(legacy_signatures_until=until, clock=lambda: until + timedelta(seconds=1)))
    assert _reason(after, _retired(ca, record)) == "retired_signing_form"
    assert _reason(Keyring(ca.trust_anchors()), _retired(ca, record)) == "retired_signing_form"


def test_a_retired_form_request_is_served_until_the_stated_date_then_refused():
    now = datetime.now(UTC)
    body = dict(confirmation("079186001234", 2026), key_id=PLATFORM.key_id)
    body["signature"] = PLATFORM.sign(envelope.legacy_request_signing_input(body))
    raw = wire.encode(catalogue.INTEGRATION_REQUEST_V3, body)
    trusted = {PLATFORM.key_id: PLATFORM.public_key}
    assert isinstance(decide(raw, RequestPolicy(trusted, timedelta(minutes=5), now + timedelta(days=1)), now), Serve)
    refused = decide(raw, RequestPolicy(trusted, timedelta(minutes=5), now - timedelta(seconds=1)), now)
    assert isinstance(refused, Refuse) and refused.refusal.code == "bad_signature"
    assert "retired" in refused.refusal.message and "version 4" in refused.refusal.message
    current = envelope.seal_request(confirmation("079186001234", 2026), PLATFORM)
    assert wire.schema_id_of(current) == catalogue.INTEGRATION_REQUEST.schema_id == 19
    assert isinstance(decide(current, RequestPolicy(trusted, timedelta(minutes=5)), now), Serve)
