"""Revocation with real CAs: every list verified against its CA, current, re-read live; validity at signed_at."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from commands.local_ca import CA_NAME, Authority, LocalCA
from domain import registry_trust
from domain.keyring import KeyLookupFailed, Keyring
from domain.registry_trust import CLINIC_PREFIX, TrustAnchors, Untrusted
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis

SECOND_CA = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "second licensed CA")])
HOUR_MS = 3_600_000


@pytest.fixture
def ca(tmp_path) -> LocalCA:
    return LocalCA.open(tmp_path / "pki")


@pytest.fixture(autouse=True)
def reread_at_once(monkeypatch):
    monkeypatch.setattr(registry_trust, "CRL_RELOAD_SECONDS", 0.0)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _two_cas(ca: LocalCA, tmp_path) -> tuple[Authority, TrustAnchors]:
    second = Authority.open(tmp_path / "pki", "second", SECOND_CA)
    anchors = tmp_path / "clinic-cas.pem"
    anchors.write_bytes((ca.directory / "ca.crt").read_bytes() + (ca.directory / "second.crt").read_bytes())
    lists = tmp_path / "all.crl"
    lists.write_bytes(ca.clinics.crl_path.read_bytes() + second.crl_path.read_bytes())
    return second, TrustAnchors.load(anchors, ca.directory / "registry-ca.crt", [lists, ca.registries.crl_path])


def test_a_certificate_revoked_by_the_second_ca_of_a_bundle_is_refused(ca, tmp_path):
    second, _ = _two_cas(ca, tmp_path)
    issued = second.issue(registry_trust.clinic_subject("79001"), Signer.generate("k").private_key.public_key(), 30)
    second.revoke(issued)
    _, trust = _two_cas(ca, tmp_path)
    with pytest.raises(Untrusted) as caught:
        trust.certificate(_der(issued), CLINIC_PREFIX + "79001", datetime.now(UTC))
    assert caught.value.kind == "certificate_revoked"


def test_a_list_the_ca_did_not_sign_is_ignored_and_its_ca_fails_closed(ca, tmp_path):
    impostor = Authority.open(tmp_path / "other", "ca", CA_NAME)  # same name, another key
    ca.clinics.crl_path.write_bytes(impostor.crl_path.read_bytes())
    trust = ca.trust_anchors()
    problems = trust.revocation_problems()
    assert any("no trusted CA or did not sign it" in p for p in problems)
    assert any("no verified revocation list of CA" in p for p in problems)
    entry = ca.entry("79001", Signer.generate("k"))
    with pytest.raises(Untrusted) as caught:
        trust.certificate(entry.certificate, CLINIC_PREFIX + "79001", datetime.now(UTC))
    assert caught.value.kind == "revocation_unknown"


def test_an_expired_list_fails_closed_for_visits_and_says_so(ca):
    signer = Signer.generate("k1")
    keyring = Keyring(ca.trust_anchors())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY,
                                           ca.key_registry().clinic_key(ca.entry("79001", signer).to_record())))
    keyring.key_for("79001", "k1", now_millis())
    ca.clinics.write_crl({}, next_update=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for("79001", "k1", now_millis())
    assert caught.value.code == "revocation_unknown" and "expired" in caught.value.message
    assert "dlq retry --reason revocation_unknown" in caught.value.message
    assert any("expired" in p for p in keyring.trust.revocation_problems())
    ca.clinics.write_crl({})
    keyring.key_for("79001", "k1", now_millis())
    assert keyring.trust.revocation_problems() == []


def test_a_revocation_written_while_running_counts_for_signatures_from_its_time_on(ca):
    signer = Signer.generate("k1")
    entry = ca.entry("79001", signer)
    keyring = Keyring(ca.trust_anchors())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, ca.key_registry().clinic_key(entry.to_record())))
    revoked_at = datetime.now(UTC) - timedelta(minutes=2)  # the certificate is valid from 5 minutes ago
    ca.revoke(x509.load_der_x509_certificate(entry.certificate), revoked_at)
    before = int(revoked_at.timestamp() * 1000) - 60_000
    assert keyring.key_for("79001", "k1", before).key_id == "k1", "signed before the revocation: still good"
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for("79001", "k1", now_millis())
    assert caught.value.code == "certificate_revoked"


def test_a_key_whose_certificate_has_expired_still_verifies_what_it_signed_while_valid(ca):
    signer = Signer.generate("k1")
    start = datetime.now(UTC) - timedelta(days=10)
    expired = ca.entry("79001", signer, not_before=start, days=2)
    keyring = Keyring(ca.trust_anchors())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, ca.key_registry().clinic_key(expired.to_record())))
    inside = int((start + timedelta(days=1)).timestamp() * 1000)
    assert keyring.key_for("79001", "k1", inside).public_key == signer.public_key
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for("79001", "k1", now_millis())
    assert caught.value.code == "certificate_expired"
    assert "expired at" in caught.value.message and "clinic rotate" in caught.value.message
