"""The facility's XML signature over a dossier: verified, absent, altered, another certificate, too large."""

from pathlib import Path

import pytest

from producers.xml_ingest.dossier_signature import SignatureStatus, check_signature
from synthetic.dossiers import write_dossier
from tests.dossier_signing import facility_certificate, sign_covering_nothing, sign_dossier, transplant_signature
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


def test_without_a_registered_certificate_nothing_is_verified_and_the_file_streams(signed):
    check = check_signature(signed, None, MAX)
    assert check.status is SignatureStatus.NO_CERTIFICATE and not check.blocks and check.verified is None


def test_an_unsigned_dossier_is_refused_once_the_facility_has_a_certificate(tmp_path, facility):
    plain = tmp_path / "plain.xml"
    with plain.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(1), 1)
    check = check_signature(plain, facility[1], MAX)
    assert check.status is SignatureStatus.UNSIGNED and check.blocks and "registered certificate" in check.message


def _strip(signed: Path) -> bytes:
    text = signed.read_bytes()
    start, end = text.index(b"<ds:Signature"), text.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    return text[:start] + text[end:]


def test_a_stripped_signature_is_refused_however_far_it_is_padded(signed, facility):
    stripped = _strip(signed)
    signed.write_bytes(stripped)
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.UNSIGNED
    signed.write_bytes(stripped + b" " * (300 * 1024))
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.UNSIGNED


def test_an_altered_dossier_padded_past_the_old_tail_window_is_still_a_mismatch(signed, facility):
    altered = signed.read_bytes().replace(b"<NGAYLAP>20260320", b"<NGAYLAP>20260321", 1)
    signed.write_bytes(altered + b"\n" * (300 * 1024))
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.MISMATCH
    signed.write_bytes(altered + b"<!--" + b"x" * (300 * 1024) + b"-->")
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.MISMATCH


def test_padding_cannot_carry_a_file_past_the_size_limit_or_add_content_after_the_root(signed, facility):
    original = signed.read_bytes()
    signed.write_bytes(original + b" " * 1000)
    assert check_signature(signed, facility[1], len(original) + 999).status is SignatureStatus.TOO_LARGE
    signed.write_bytes(original + b"<HOSO>smuggled</HOSO>")
    assert check_signature(signed, facility[1], MAX).status is SignatureStatus.NOT_XML


def test_a_signature_over_one_element_is_refused_as_partial(tmp_path, facility):
    path = tmp_path / "partial.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(2), 2)
    sign_dossier(path, *facility, only="THONGTINDONVI")
    path.write_bytes(path.read_bytes().replace(b"<MA_KHOA>K01</MA_KHOA>", b"<MA_KHOA>K02</MA_KHOA>", 1))
    check = check_signature(path, facility[1], MAX)
    assert check.status is SignatureStatus.PARTIAL and check.blocks and "#covered" in check.message


def test_the_visits_are_read_from_the_tree_that_was_verified(signed, facility):
    from producers.xml_ingest.giamdinhhs import DossierReader

    check = check_signature(signed, facility[1], MAX)
    assert check.status is SignatureStatus.VERIFIED and check.verified is not None
    streamed = list(DossierReader(signed))
    signed.write_bytes(b"<nothing/>")  # a second read of the file would now find nothing
    verified = DossierReader(signed, check.verified)
    assert verified.header.facility_code == "79001"
    assert [h.tables for h in verified] == [h.tables for h in streamed]


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


def test_a_signature_whose_base64_transform_covers_nothing_verifies_no_other_dossier(tmp_path, facility):
    innocuous, forged = tmp_path / "innocuous.xml", tmp_path / "forged.xml"
    with innocuous.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(1), 1)
    sign_covering_nothing(innocuous, *facility)
    with forged.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", events(2), 2)
    transplant_signature(innocuous, forged)
    for path in (innocuous, forged):
        check = check_signature(path, facility[1], MAX)
        assert check.status is SignatureStatus.PARTIAL and check.blocks and check.verified is None
        assert "xmldsig#base64" in check.message and "enveloped-signature and C14N" in check.message


def test_a_byte_outside_the_declared_encoding_is_not_xml_not_a_crash(signed, facility):
    signed.write_bytes(signed.read_bytes().replace(b"<NGAYLAP>", b"<NGAYLAP>\xff", 1))
    check = check_signature(signed, facility[1], MAX)
    assert check.status is SignatureStatus.NOT_XML and check.blocks
