"""Who may vouch for what: X.509 certificates chained to the deployment's trusted CAs, and signed registry records.

A clinic's signing key counts only inside a certificate naming its facility code (subject UID
`MA_CSKCB:<code>`); registry records count only when signed by a certificate for that registry's
role (`ROLE:key-registry`, `ROLE:insurance-registry`). Each certificate must be issued by a
trusted CA, valid at the time in question and absent from that CA's revocation list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from schemas.envelope import verify
from schemas.registry_reasons import IgnoredBecause

CLINIC_PREFIX = "MA_CSKCB:"
KEY_REGISTRY = "ROLE:key-registry"
INSURANCE_REGISTRY = "ROLE:insurance-registry"


class Untrusted(Exception):
    """A certificate or registry record that cannot be verified; kind is a short label for counting."""

    def __init__(self, kind: IgnoredBecause, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class TrustAnchorsMissing(FileNotFoundError):
    """The deployment's trusted CA certificates are not where the settings say."""


def subject_name(uid: str, common_name: str) -> x509.Name:
    """The subject a certificate for uid carries (UID first, as Vietnamese CAs put MST: or CMND: there)."""
    return x509.Name([x509.NameAttribute(NameOID.USER_ID, uid), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def clinic_subject(clinic_code: str, name: str | None = None) -> x509.Name:
    """The subject of a clinic's signing-key certificate; name is the facility's, as its organisation (O)."""
    subject = subject_name(CLINIC_PREFIX + clinic_code, f"Co so KCB {clinic_code}")
    return subject if not name else x509.Name([*subject, x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])


@lru_cache(maxsize=4096)  # a reply names the same few facilities' certificates again and again
def organisation_name(der: bytes | None) -> str | None:
    """The facility name a DER certificate gives as its subject's organisation (O), or None when it gives none."""
    if not der:
        return None
    try:
        values = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    except (ValueError, TypeError):
        return None
    return str(values[0].value) if values else None


def subject_uid(certificate: x509.Certificate) -> str | None:
    """The certificate's subject UID attribute: `MA_CSKCB:<facility code>` or `ROLE:<registry>`."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


def raw_ed25519(certificate: x509.Certificate) -> bytes:
    """The certificate's raw Ed25519 public key, or raise Untrusted for any other key type."""
    try:
        key = certificate.public_key()
    except (ValueError, TypeError) as exc:
        raise Untrusted(IgnoredBecause.BAD_CERTIFICATE, f"the certificate's public key cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Untrusted(IgnoredBecause.KEY_TYPE,
                        "the certificate's key is not Ed25519, the only signing algorithm accepted")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class TrustAnchors:
    """The CAs a deployment trusts and their revocation lists."""

    authorities: list[x509.Certificate]
    revocation_lists: list[x509.CertificateRevocationList] = field(default_factory=list)

    @classmethod
    def load(cls, anchors: Path, crl: Path | None = None) -> TrustAnchors:
        """Read trusted CA certificates (PEM, one or more) and, if the file exists, their revocation list."""
        if not anchors.exists():
            raise TrustAnchorsMissing(
                f"no trusted CA certificates at {anchors} (HEALTHBOOK_TRUST_ANCHORS_FILE); 'make up' makes the local "
                "stack's CA, a production deployment points this at its licensed CAs' certificates")
        authorities = x509.load_pem_x509_certificates(anchors.read_bytes())
        lists = [x509.load_pem_x509_crl(crl.read_bytes())] if crl and crl.exists() else []
        return cls(authorities, lists)

    def certificate(self, der: bytes | None, uid: str, at: datetime) -> x509.Certificate:
        """Parse a DER certificate and check its issuer, subject UID, validity at `at` and revocation."""
        if not der:
            raise Untrusted(IgnoredBecause.NO_CERTIFICATE, f"no certificate is attached (one naming {uid} is required)")
        try:  # cryptography parses fields lazily: a malformed one raises ValueError or TypeError when first read
            certificate = x509.load_der_x509_certificate(der)
            self._check(certificate, uid, at)
        except (ValueError, TypeError, x509.InvalidVersion) as exc:
            raise Untrusted(IgnoredBecause.BAD_CERTIFICATE, f"the certificate cannot be read: {exc}") from None
        return certificate

    def _check(self, certificate: x509.Certificate, uid: str, at: datetime) -> None:
        self._check_issuer(certificate)
        if subject_uid(certificate) != uid:
            raise Untrusted(IgnoredBecause.WRONG_SUBJECT,
                            f"the certificate names {subject_uid(certificate)!r}, not {uid!r}")
        if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            raise Untrusted(IgnoredBecause.OUTSIDE_VALIDITY, (
                f"the certificate is valid from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {at:%Y-%m-%d %H:%M} UTC"))
        for crl in self.revocation_lists:
            if crl.issuer == certificate.issuer and crl.get_revoked_certificate_by_serial_number(
                    certificate.serial_number) is not None:
                raise Untrusted(IgnoredBecause.CERTIFICATE_REVOKED,
                                f"certificate {certificate.serial_number:x} is revoked by its CA")

    def _check_issuer(self, certificate: x509.Certificate) -> None:
        for authority in self.authorities:
            if authority.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(authority)
                return
            except (ValueError, TypeError, InvalidSignature):
                continue
        raise Untrusted(IgnoredBecause.UNTRUSTED_ISSUER, "the certificate was not issued by a trusted CA "
                        f"(issuer {certificate.issuer.rfc4514_string()})")

    def signed_by(self, der: bytes | None, uid: str, signature: bytes | None, message: bytes,
                  at: datetime | None = None) -> x509.Certificate:
        """Check that a certificate for uid, valid now, signed message; return the certificate or raise Untrusted."""
        certificate = self.certificate(der, uid, at or datetime.now(UTC))
        if not signature or not verify(raw_ed25519(certificate), signature, message):
            raise Untrusted(IgnoredBecause.BAD_SIGNATURE,
                            f"the record's signature does not verify with the {uid} certificate")
        return certificate
