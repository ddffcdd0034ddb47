"""Signed registries: only records the right registry signed, holding certificates a trusted CA issued, count."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from commands.local_ca import LocalCA
from domain.identity import IdentityDirectory
from domain.keyring import KeyLookupFailed, Keyring
from domain.registry_trust import CLINIC_PREFIX, TrustAnchors, Untrusted
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trust(ca) -> TrustAnchors:
    return ca.trust_anchors()


CLINIC = Signer.generate("k1")


def signed_key(ca: LocalCA, **changes) -> bytes:
    record = dict(ca.entry("79001", CLINIC).to_record(), **changes)
    return wire.encode(catalogue.CLINIC_KEY, ca.key_registry().clinic_key(record))


def kind(apply, key, value) -> str:
    with pytest.raises(Untrusted) as caught:
        apply(key, value)
    return caught.value.kind


def test_a_certified_key_signed_by_the_key_registry_counts(ca, trust):
    keyring = Keyring(trust)
    keyring.apply(b"79001/k1", signed_key(ca))
    entry = keyring.key_for("79001", "k1", int(datetime.now(UTC).timestamp() * 1000))
    assert entry.public_key == CLINIC.public_key and entry.certificate


def test_anything_the_worker_cannot_verify_changes_nothing(ca, trust, tmp_path):
    keyring = Keyring(trust)
    unsigned = wire.encode(catalogue.CLINIC_KEY, ca.entry("79001", CLINIC).to_record())
    assert kind(keyring.apply, b"79001/k1", unsigned) == "no_certificate"
    clinic_entry = ca.entry("79001", CLINIC)
    by_a_clinic = dict(clinic_entry.to_record(), registry_certificate=clinic_entry.certificate)
    by_a_clinic["registry_signature"] = b"\x00" * 64
    assert kind(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, by_a_clinic)) == "wrong_subject"
    stranger = LocalCA.open(tmp_path / "other-ca")
    foreign = wire.encode(catalogue.CLINIC_KEY, stranger.key_registry().clinic_key(stranger.entry("79001", CLINIC)
                                                                                  .to_record()))
    assert kind(keyring.apply, b"79001/k1", foreign) == "untrusted_issuer"
    altered = wire.decode(signed_key(ca), catalogue.CLINIC_KEY)
    altered["public_key"] = Signer.generate("k1").public_key
    assert kind(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, altered)) == "bad_signature"
    other_clinic = ca.key_registry().clinic_key(dict(ca.entry("01002", CLINIC).to_record(), clinic_code="79001"))
    assert kind(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, other_clinic)) == "wrong_subject"
    other_key = ca.key_registry().clinic_key(dict(ca.entry("79001", CLINIC).to_record(),
                                                  public_key=Signer.generate("k1").public_key))
    assert kind(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, other_key)) == "key_not_certified"
    assert kind(keyring.apply, b"79001/k2", signed_key(ca)) == "wrong_record_key"
    keyring.apply(b"79001/k1", signed_key(ca))
    assert kind(keyring.apply, b"79001/k1", None) == "unsigned_tombstone"
    assert keyring.get("79001", "k1") is not None and len(keyring) == 1


def test_a_revocation_stands_when_an_older_record_is_written_again(ca, trust):
    keyring = Keyring(trust)
    registered = signed_key(ca)
    keyring.apply(b"79001/k1", registered)
    keyring.apply(b"79001/k1", signed_key(ca, revoked_at=5_000))
    assert kind(keyring.apply, b"79001/k1", registered) == "superseded"
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for("79001", "k1", 6_000)
    assert caught.value.code == "key_revoked"


def test_a_certificate_on_the_cas_revocation_list_or_outside_its_validity_does_not_count(ca, trust):
    entry = ca.entry("79001", Signer.generate("k9"))
    der = entry.certificate
    assert trust.certificate(der, CLINIC_PREFIX + "79001", datetime.now(UTC))
    with pytest.raises(Untrusted, match="not at"):
        trust.certificate(der, CLINIC_PREFIX + "79001", datetime.now(UTC) + timedelta(days=800))
    from cryptography import x509
    ca.revoke(x509.load_der_x509_certificate(der))
    reloaded = ca.trust_anchors()
    with pytest.raises(Untrusted) as caught:
        reloaded.certificate(der, CLINIC_PREFIX + "79001", datetime.now(UTC))
    assert caught.value.kind == "certificate_revoked"


def test_a_signature_outside_the_certificates_validity_is_refused(ca, trust):
    keyring = Keyring(trust)
    keyring.apply(b"79001/k1", signed_key(ca))
    later = int((datetime.now(UTC) + timedelta(days=800)).timestamp() * 1000)
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for("79001", "k1", later)
    assert caught.value.code == "certificate_expired"


def test_card_mappings_count_only_signed_by_the_insurance_registry(ca, trust):
    directory = IdentityDirectory(trust)
    record = {"card_number": "TE1790000000003", "personal_id": "079186001234", "updated_at": now_millis()}
    signed = ca.insurance_registry().identity_card(record)
    directory.apply(b"TE1790000000003", wire.encode(catalogue.IDENTITY_CARD, signed))
    assert directory.person_of("TE1790000000003") == "079186001234"
    rerouted = dict(ca.insurance_registry().identity_card(record), personal_id="001095007788")
    assert kind(directory.apply, b"TE1790000000003", wire.encode(catalogue.IDENTITY_CARD, rerouted)) == "bad_signature"
    by_key_registry = ca.key_registry().identity_card(dict(record, personal_id="001095007788"))
    assert kind(directory.apply, b"TE1790000000003",
                wire.encode(catalogue.IDENTITY_CARD, by_key_registry)) == "wrong_subject"
    unsigned = wire.encode(catalogue.IDENTITY_CARD_V1, dict(record, personal_id="001095007788"))
    assert kind(directory.apply, b"TE1790000000003", unsigned) == "no_certificate"
    assert kind(directory.apply, b"TE1790000000003", None) == "unsigned_tombstone"
    assert directory.person_of("TE1790000000003") == "079186001234"


def test_the_local_ca_keeps_its_private_keys_owner_only(ca):
    for name in ("ca.key", "registry-ca.key", "key-registry.key", "insurance-registry.key"):
        assert (ca.directory / name).stat().st_mode & 0o077 == 0
    assert serialization.load_pem_private_key((ca.directory / "ca.key").read_bytes(), None)


def test_records_signed_in_a_row_are_issued_in_order(ca):
    """Regression (CI, 2026-11-30): two records signed in one millisecond had equal revisions."""
    issued = [wire.decode(signed_key(ca), catalogue.CLINIC_KEY)["issued_at"] for _ in range(50)]
    assert issued == sorted(set(issued))
