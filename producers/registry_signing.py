"""A registry's signing key and certificate: the key registry signs clinic-key entries, the insurance registry cards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.envelope import clinic_key_signing_input, identity_card_signing_input, now_millis

KEY_REGISTRY_NAME = "key-registry"
INSURANCE_REGISTRY_NAME = "insurance-registry"


_last_issued_ms = 0


def next_issue_millis() -> int:
    """Now in milliseconds, strictly later than any revision this process issued before.

    A record's issued_at is its revision: a revocation signed in the same millisecond as the
    registration it replaces must still read as newer, or the registration could be replayed over it.
    """
    global _last_issued_ms
    _last_issued_ms = max(now_millis(), _last_issued_ms + 1)
    return _last_issued_ms


class RegistryKeyMissing(FileNotFoundError):
    """This machine holds no signing key for the registry it was asked to write."""


@dataclass(frozen=True)
class RegistrySigner:
    """An Ed25519 key and the DER certificate naming its registry role."""

    private_key: Ed25519PrivateKey
    certificate: bytes

    @classmethod
    def load(cls, key_dir: Path, name: str) -> RegistrySigner:
        """Read <name>.key (PKCS#8 PEM) and <name>.crt (PEM) from the registry's key directory."""
        key_path, cert_path = key_dir / f"{name}.key", key_dir / f"{name}.crt"
        if not key_path.exists() or not cert_path.exists():
            raise RegistryKeyMissing(
                f"no {name} signing key at {key_path} (HEALTHBOOK_REGISTRY_KEY_DIR): only the {name} may write its "
                "topic; 'make up' makes the local stack's registry keys")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_path} is not an Ed25519 private key")
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(key, certificate.public_bytes(serialization.Encoding.DER))

    def clinic_key(self, record: dict[str, Any]) -> dict[str, Any]:
        """The version 3 clinic-key record, issued now unless it says when, signed by the key registry."""
        record = dict(record, issued_at=record.get("issued_at") or next_issue_millis())
        return dict(record, registry_certificate=self.certificate,
                    registry_signature=self.private_key.sign(clinic_key_signing_input(record)))

    def identity_card(self, record: dict[str, Any]) -> dict[str, Any]:
        """The card mapping with the insurance registry's certificate and signature."""
        return dict(record, registry_certificate=self.certificate,
                    registry_signature=self.private_key.sign(identity_card_signing_input(record)))
