"""The local stack's certificate authorities, made at set-up: one certifies clinic keys, another the two registries.

Each authority has its own anchor: the clinic CA (ca.crt, HEALTHBOOK_TRUST_ANCHORS_FILE) can
never make a registry, and the registry CA (registry-ca.crt, HEALTHBOOK_REGISTRY_ANCHORS_FILE)
never a clinic. In production the licensed CAs issue clinic certificates and this module is not
used. The CAs' private keys stay in the PKI directory and are given to no healthbook process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from domain.keyring import ClinicKey
from domain.registry_trust import (
    CLINIC_PREFIX,
    INSURANCE_REGISTRY,
    KEY_REGISTRY,
    TrustAnchors,
    clinic_subject,
    subject_name,
)
from healthbook.config import Settings
from healthbook.kafka import Broker
from healthbook.secret_files import write_owner_only
from producers.clinic_keys import certified_entry, publish_keys
from producers.identity_cards import publish_identity_cards
from producers.registry_signing import INSURANCE_REGISTRY_NAME, KEY_REGISTRY_NAME, RegistrySigner
from schemas.envelope import Signer
from synthetic.population import CLINICS

CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "healthbook local CA"),
                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthbook local stack")])
REGISTRY_CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "healthbook local registry CA"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthbook local stack")])
CLINIC_DAYS = 730
CRL_DAYS = 7
CRL_RENEW_WITHIN = timedelta(days=3)  # 'make up' re-signs a list this close to its nextUpdate


class NotACertificateRequest(ValueError):
    """The file given is not a PEM certificate request signed by its own Ed25519 key."""


class RequestRefused(ValueError):
    """The certificate request asks for a subject this CA does not issue: only the named facility's."""


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Authority:
    """One CA of the local stack: its key, its self-signed certificate and its revocation list, in a directory."""

    directory: Path
    name: str  # file stem: <name>.key, <name>.crt, <name>.crl
    key: Ed25519PrivateKey
    certificate: x509.Certificate

    @classmethod
    def open(cls, directory: Path, name: str, subject: x509.Name) -> Authority:
        """Load the CA, making its key, certificate and empty revocation list on first use; renew a list near expiry."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
        if not key_path.exists():
            key = Ed25519PrivateKey.generate()
            now = datetime.now(UTC)
            certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                           .public_key(key.public_key()).serial_number(x509.random_serial_number())
                           .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=3650))
                           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                           .sign(key, None))
            write_owner_only(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
            cert_path.write_bytes(_pem(certificate))
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(loaded, Ed25519PrivateKey)
        authority = cls(directory, name, loaded, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        crl = authority.revocation_list()
        if crl is None:
            authority.write_crl({})
        elif crl.next_update_utc is None or crl.next_update_utc - datetime.now(UTC) < CRL_RENEW_WITHIN:
            authority.write_crl({entry.serial_number: entry.revocation_date_utc for entry in crl})
        return authority

    @property
    def crl_path(self) -> Path:
        """Where this CA's revocation list is kept."""
        return self.directory / f"{self.name}.crl"

    def revocation_list(self) -> x509.CertificateRevocationList | None:
        """The CA's current list, None before the first is written."""
        return x509.load_pem_x509_crl(self.crl_path.read_bytes()) if self.crl_path.exists() else None

    def issue(self, subject: x509.Name, public_key: CertificatePublicKeyTypes, days: int,
              not_before: datetime | None = None) -> x509.Certificate:
        """An end-entity certificate of public_key for subject, valid from not_before (default: 5 minutes ago)."""
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, None))

    def revoke(self, certificate: x509.Certificate, at: datetime | None = None) -> None:
        """Add a certificate this CA issued to its revocation list, revoked from `at` (default now)."""
        crl = self.revocation_list()
        revoked = {entry.serial_number: entry.revocation_date_utc for entry in crl} if crl else {}
        revoked.setdefault(certificate.serial_number, at or datetime.now(UTC))
        self.write_crl(revoked)

    def write_crl(self, revoked: dict[int, datetime], next_update: datetime | None = None) -> None:
        """Sign and write the revocation list (atomically: readers re-read it while running)."""
        now = datetime.now(UTC)
        next_update = next_update or now + timedelta(days=CRL_DAYS)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                   .last_update(min(now, next_update - timedelta(days=1))).next_update(next_update))
        for serial, when in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        staged = self.crl_path.with_suffix(".crl.new")
        staged.write_bytes(builder.sign(self.key, None).public_bytes(serialization.Encoding.PEM))
        os.replace(staged, self.crl_path)


