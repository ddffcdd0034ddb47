"""The local stack's certificate authority, made at set-up: it certifies clinic keys and the two registries.

In production the licensed CAs issue clinic certificates and this module is not used; the
deployment only points HEALTHBOOK_TRUST_ANCHORS_FILE at their certificates. The CA's private key
stays in the PKI directory and is given to no healthbook process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from domain.keyring import ClinicKey
from domain.registry_trust import INSURANCE_REGISTRY, KEY_REGISTRY, clinic_subject, subject_name
from healthbook.config import Settings
from healthbook.kafka import Broker
from producers.clinic_keys import certified_entry, publish_keys
from producers.identity_cards import publish_identity_cards
from producers.registry_signing import INSURANCE_REGISTRY_NAME, KEY_REGISTRY_NAME, RegistrySigner
from schemas.envelope import Signer
from synthetic.population import CLINICS

CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "healthbook local CA"),
                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthbook local stack")])
CLINIC_DAYS = 730


class NotACertificateRequest(ValueError):
    """The file given is not a PEM certificate request signed by its own Ed25519 key."""


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class LocalCA:
    """The CA's key and certificate in a PKI directory, with its revocation list and the registries' keys."""

    directory: Path
    key: Ed25519PrivateKey
    certificate: x509.Certificate

    @classmethod
    def open(cls, directory: Path) -> LocalCA:
        """Load the CA in directory, making it, its empty revocation list and the registry keys on first use."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if not key_path.exists():
            key = Ed25519PrivateKey.generate()
            now = datetime.now(UTC)
            certificate = (x509.CertificateBuilder().subject_name(CA_NAME).issuer_name(CA_NAME)
                           .public_key(key.public_key()).serial_number(x509.random_serial_number())
                           .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=3650))
                           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                           .sign(key, None))
            _write_private(key_path, key)
            cert_path.write_bytes(_pem(certificate))
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(loaded, Ed25519PrivateKey)
        ca = cls(directory, loaded, x509.load_pem_x509_certificate(cert_path.read_bytes()))
        if not (directory / "ca.crl").exists():
            ca._write_crl([])
        for name, uid in ((KEY_REGISTRY_NAME, KEY_REGISTRY), (INSURANCE_REGISTRY_NAME, INSURANCE_REGISTRY)):
            if not (directory / f"{name}.key").exists():
                registry_key = Ed25519PrivateKey.generate()
                issued = ca.issue(subject_name(uid, f"healthbook {name}"), registry_key.public_key(), 3650)
                _write_private(directory / f"{name}.key", registry_key)
                (directory / f"{name}.crt").write_bytes(_pem(issued))
        return ca

    def issue(self, subject: x509.Name, public_key: Ed25519PublicKey, days: int,
              not_before: datetime | None = None) -> x509.Certificate:
        """A certificate of public_key for subject, valid from not_before (default: 5 minutes ago) for days."""
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, None))

    def certify_clinic(self, clinic_code: str, public_key: bytes, days: int = CLINIC_DAYS,
                       not_before: datetime | None = None, name: str | None = None) -> x509.Certificate:
        """A certificate naming the clinic's facility code (and, when given, its name) for its raw Ed25519 key."""
        return self.issue(clinic_subject(clinic_code, name), Ed25519PublicKey.from_public_bytes(public_key), days,
                          not_before)

    def certify_request(self, request_pem: bytes, days: int = CLINIC_DAYS) -> x509.Certificate:
        """A certificate for a clinic's certificate request, after checking the request's own signature."""
        try:
            request = x509.load_pem_x509_csr(request_pem)
        except ValueError as exc:
            raise NotACertificateRequest(f"not a PEM certificate request: {exc}") from None
        public_key = request.public_key()
        if not request.is_signature_valid or not isinstance(public_key, Ed25519PublicKey):
            raise NotACertificateRequest("the request is not signed by its own Ed25519 key")
        return self.issue(request.subject, public_key, days)

    def revoke(self, certificate: x509.Certificate) -> None:
        """Add a certificate to the CA's revocation list; processes read the list when they start."""
        crl = x509.load_pem_x509_crl((self.directory / "ca.crl").read_bytes())
        serials = {entry.serial_number for entry in crl} | {certificate.serial_number}
        self._write_crl(sorted(serials))

    def _write_crl(self, serials: list[int]) -> None:
        now = datetime.now(UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject)
                   .last_update(now).next_update(now + timedelta(days=7)))
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        (self.directory / "ca.crl").write_bytes(builder.sign(self.key, None).public_bytes(serialization.Encoding.PEM))

    def key_registry(self) -> RegistrySigner:
        """The key registry's signer, as kept in the PKI directory."""
        return RegistrySigner.load(self.directory, KEY_REGISTRY_NAME)

    def insurance_registry(self) -> RegistrySigner:
        """The insurance registry's signer, as kept in the PKI directory."""
        return RegistrySigner.load(self.directory, INSURANCE_REGISTRY_NAME)

    def entry(self, clinic_code: str, signer: Signer, not_before: datetime | None = None) -> ClinicKey:
        """A registry entry for a key generated on this side, certified at once (the demo and tests only)."""
        return certified_entry(clinic_code, signer.key_id, self.certify_clinic(
            clinic_code, signer.public_key, not_before=not_before, name=CLINICS.get(clinic_code)))

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
