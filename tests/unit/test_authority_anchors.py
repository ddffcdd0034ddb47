"""Each authority under its own anchor: a clinic CA never makes a registry; the local CA certifies only facilities."""

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from commands.local_ca import LocalCA, NotACertificateRequest, RequestRefused
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from domain.registry_trust import (
    CLINIC_PREFIX,
    INSURANCE_REGISTRY,
    KEY_REGISTRY,
    AnchorsShared,
    TrustAnchors,
    Untrusted,
    subject_name,
    subject_uid,
)
from producers.registry_signing import RegistrySigner
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis

CLINIC = Signer.generate("k1")
CARD = "TE1790000000003"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


def _role_signer_under_the_clinic_ca(ca: LocalCA, uid: str) -> RegistrySigner:
    """What an insider got from the old `ca issue`: a registry-role certificate from the clinic CA."""
    key = Ed25519PrivateKey.generate()
    certificate = ca.clinics.issue(subject_name(uid, "forged registry"), key.public_key(), 30)
    return RegistrySigner(key, certificate.public_bytes(serialization.Encoding.DER))


def _reason(apply, key: bytes, value: bytes) -> str:
    with pytest.raises(Untrusted) as caught:
        apply(key, value)
    return caught.value.kind


def test_a_registry_role_certified_by_a_clinic_ca_vouches_for_no_key_and_no_card(ca):
    trust = ca.trust_anchors()
    forged_keys = _role_signer_under_the_clinic_ca(ca, KEY_REGISTRY)
    record = forged_keys.clinic_key(ca.entry("79001", CLINIC).to_record())
    keyring = Keyring(trust)
    assert _reason(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, record)) == "untrusted_issuer"
    assert keyring.get("79001", "k1") is None
    forged_cards = _role_signer_under_the_clinic_ca(ca, INSURANCE_REGISTRY)
    card = forged_cards.identity_card({"card_number": CARD, "personal_id": "001095007788", "updated_at": now_millis()})
    directory = IdentityDirectory(trust)
    assert _reason(directory.apply, CARD.encode(), wire.encode(catalogue.IDENTITY_CARD, card)) == "untrusted_issuer"
    assert directory.person_of(CARD) is None
    genuine = ca.key_registry().clinic_key(ca.entry("79001", CLINIC).to_record())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, genuine))
    assert keyring.get("79001", "k1") is not None


def test_a_facility_certificate_from_the_registry_ca_certifies_no_clinic(ca):
    key = Ed25519PrivateKey.generate()
    certificate = ca.registries.issue(subject_name(CLINIC_PREFIX + "79001", "x"), key.public_key(), 30)
    with pytest.raises(Untrusted) as caught:
        ca.trust_anchors().certificate(certificate.public_bytes(serialization.Encoding.DER),
                                       CLINIC_PREFIX + "79001", datetime.now(UTC))
    assert caught.value.kind == "untrusted_issuer"


def test_registries_may_be_pinned_certificates_apart_from_any_ca(ca, tmp_path):
    pinned = tmp_path / "registries.pem"
    pinned.write_bytes((ca.directory / "key-registry.crt").read_bytes())
    trust = TrustAnchors.load(ca.directory / "ca.crt", pinned, [ca.clinics.crl_path])
    keyring = Keyring(trust)
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY,
                                           ca.key_registry().clinic_key(ca.entry("79001", CLINIC).to_record())))
    assert keyring.get("79001", "k1") is not None
    card = ca.insurance_registry().identity_card({"card_number": CARD, "personal_id": "079186001234",
                                                  "updated_at": now_millis()})
    assert _reason(IdentityDirectory(trust).apply, CARD.encode(),
                   wire.encode(catalogue.IDENTITY_CARD, card)) == "untrusted_issuer", "only the pinned one counts"


def _request(subject: x509.Name) -> bytes:
    key = Ed25519PrivateKey.generate()
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None).public_bytes(
        serialization.Encoding.PEM)


@pytest.mark.parametrize("uid", [KEY_REGISTRY, INSURANCE_REGISTRY, CLINIC_PREFIX + "01002", "ROLE:anything"])
def test_the_local_ca_refuses_a_request_for_any_subject_but_the_named_facility(ca, uid):
    with pytest.raises(RequestRefused, match="only facility certificates"):
        ca.certify_request(_request(subject_name(uid, "x")), "79001")


def test_the_local_ca_builds_the_facility_subject_itself_keeping_only_the_facility_name(ca):
    named = x509.Name([x509.NameAttribute(NameOID.USER_ID, CLINIC_PREFIX + "79001"),
                       x509.NameAttribute(NameOID.COMMON_NAME, "ROLE:key-registry"),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bệnh viện Quận 1")])
    issued = ca.certify_request(_request(named), "79001")
    assert subject_uid(issued) == CLINIC_PREFIX + "79001"
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Co so KCB 79001"
    assert issued.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Bệnh viện Quận 1"
    assert issued.issuer == ca.clinics.certificate.subject
    bare = ca.certify_request(_request(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])), "01002")
    assert subject_uid(bare) == CLINIC_PREFIX + "01002"
    with pytest.raises(NotACertificateRequest):
        ca.certify_request(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "79001")


def test_one_certificate_cannot_be_both_a_clinic_ca_and_a_registry_anchor(ca):
    with pytest.raises(AnchorsShared, match="an anchor of their own"):
        TrustAnchors.load(ca.directory / "ca.crt", ca.directory / "ca.crt", [ca.clinics.crl_path])
