"""The facility's XML signature over a dossier (CHUKYDONVI), checked against its registered certificate."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

TAIL_BYTES = 256 * 1024
CERTIFICATE_FILE = "xml-signature-certificate.pem"


class SignatureStatus(StrEnum):
    """What the check of a dossier's XML signature found."""

    NO_CERTIFICATE = "no certificate registered"
    ABSENT = "not signed"
    VERIFIED = "verified"
    MISMATCH = "does not verify"
    TOO_LARGE = "too large to verify"


@dataclass(frozen=True)
class SignatureCheck:
    """The status and, when it blocks the file, a sentence saying why."""

    status: SignatureStatus
    message: str = ""

    @property
    def blocks(self) -> bool:
        """Whether nothing of the file may be published."""
        return self.status in (SignatureStatus.MISMATCH, SignatureStatus.TOO_LARGE)


def certificate_path(key_dir: Path, facility_code: str) -> Path:
    """Where a facility's registered XML-signing certificate is kept."""
    return key_dir / facility_code / CERTIFICATE_FILE


def load_certificate(key_dir: Path, facility_code: str) -> x509.Certificate | None:
    """The facility's registered certificate, if any."""
    path = certificate_path(key_dir, facility_code)
    return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None


def carries_signature(path: Path) -> bool:
    """Whether CHUKYDONVI, at the end of the file, holds an XML signature (read from the tail only)."""
    with path.open("rb") as raw:
        raw.seek(max(0, path.stat().st_size - TAIL_BYTES))
        tail = raw.read()
    start = tail.rfind(b"<CHUKYDONVI")
    return start >= 0 and b"Signature" in tail[start:]


def check_signature(path: Path, certificate: x509.Certificate | None, max_bytes: int) -> SignatureCheck:
    """Verify the dossier's enveloped XML signature with the facility's certificate.

    Verification canonicalises the whole document, so it needs the file in memory: files above
    max_bytes are refused rather than published unverified.
    """
    if certificate is None:
        return SignatureCheck(SignatureStatus.NO_CERTIFICATE)
    if not carries_signature(path):
        return SignatureCheck(SignatureStatus.ABSENT)
    size = path.stat().st_size
    if size > max_bytes:
        return SignatureCheck(SignatureStatus.TOO_LARGE, (
            f"the dossier is signed and is {size / 2**20:.0f} MiB, above the {max_bytes / 2**20:.0f} MiB that "
            "signature verification may load; raise HEALTHBOOK_XML_SIGNATURE_MAX_MB on a machine with the memory"))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        XMLVerifier().verify(etree.parse(str(path), parser).getroot(), x509_cert=certificate,
                             expect_config=SignatureConfiguration(require_x509=False))
    except Exception as exc:
        return SignatureCheck(SignatureStatus.MISMATCH, (
            f"CHUKYDONVI does not verify with the facility's registered certificate ({exc}): the file was changed "
            "after signing or signed by another certificate; nothing from it was published"))
    return SignatureCheck(SignatureStatus.VERIFIED)
