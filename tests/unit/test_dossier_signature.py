"""The facility's XML signature over a dossier: verified, absent, altered, another certificate, too large."""

from pathlib import Path

import pytest

from producers.dossier_signature import SignatureStatus, check_signature
from synthetic.dossiers import write_dossier
from tests.dossier_signing import facility_certificate, sign_dossier
from tests.unit.test_giamdinhhs import events

MAX = 2**30


@pytest.fixture(scope="module")
def facility():
    return facility_certificate("79001")


@pytest.fixture
def signed(tmp_path, facility) -> Path:
    path = tmp_path / "signed.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(2), 2)
    sign_dossier(path, *facility)
    return path


def test_a_signed_dossier_verifies_with_its_certificate(signed, facility):
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.VERIFIED


def test_any_change_after_signing_is_a_mismatch(signed, facility):
    signed.write_bytes(signed.read_bytes().replace(b"<NGAYLAP>20260320", b"<NGAYLAP>20260321", 1))
    check = check_signature(signed, facility[1], MAX)
    assert check.status is SignatureStatus.MISMATCH and check.blocks
    assert "registered certificate" in check.message


def test_another_certificate_is_a_mismatch(signed):
    _, other = facility_certificate("79001")
    assert check_signature(signed, other, MAX).status is SignatureStatus.MISMATCH


def test_unsigned_and_unregistered_dossiers_are_not_blocked(tmp_path, facility, signed):
    plain = tmp_path / "plain.xml"
    with plain.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(1), 1)
    assert check_signature(plain, facility[1], MAX).status is SignatureStatus.ABSENT
    assert check_signature(signed, None, MAX).status is SignatureStatus.NO_CERTIFICATE
    assert not check_signature(plain, facility[1], MAX).blocks


def test_a_signed_file_above_the_limit_is_refused_not_passed_unverified(signed, facility):
    check = check_signature(signed, facility[1], 100)
    assert check.status is SignatureStatus.TOO_LARGE and check.blocks
    assert "HEALTHBOOK_XML_SIGNATURE_MAX_MB" in check.message


def test_a_malformed_signature_element_is_a_mismatch_not_a_crash(signed, facility):
    text = signed.read_bytes()
    start, end = text.index(b"<ds:SignedInfo"), text.index(b"</ds:SignedInfo>") + len(b"</ds:SignedInfo>")
    signed.write_bytes(text[:start] + b"<ds:Unexpected/>" + text[end:])
    check = check_signature(signed, facility[1], MAX)
    assert check.status is SignatureStatus.MISMATCH and check.blocks