@dataclass
class LocalCA:
    """The clinic CA and, apart from it, the registries' own CA with the two registry keys, in a PKI directory."""

    directory: Path
    clinics: Authority
    registries: Authority

    @classmethod
    def open(cls, directory: Path) -> LocalCA:
        """Load both CAs in directory, making them, their revocation lists and the registry keys on first use."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        ca = cls(directory, Authority.open(directory, "ca", CA_NAME),
                 Authority.open(directory, "registry-ca", REGISTRY_CA_NAME))
        for name, uid in ((KEY_REGISTRY_NAME, KEY_REGISTRY), (INSURANCE_REGISTRY_NAME, INSURANCE_REGISTRY)):
            cert_path = directory / f"{name}.crt"
            if cert_path.exists() and x509.load_pem_x509_certificate(
                    cert_path.read_bytes()).issuer == ca.registries.certificate.subject:
                continue  # made before; a stack from before the registries had their own CA gets new keys
            registry_key = Ed25519PrivateKey.generate()
            issued = ca.registries.issue(subject_name(uid, f"healthbook {name}"), registry_key.public_key(), 3650)
            write_owner_only(directory / f"{name}.key", registry_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            cert_path.write_bytes(_pem(issued))
        return ca

    @property
    def certificate(self) -> x509.Certificate:
        """The clinic CA's certificate: what HEALTHBOOK_TRUST_ANCHORS_FILE holds."""
        return self.clinics.certificate

    def certify_clinic(self, clinic_code: str, public_key: bytes, days: int = CLINIC_DAYS,
                       not_before: datetime | None = None, name: str | None = None) -> x509.Certificate:
        """A certificate naming the clinic's facility code (and, when given, its name) for its raw Ed25519 key."""
        return self.clinics.issue(clinic_subject(clinic_code, name), Ed25519PublicKey.from_public_bytes(public_key),
                                  days, not_before)

    def certify_request(self, request_pem: bytes, clinic_code: str, days: int = CLINIC_DAYS) -> x509.Certificate:
        """A facility certificate for the clinic the operator names, from its certificate request.

        The subject is built here, never copied: a request whose UID names anything but
        `MA_CSKCB:<clinic_code>` (a registry role above all) is refused. Only the facility name (O)
        is taken from the request.
        """
        try:
            request = x509.load_pem_x509_csr(request_pem)
            public_key = request.public_key()
            valid = request.is_signature_valid
            uids = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.USER_ID)]
            names = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        except ValueError as exc:
            raise NotACertificateRequest(f"not a PEM certificate request: {exc}") from None
        if not valid or not isinstance(public_key, Ed25519PublicKey):
            raise NotACertificateRequest("the request is not signed by its own Ed25519 key")
        wanted = CLINIC_PREFIX + clinic_code
        if any(uid != wanted for uid in uids) or len(uids) > 1:
            raise RequestRefused(
                f"the request asks for the subject UID {', '.join(uids)}; this CA issues only facility certificates "
                f"and this one only for {wanted}: a registry role or another facility is never certified here")
        return self.clinics.issue(clinic_subject(clinic_code, names[0] if names else None), public_key, days)

    def revoke(self, certificate: x509.Certificate, at: datetime | None = None) -> None:
        """Put a certificate on the revocation list of the CA that issued it; running processes re-read the list."""
        for authority in (self.clinics, self.registries):
            if certificate.issuer == authority.certificate.subject:
                authority.revoke(certificate, at)
                return
        raise RequestRefused(f"certificate {certificate.serial_number:x} was not issued by this stack's CAs "
                             f"(issuer {certificate.issuer.rfc4514_string()})")

    def trust_anchors(self, **options: Any) -> TrustAnchors:
        """What a deployment of this stack trusts: the clinic CA, the registry CA and both revocation lists."""
        return TrustAnchors.load(self.clinics.directory / "ca.crt", self.registries.directory / "registry-ca.crt",
                                 [self.clinics.crl_path, self.registries.crl_path], **options)

    def key_registry(self) -> RegistrySigner:
        """The key registry's signer, as kept in the PKI directory."""
        return RegistrySigner.load(self.directory, KEY_REGISTRY_NAME)

    def insurance_registry(self) -> RegistrySigner:
        """The insurance registry's signer, as kept in the PKI directory."""
        return RegistrySigner.load(self.directory, INSURANCE_REGISTRY_NAME)

    def entry(self, clinic_code: str, signer: Signer, not_before: datetime | None = None,
              days: int = CLINIC_DAYS) -> ClinicKey:
        """A registry entry for a key generated on this side, certified at once (the demo and tests only)."""
        return certified_entry(clinic_code, signer.key_id, self.certify_clinic(
            clinic_code, signer.public_key, days, not_before=not_before, name=CLINICS.get(clinic_code)))

    async def register(self, settings: Settings, entries: list[ClinicKey]) -> None:
        """Publish clinic-key entries signed by this stack's key registry."""
        await publish_keys(Broker.of(settings), settings.topics.clinic_keys, entries, self.key_registry())

    async def map_cards(self, settings: Settings, mappings: list[tuple[str, str]]) -> None:
        """Publish card mappings signed by this stack's insurance registry."""
        await publish_identity_cards(Broker.of(settings), settings.topics.identity_cards, mappings,
                                     self.insurance_registry())


def local_ca(settings: Settings) -> LocalCA:
    """The local stack's CA, in the directory of the trust anchors the settings name."""
    return LocalCA.open(settings.trust_anchors_file.parent)
