"""The clinic keyring: registry records, tombstones and revocation."""

import pytest

from domain.keyring import ClinicKey, KeyLookupFailed, Keyring
from schemas import catalogue, wire


def record(clinic="79001", key_id="k1", revoked_at=None) -> bytes:
    return wire.encode(catalogue.CLINIC_KEY, ClinicKey(clinic, key_id, b"\x01" * 32, 1_000, revoked_at).to_record())


def failure(keyring, *args) -> str:
    with pytest.raises(KeyLookupFailed) as caught:
        keyring.key_for(*args)
    return caught.value.code


def test_registry_records_and_tombstones():
    keyring = Keyring(None)
    keyring.apply(b"79001/k1", record())
    keyring.apply(b"79001/k2", record(key_id="k2"))
    assert keyring.key_for("79001", "k1", 5_000).public_key == b"\x01" * 32
    keyring.apply(b"79001/k1", None)
    assert failure(keyring, "79001", "k1", 5_000) == "unknown_key"
    keyring.apply(b"79001/k2", None)
    assert failure(keyring, "79001", "k2", 5_000) == "unknown_clinic"
    assert len(keyring) == 0


def test_unknown_clinic_and_key():
    keyring = Keyring(None)
    keyring.apply(b"79001/k1", record())
    assert failure(keyring, "01002", "k1", 5_000) == "unknown_clinic"
    assert failure(keyring, "79001", "k9", 5_000) == "unknown_key"


def test_revocation_applies_to_signatures_from_its_time_on():
    keyring = Keyring(None)
    keyring.apply(b"79001/k1", record(revoked_at=10_000))
    assert keyring.key_for("79001", "k1", 9_999)
    assert failure(keyring, "79001", "k1", 10_000) == "key_revoked"


def test_replacing_a_record_does_not_double_count_the_clinic():
    keyring = Keyring(None)
    keyring.apply(b"79001/k1", record())
    keyring.apply(b"79001/k1", record(revoked_at=10))
    keyring.apply(b"79001/k1", None)
    assert failure(keyring, "79001", "k1", 1) == "unknown_clinic"
