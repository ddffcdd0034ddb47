"""Who may vouch for what: each authority under its own trust anchor, and revocation lists kept current.

A clinic's signing key counts only inside a certificate naming its facility code (subject UID
`MA_CSKCB:<code>`) issued by one of the clinic CAs. Registry records count only when signed by a
certificate for that registry's role (`ROLE:key-registry`, `ROLE:insurance-registry`) under the
registries' own anchors, configured apart: a clinic CA can never make a registry. Every CA's
revocation list must verify against that CA and be current (before its nextUpdate); a CA whose
list is missing or expired vouches for nothing until the list is refreshed (fail closed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from schemas.envelope import verify
from schemas.registry_reasons import IgnoredBecause

CLINIC_PREFIX = "MA_CSKCB:"
ROLE_PREFIX = "ROLE:"
KEY_REGISTRY = "ROLE:key-registry"
INSURANCE_REGISTRY = "ROLE:insurance-registry"
CRL_RELOAD_SECONDS = 1.0  # how often the revocation-list files are looked at for a change
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class Untrusted(Exception):
    """A certificate or registry record that cannot be verified; kind is a short label for counting."""

    def __init__(self, kind: IgnoredBecause, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class RevocationUnknown(Untrusted):
    """The issuing CA's revocation list is missing, unverifiable or past its nextUpdate: fail closed."""

    def __init__(self, message: str) -> None:
        super().__init__(IgnoredBecause.REVOCATION_UNKNOWN, message)


class TrustAnchorsMissing(FileNotFoundError):
    """The deployment's trusted CA certificates are not where the settings say."""


class AnchorsShared(ValueError):
    """A certificate is both a clinic CA and a registry anchor: a clinic CA could then make a registry."""


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


def is_authority(certificate: x509.Certificate) -> bool:
    """Whether the certificate is a CA's (basicConstraints CA:TRUE), rather than one pinned as it is."""
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _label(name: x509.Name) -> str:
    return name.rfc4514_string()


@dataclass(frozen=True)
class Revocations:
    """One CA's verified revocation list: when each serial was revoked, and until when the list may be believed."""

    issuer: x509.Name
    revoked: dict[int, datetime]
    last_update: datetime
    next_update: datetime | None


@dataclass
class RevocationLists:
    """The CRL files of every trusted CA, each list verified against its issuer and re-read when a file changes."""

    paths: list[Path]
    authorities: list[x509.Certificate]
    by_issuer: dict[bytes, Revocations] = field(default_factory=dict)  # by the issuer name's DER: fast to hash
    problems: list[str] = field(default_factory=list)  # lists that were read but could not be believed
    _stamp: tuple[tuple[str, int, int, int], ...] = ()
    _looked_at: float = 0.0

    def reload_if_changed(self, force: bool = False) -> bool:
        """Re-read the files when their size or modification time changed; return whether they were read."""
        now = time.monotonic()
        if not force and now - self._looked_at < CRL_RELOAD_SECONDS:
            return False
        self._looked_at = now
        stamp = tuple(_stamp_of(path) for path in self.paths)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        self.by_issuer, self.problems = _read_lists(self.paths, self.authorities)
        return True


