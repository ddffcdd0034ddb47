"""The facility's XML signature over a dossier (CHUKYDONVI), checked against its registered certificate."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from domain.registry_trust import CLINIC_PREFIX, TrustAnchors, Untrusted
from schemas.registry_reasons import IgnoredBecause

CERTIFICATE_FILE = "xml-signature-certificate.pem"


DSIG = "http://www.w3.org/2000/09/xmldsig#"
ACCEPTED_TRANSFORMS = frozenset({
    "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments",
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
})


class SignatureStatus(StrEnum):
    """What the check of a dossier's XML signature found."""

    NO_CERTIFICATE = "no certificate registered"
    VERIFIED = "verified"
    UNSIGNED = "not signed"
    MISMATCH = "does not verify"
    PARTIAL = "signs only part of the file"
    NOT_XML = "not well-formed XML"
    TOO_LARGE = "too large to verify"


@dataclass(frozen=True)
class SignatureCheck:
    """The status, a sentence when it blocks the file, and the verified document to read the visits from."""

    status: SignatureStatus
    message: str = ""
    verified: etree._Element | None = None

    @property
    def blocks(self) -> bool:
        """Whether nothing of the file may be published."""
        return self.status not in (SignatureStatus.NO_CERTIFICATE, SignatureStatus.VERIFIED)


def certificate_path(key_dir: Path, facility_code: str) -> Path:
    """Where a facility's registered XML-signing certificate is kept."""
    return key_dir / facility_code / CERTIFICATE_FILE


def load_certificate(key_dir: Path, facility_code: str) -> x509.Certificate | None:
    """The facility's registered certificate, if any."""
    path = certificate_path(key_dir, facility_code)
    return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None


XML_SIGNING_CURVES = ("secp256r1", "secp384r1", "secp521r1")
MIN_RSA_BITS = 2048


def check_signing_certificate(trust: TrustAnchors, certificate: x509.Certificate, facility_code: str) -> None:
    """Raise Untrusted unless a trusted clinic CA issued it to this facility, with a sound key, valid and unrevoked."""
    trust.certificate(certificate.public_bytes(Encoding.DER), CLINIC_PREFIX + facility_code, datetime.now(UTC))
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in XML_SIGNING_CURVES:
        return
    raise Untrusted(IgnoredBecause.KEY_TYPE, (
        f"the certificate's key is {type(key).__name__.removeprefix('_')}; a dossier signature (XML-DSig) needs RSA of "
        f"at least {MIN_RSA_BITS} bits or ECDSA on P-256, P-384 or P-521"))


def _refused(status: SignatureStatus, why: str) -> SignatureCheck:
    return SignatureCheck(status, f"{why}; the facility has a registered certificate, so only a dossier whose "
                                  "CHUKYDONVI signs the whole file is published, and nothing from this one was")


def check_signature(path: Path, certificate: x509.Certificate | None, max_bytes: int) -> SignatureCheck:
    """Verify the dossier's enveloped XML signature with the facility's certificate, over the whole document.

    Without a registered certificate the file is read as it streams. With one, the file must be
    at most max_bytes (verification holds it in memory), carry exactly one signature in CHUKYDONVI
    whose reference is the whole document (URI=""), and verify; the visits are then read from the
    tree that was verified, never from a second read of the file.
    """
    if certificate is None:
        return SignatureCheck(SignatureStatus.NO_CERTIFICATE)
    size = path.stat().st_size
    if size > max_bytes:
        return _refused(SignatureStatus.TOO_LARGE, (
            f"the dossier is {size / 2**20:.0f} MiB, above the {max_bytes / 2**20:.0f} MiB signature verification "
            "may load (HEALTHBOOK_XML_SIGNATURE_MAX_MB)"))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_comments=False)
    try:
        # parsed from bytes: a file path makes lxml raise OSError, not a syntax error, for a bad encoding
        root = etree.parse(io.BytesIO(path.read_bytes()), parser).getroot()
    except etree.XMLSyntaxError as exc:
        return _refused(SignatureStatus.NOT_XML, f"the file is not well-formed XML ({exc})")
    problem = _placement(root)
    if problem:
        return problem
    try:
        result = XMLVerifier().verify(root, x509_cert=certificate,
                                      expect_config=SignatureConfiguration(require_x509=False))
    except Exception as exc:
        return _refused(SignatureStatus.MISMATCH, (
            f"CHUKYDONVI does not verify with the facility's registered certificate ({exc}): the file was changed "
            "after signing or signed by another certificate"))
    verified = result.signed_xml
    if not isinstance(verified, etree._Element) or verified.tag != root.tag:
        return _refused(SignatureStatus.PARTIAL, (
            "CHUKYDONVI verifies, but over no document the signature library can hand back: what it signs is not "
            "the dossier"))
    return SignatureCheck(SignatureStatus.VERIFIED, verified=verified)


def _placement(root: etree._Element) -> SignatureCheck | None:
    """Why the signature is missing, misplaced or covers less than the whole document, if it does."""
    signatures = list(root.iter(f"{{{DSIG}}}Signature"))
    if not signatures:
        return _refused(SignatureStatus.UNSIGNED, "the dossier carries no XML signature in CHUKYDONVI")
    if len(signatures) > 1:
        return _refused(SignatureStatus.MISMATCH, f"the dossier carries {len(signatures)} XML signatures, not one")
    parent = signatures[0].getparent()
    if parent is None or etree.QName(parent).localname != "CHUKYDONVI":
        return _refused(SignatureStatus.MISMATCH, "the XML signature is not in CHUKYDONVI")
    uris = [reference.get("URI") for reference in signatures[0].iter(f"{{{DSIG}}}Reference")]
    if not uris:
        return _refused(SignatureStatus.MISMATCH, "the XML signature has no SignedInfo reference: it signs nothing")
    if uris != [""]:
        return _refused(SignatureStatus.PARTIAL, (
            f"the signature references {', '.join(repr(u) for u in uris)} instead of the whole document (URI=\"\")"))
    for transform in signatures[0].iter(f"{{{DSIG}}}Transform"):
        if transform.get("Algorithm") not in ACCEPTED_TRANSFORMS:
            return _refused(SignatureStatus.PARTIAL, (
                f"the signature's reference applies the transform {transform.get('Algorithm')!r}; only the "
                "enveloped-signature and C14N transforms are accepted, so that what is signed is the document itself"))
    return None
