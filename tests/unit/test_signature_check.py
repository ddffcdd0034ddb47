"""A reply's visit counts as signed only against the verifier's own CA, and is shown from the bytes that were signed.

Each attack here is a relay between healthbook and the identity app that changes what the citizen reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from commands.local_ca import LocalCA
from domain import replies
from domain.book_entry import BookEntry
from domain.fhir_bundle import book_bundle
from domain.registry_trust import TrustAnchors
from domain.signature_check import SignatureState, check_visit_signature
from schemas import catalogue, wire
from schemas.envelope import Signer
from synthetic.population import CLINICS
from tests.factories import SENSITIVE, citizen, full_visit, signed_entry, visit

CLINIC = Signer.generate("k1")
LONG_AGO = datetime.now(UTC) - timedelta(days=1)  # certified before any visit here is signed


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def anchors(ca) -> TrustAnchors:
    return ca.trust_anchors()


def _entry(event: dict, signer: Signer, certificate: bytes | None) -> BookEntry:
    return signed_entry(event, signer, certificate)


def _shown(entry: BookEntry) -> replies.VisitView:
    """The visit as its detail shows it: the one reply that carries its signed envelope."""
    (shown,) = replies.detail_served("r-1", 2026, entry).visits
    return shown


def _listed(entry: BookEntry) -> replies.VisitView:
    (listed,) = replies.year_served("r-1", 2026, [entry], SENSITIVE).visits
    return listed


def _honest(ca: LocalCA) -> BookEntry:
    return _entry(visit(person=citizen(3), sequence=31), CLINIC, ca.entry("79001", CLINIC, LONG_AGO).certificate)


def test_an_honest_visit_is_verified_and_shown_from_the_signed_bytes(ca, anchors):
    check = check_visit_signature(_shown(_honest(ca)), anchors)
    assert check.status is SignatureState.VERIFIED, check.sentence
    assert check.signed is not None and check.signed.diagnosis_codes == _shown(_honest(ca)).diagnosis_codes
    assert "Chữ ký số hợp lệ (khóa k1 của cơ sở 79001)" in check.sentence


def test_content_changed_beside_a_genuine_envelope_fails_and_names_what_changed(ca, anchors):
    genuine = _shown(_honest(ca))
    relayed = genuine.model_copy(update={"diagnosis_codes": ["Z00.0"], "diagnosis_names": "Khỏe mạnh",
                                         "medicines": []})
    check = check_visit_signature(relayed, anchors)
    assert check.status is SignatureState.FAILED and check.signed is None
    assert "diagnosis_codes" in check.sentence and "medicines" in check.sentence
    backdated = genuine.model_copy(update={"signed": genuine.signed.model_copy(
        update={"signed_at": genuine.signed.signed_at - timedelta(days=400)})})
    assert "signed.signed_at" in check_visit_signature(backdated, anchors).sentence, "who signed and when are signed"


def test_an_altered_visit_re_signed_with_a_key_the_reply_brings_fails(ca, anchors, tmp_path):
    relay = Signer.generate("k1")
    forged = visit(person=citizen(3), sequence=31, main_diagnosis_code="Z00.0")
    no_certificate = check_visit_signature(_shown(_entry(forged, relay, None)), anchors)
    assert no_certificate.status is SignatureState.FAILED and "no certificate" in no_certificate.sentence
    own_ca = LocalCA.open(tmp_path / "relay-ca")
    self_made = check_visit_signature(_shown(_entry(forged, relay, own_ca.entry("79001", relay, LONG_AGO)
                                                     .certificate)), anchors)
    assert self_made.status is SignatureState.FAILED and "trusted" in self_made.sentence


def test_a_genuine_certificate_of_another_facility_does_not_vouch_for_this_one(ca, anchors):
    other = Signer.generate("k9")
    check = check_visit_signature(_shown(_entry(visit(person=citizen(3), sequence=32), other,
                                                 ca.entry("79004", other, LONG_AGO).certificate)), anchors)
    assert check.status is SignatureState.FAILED and "MA_CSKCB:79004" in check.sentence


def test_a_certificate_not_yet_valid_when_the_visit_was_signed_fails(ca, anchors):
    later = ca.entry("79001", CLINIC, datetime.now(UTC) + timedelta(days=1)).certificate
    check = check_visit_signature(_shown(_entry(visit(person=citizen(3), sequence=33), CLINIC, later)), anchors)
    assert check.status is SignatureState.FAILED and "valid from" in check.sentence


def test_a_broken_signature_or_another_visits_envelope_fails(ca, anchors):
    honest = _honest(ca)
    sealed = wire.decode(honest.signed.signed_message, catalogue.SIGNED_VISIT)
    broken = wire.encode(catalogue.SIGNED_VISIT, dict(sealed, signature=bytes(64)))
    shown = _shown(honest)
    check = check_visit_signature(shown.model_copy(update={"signed": shown.signed.model_copy(
        update={"signed_message": broken})}), anchors)
    assert check.status is SignatureState.FAILED and "thay đổi sau khi ký" in check.sentence
    elsewhere = shown.model_copy(update={"visit_code": "79001-2026-9999999"})
    assert "không phải của lượt khám này" in check_visit_signature(elsewhere, anchors).sentence


def test_a_sealed_entry_and_an_unsigned_visit_are_not_verifiable_rather_than_failed(ca, anchors):
    sensitive = _entry(visit(person=citizen(3), sequence=34, main_diagnosis_code="B20"), CLINIC,
                       ca.entry("79001", CLINIC, LONG_AGO).certificate)
    assert check_visit_signature(_listed(sensitive), anchors).status is SignatureState.NOT_VERIFIABLE
    unsigned = BookEntry(_honest(ca).record)
    assert check_visit_signature(_shown(unsigned), anchors).status is SignatureState.NOT_VERIFIABLE


def test_a_years_list_carries_no_envelope_and_claims_no_signature(ca, anchors):
    honest = _honest(ca)
    listed = _listed(honest)
    assert listed.signed is None and listed.facility_name == CLINICS["79001"]
    check = check_visit_signature(listed, anchors)
    assert check.status is SignatureState.NOT_VERIFIABLE and check.signed is None
    year = replies.year_served("r-1", 2026, [honest] * 10, SENSITIVE).encode()
    assert honest.signed.signed_message not in year, "no envelope's bytes travel in a year's list"
    assert honest.signed.signed_message in replies.detail_served("r-1", 2026, honest).encode()


def test_a_detail_is_verified_with_its_sensitive_tables_from_the_signed_bytes(ca, anchors):
    event = full_visit(citizen(4), 41, datetime(2025, 4, 2, 9, 0))
    entry = _entry(event, CLINIC, ca.entry("79001", CLINIC, LONG_AGO).certificate)
    detail = replies.detail_served("r-2", 2025, BookEntry(entry.record, entry.signed, True, event["sensitive"]))
    check = check_visit_signature(detail.visits[0], anchors)
    assert check.status is SignatureState.VERIFIED, check.sentence
    assert check.signed.sensitive[0].records[0]["PHAC_DO_DTRI_LAO"] == "2RHZE/4RHE"
    tampered = detail.visits[0].model_copy(update={"sensitive": []})
    assert check_visit_signature(tampered, anchors).status is SignatureState.FAILED


def test_the_facility_is_named_as_its_certificate_names_it_in_the_reply_the_check_and_the_fhir_organization(
        ca, anchors):
    honest = _honest(ca)
    shown = _shown(honest)
    assert shown.facility_name == CLINICS["79001"]
    check = check_visit_signature(shown, anchors)
    assert check.status is SignatureState.VERIFIED and check.signed.facility_name == CLINICS["79001"]
    renamed = shown.model_copy(update={"facility_name": "Bệnh viện Quốc tế Giả"})
    assert "facility_name" in check_visit_signature(renamed, anchors).sentence, "a relay cannot rename the clinic"
    bundle = book_bundle(honest.record["patient"]["personal_id"], [honest], sensitive=SENSITIVE)
    (organization,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"
                       and e["resource"].get("identifier", [{}])[0].get("value") == "79001"]
    assert organization["name"] == CLINICS["79001"]
    unnamed = BookEntry(honest.record, honest.signed.model_copy(update={"certificate": None}))
    assert _shown(unnamed).facility_name is None, "no certificate, no name: the code is shown instead"


def test_a_certificate_revoked_before_the_signing_fails_and_a_stale_list_claims_nothing(tmp_path):
    from cryptography import x509

    own = LocalCA.open(tmp_path / "pki")
    certificate = own.entry("79001", CLINIC, LONG_AGO).certificate
    entry = signed_entry(visit(person=citizen(4), sequence=41), CLINIC, certificate)  # signed now
    own.revoke(x509.load_der_x509_certificate(certificate), LONG_AGO + timedelta(hours=1))
    check = check_visit_signature(_shown(entry), own.trust_anchors())
    assert check.status is SignatureState.FAILED and "revoked" in check.sentence
    own.clinics.write_crl({}, next_update=datetime.now(UTC) - timedelta(minutes=1))
    stale = check_visit_signature(_shown(entry), own.trust_anchors())
    assert stale.status is SignatureState.NOT_VERIFIABLE and "chưa được cập nhật" in stale.sentence