def _stamp_of(path: Path) -> tuple[str, int, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1, -1, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _read_lists(paths: Iterable[Path], authorities: list[x509.Certificate]
                ) -> tuple[dict[bytes, Revocations], list[str]]:
    """Every CRL of the files that verifies against a trusted CA (the newest per CA), and what was refused."""
    found: dict[bytes, Revocations] = {}
    problems: list[str] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror})")
            continue
        for number, block in enumerate(_CRL_BLOCK.findall(data), start=1):
            where = f"{path} list {number}"
            try:
                crl = x509.load_pem_x509_crl(block)
                issuer = next((ca for ca in authorities if ca.subject == crl.issuer
                               and crl.is_signature_valid(ca.public_key())), None)  # type: ignore[arg-type]
                if issuer is None:
                    problems.append(f"{where}: issued by '{_label(crl.issuer)}', which is no trusted CA or did not "
                                    "sign it; it is ignored")
                    continue
                lists = Revocations(crl.issuer, {entry.serial_number: entry.revocation_date_utc for entry in crl},
                                    crl.last_update_utc, crl.next_update_utc)
            except (ValueError, TypeError) as exc:
                problems.append(f"{where}: not a readable CRL ({exc})")
                continue
            held = found.get(crl.issuer.public_bytes())
            if held is None or lists.last_update > held.last_update:
                found[crl.issuer.public_bytes()] = lists
    return found, problems


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TrustAnchors:
    """The clinic CAs, the registries' own anchors, and every CA's revocation list."""

    authorities: list[x509.Certificate]
    registries: list[x509.Certificate] = field(default_factory=list)
    crl_paths: list[Path] = field(default_factory=list)
    clock: Callable[[], datetime] = _utc_now
    legacy_signatures_until: datetime | None = None  # retired signing forms are refused from this moment on
    registry_max_ahead: timedelta = timedelta(minutes=5)  # how far past this clock a registry record may be dated
    lists: RevocationLists = field(init=False)

    def __post_init__(self) -> None:
        shared = [anchor for anchor in self.registries if anchor in self.authorities]
        if shared:
            raise AnchorsShared(
                f"'{_label(shared[0].subject)}' is in both HEALTHBOOK_TRUST_ANCHORS_FILE and "
                "HEALTHBOOK_REGISTRY_ANCHORS_FILE: the registries need an anchor of their own, which no clinic CA is")
        self.lists = RevocationLists(self.crl_paths, [ca for ca in self.authorities + self.registries
                                                      if is_authority(ca)])
        self.lists.reload_if_changed(force=True)

    @classmethod
    def load(cls, anchors: Path, registry_anchors: Path, crls: Iterable[Path] = (), **options: Any) -> TrustAnchors:
        """Read the clinic CAs and the registries' anchors (PEM, one or more each) and point at the CRL files."""
        return cls(_certificates(anchors, "HEALTHBOOK_TRUST_ANCHORS_FILE", "clinic CAs'"),
                   _certificates(registry_anchors, "HEALTHBOOK_REGISTRY_ANCHORS_FILE", "registries' own"),
                   list(crls), **options)

    def legacy_allowed(self) -> bool:
        """Whether a record signed in a retired signing form may still count now."""
        return self.legacy_signatures_until is not None and self.clock() < self.legacy_signatures_until

    def record_time(self, millis: int, what: str) -> datetime:
        """A registry record's own time, refused when it lies beyond the clock tolerance ahead (or before 1970)."""
        if millis < 0:
            raise Untrusted(IgnoredBecause.DATED_AHEAD, f"{what} is dated before 1970 ({millis} ms)")
        try:
            when = datetime.fromtimestamp(millis / 1000, UTC)
        except (OverflowError, ValueError, OSError):
            raise Untrusted(IgnoredBecause.DATED_AHEAD, f"{what} is dated beyond any calendar ({millis} ms)") from None
        if when > self.clock() + self.registry_max_ahead:
            raise Untrusted(IgnoredBecause.DATED_AHEAD, (
                f"{what} is dated {when:%Y-%m-%d %H:%M} UTC, more than {self.registry_max_ahead} ahead of this "
                "clock (HEALTHBOOK_REGISTRY_MAX_AHEAD_SECONDS): it is refused, not kept for later"))
        return when

    def revocation_problems(self) -> list[str]:
        """Why some CA vouches for nothing now (missing or expired list), and lists that were refused."""
        self.lists.reload_if_changed()
        now = self.clock()
        problems = list(self.lists.problems)
        for ca in self.lists.authorities:
            try:
                self._current(ca.subject, now)
            except RevocationUnknown as exc:
                problems.append(exc.message)
        return problems

    def _current(self, issuer: x509.Name | bytes, now: datetime) -> Revocations:
        key = issuer if isinstance(issuer, bytes) else issuer.public_bytes()
        lists = self.lists.by_issuer.get(key)
        if lists is None:
            name = next((_label(ca.subject) for ca in self.lists.authorities if ca.subject.public_bytes() == key),
                        "an issuer no trusted CA is")
            raise RevocationUnknown(f"no verified revocation list of CA '{name}' is loaded: its "
                                    "certificates count for nothing until its CRL is added to "
                                    "HEALTHBOOK_REVOCATION_LISTS")
        if lists.next_update is not None and now > lists.next_update:
            raise RevocationUnknown(f"the revocation list of CA '{_label(lists.issuer)}' expired at "
                                    f"{lists.next_update:%Y-%m-%d %H:%M} UTC: its certificates count for nothing "
                                    "until a current CRL is in place (the file is re-read within seconds)")
        return lists

    def revoked_at(self, issuer: x509.Name | bytes, serial: int) -> datetime | None:
        """When the CA (its name, or the name's DER) revoked the certificate, None when it has not.

        RevocationUnknown when no current list says.
        """
        self.lists.reload_if_changed()
        return self._current(issuer, self.clock()).revoked.get(serial)

    def certificate(self, der: bytes | None, uid: str, at: datetime | None,
                    revocation: bool = True) -> x509.Certificate:
        """Parse a DER certificate and check its issuer under uid's own anchors, its UID, validity at `at`, revocation.

        at=None leaves validity to the caller (a key judged at each signature's time); revocation=False
        leaves the CRL to the caller too.
        """
        if not der:
            raise Untrusted(IgnoredBecause.NO_CERTIFICATE, f"no certificate is attached (one naming {uid} is required)")
        try:  # cryptography parses fields lazily: a malformed one raises ValueError or TypeError when first read
            certificate = x509.load_der_x509_certificate(der)
            self._check(certificate, uid, at, revocation)
        except (ValueError, TypeError, x509.InvalidVersion) as exc:
            raise Untrusted(IgnoredBecause.BAD_CERTIFICATE, f"the certificate cannot be read: {exc}") from None
        return certificate

    def _check(self, certificate: x509.Certificate, uid: str, at: datetime | None, revocation: bool) -> None:
        if subject_uid(certificate) != uid:
            raise Untrusted(IgnoredBecause.WRONG_SUBJECT,
                            f"the certificate names {subject_uid(certificate)!r}, not {uid!r}")
        pinned = self._check_issuer(certificate, registry=uid.startswith(ROLE_PREFIX))
        if at is not None and not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            raise Untrusted(IgnoredBecause.OUTSIDE_VALIDITY, (
                f"the certificate is valid from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {at:%Y-%m-%d %H:%M} UTC"))
        if revocation and not pinned:
            revoked = self.revoked_at(certificate.issuer, certificate.serial_number)
            # A registry's certificate, once revoked, vouches for nothing: the registry re-signs with its new one.
            if revoked is not None and (at is None or revoked <= at or uid.startswith(ROLE_PREFIX)):
                raise Untrusted(IgnoredBecause.CERTIFICATE_REVOKED,
                                f"certificate {certificate.serial_number:x} was revoked by its CA at "
                                f"{revoked:%Y-%m-%d %H:%M} UTC")

    def _check_issuer(self, certificate: x509.Certificate, registry: bool) -> bool:
        """Check the certificate chains to its own kind of anchor; return whether it is itself a pinned anchor."""
        anchors = self.registries if registry else self.authorities
        for anchor in anchors:
            if not is_authority(anchor):
                if anchor == certificate:
                    return True
                continue
            if anchor.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(anchor)
                return False
            except (ValueError, TypeError, InvalidSignature):
                continue
        kind = "the registries' own anchors (HEALTHBOOK_REGISTRY_ANCHORS_FILE)" if registry else "a trusted clinic CA"
        raise Untrusted(IgnoredBecause.UNTRUSTED_ISSUER, f"the certificate was not issued by {kind} "
                        f"(issuer {certificate.issuer.rfc4514_string()})")

    def signed_by(self, der: bytes | None, uid: str, signature: bytes | None, message: bytes,
                  at: datetime | None = None) -> x509.Certificate:
        """Check that a certificate for uid, valid and unrevoked at `at` (default now), signed message."""
        certificate = self.certificate(der, uid, at or self.clock())
        if not signature or not verify(raw_ed25519(certificate), signature, message):
            raise Untrusted(IgnoredBecause.BAD_SIGNATURE,
                            f"the record's signature does not verify with the {uid} certificate")
        return certificate


def _certificates(path: Path, setting: str, whose: str) -> list[x509.Certificate]:
    if not path.exists():
        raise TrustAnchorsMissing(
            f"no {whose} trust anchors at {path} ({setting}); 'make up' makes the local stack's CAs, a production "
            "deployment points this at its own authorities' certificates")
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise TrustAnchorsMissing(f"{path} ({setting}) holds no readable PEM certificates: {exc}") from None

