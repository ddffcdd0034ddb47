"""Clinic signing keys: generated and kept by the clinic, public halves published to the registry topic."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.keyring import ClinicKey, Keyring
from domain.registry_trust import TrustAnchors, clinic_subject, raw_ed25519
from healthbook import kafka
from healthbook.secret_files import write_owner_only
from healthbook.topic_follower import TopicFollower
from producers.registry_signing import RegistrySigner
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis


class KeyFileMissing(FileNotFoundError):
    """No private key file for this clinic and key id."""


def key_path(key_dir: Path, clinic_code: str, key_id: str) -> Path:
    """Where a clinic's private key is kept on the clinic's machine."""
    return key_dir / clinic_code / f"{key_id}.pem"


def save_signer(key_dir: Path, clinic_code: str, signer: Signer) -> Path:
    """Write the private key as PKCS#8 PEM readable only by its owner."""
    path = key_path(key_dir, clinic_code, signer.key_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_owner_only(path, pem)
    return path


class KeyExists(FileExistsError):
    """A key with this id is already kept for the clinic; a new key needs a new id."""


def keygen(key_dir: Path, clinic_code: str, key_id: str, name: str | None = None) -> tuple[Path, Path]:
    """Make a clinic key pair here (private half owner-only) and its certificate request; return both paths.

    name, the facility's name, goes into the request's organisation (O): the name citizens read.
    """
    if key_path(key_dir, clinic_code, key_id).exists():
        raise KeyExists(f"clinic {clinic_code} already has a key '{key_id}' at "
                        f"{key_path(key_dir, clinic_code, key_id)}; choose a new --key-id to rotate")
    signer = Signer.generate(key_id)
    path = save_signer(key_dir, clinic_code, signer)
    request = x509.CertificateSigningRequestBuilder().subject_name(clinic_subject(clinic_code, name)).sign(
        signer.private_key, None)
    csr_path = path.with_suffix(".csr")
    csr_path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path, csr_path


def load_signer(key_dir: Path, clinic_code: str, key_id: str) -> Signer:
    """Read a clinic's private key written by save_signer."""
    path = key_path(key_dir, clinic_code, key_id)
    if not path.exists():
        raise KeyFileMissing(
            f"no private key for clinic {clinic_code} key '{key_id}' at {path}; "
            "make one with 'healthbook clinic keygen'"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Signer(key_id, key)


async def publish_keys(broker: kafka.Broker, topic: str, entries: list[ClinicKey], registry: RegistrySigner) -> None:
    """Write clinic keys, signed by the key registry, to the compacted registry topic and wait for the broker."""
    records = [(entry.registry_key, wire.encode(catalogue.CLINIC_KEY, registry.clinic_key(entry.to_record())))
               for entry in entries]
    await kafka.send_all(broker, "clinic-keys", topic, records)


def certified_entry(clinic_code: str, key_id: str, certificate: x509.Certificate) -> ClinicKey:
    """The registry entry for a clinic key certified by a CA (the key is the certificate's)."""
    return ClinicKey(clinic_code, key_id, raw_ed25519(certificate), now_millis(),
                     certificate=certificate.public_bytes(serialization.Encoding.DER))


class KeyLifecycleError(ValueError):
    """A rotation or revocation that the registry's current state does not allow."""


def rotation(old: ClinicKey | None, clinic_code: str, new: ClinicKey, now_ms: int, grace_ms: int) -> list[ClinicKey]:
    """Registry entries that rotate a clinic to a new certified key: the new key now, the old revoked after grace."""
    if old is None:
        raise KeyLifecycleError(f"clinic {clinic_code} has no such key to rotate from; see 'healthbook clinic list'")
    if old.revoked_at_ms is not None and old.revoked_at_ms <= now_ms:
        raise KeyLifecycleError(f"key '{old.key_id}' of clinic {clinic_code} is already revoked")
    if new.key_id == old.key_id:
        raise KeyLifecycleError("the new key needs a key id of its own")
    return [ClinicKey(clinic_code, new.key_id, new.public_key, now_ms, certificate=new.certificate),
            revocation(old, now_ms + grace_ms)]


def revocation(entry: ClinicKey | None, at_ms: int) -> ClinicKey:
    """The registry entry that revokes a key from at_ms on; an earlier revocation stands."""
    if entry is None:
        raise KeyLifecycleError("no such key is registered; see 'healthbook clinic list'")
    if entry.revoked_at_ms is not None and entry.revoked_at_ms <= at_ms:
        return entry
    return ClinicKey(entry.clinic_code, entry.key_id, entry.public_key, entry.registered_at_ms, at_ms,
                     entry.certificate)


async def registered_keys(broker: kafka.Broker, topic: str, trust: TrustAnchors | None) -> Keyring:
    """The registry as it stands now, as a worker trusting these anchors sees it."""
    keyring = Keyring(trust)
    await TopicFollower(broker, topic, keyring.apply).snapshot()
    return keyring
