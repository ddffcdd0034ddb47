"""Commands a clinic integrator runs: signing keys, the dossier certificate, card mappings, publishing, ingest."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.table import Table

from commands import render
from commands.local_ca import NotACertificateRequest, RequestRefused, local_ca
from domain.keyring import ClinicKey
from domain.registry_trust import CLINIC_PREFIX, Untrusted
from healthbook import kafka
from healthbook.broker_acls import clinic_grants, clinic_principal
from healthbook.config import PROJECT_ROOT, Settings
from producers.clinic_keys import (
    KeyExists,
    KeyLifecycleError,
    certified_entry,
    keygen,
    load_signer,
    publish_keys,
    registered_keys,
    revocation,
    rotation,
)
from producers.identity_cards import publish_identity_cards
from producers.publisher import ClinicPublisher, InvalidVisit
from producers.registry_signing import INSURANCE_REGISTRY_NAME, KEY_REGISTRY_NAME, RegistrySigner
from producers.xml_ingest.dossier_signature import certificate_path, check_signing_certificate
from producers.xml_ingest.ingest import IngestError, ingest
from schemas.envelope import now_millis
from schemas.rules import RuleBroken, check_facility_code, check_personal_id
from synthetic.population import make_population


def since_ms(text: str | None) -> int | None:
    """Epoch milliseconds of an ISO time given on the command line."""
    return None if text is None else int(datetime.fromisoformat(text).timestamp() * 1000)


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds")


def _clinic_code(code: str) -> str:
    try:
        check_facility_code(code)
    except RuleBroken as exc:
        sys.exit(f"clinic code {code!r} {exc.message}")
    return code


def clinic_keygen(settings: Settings, args: argparse.Namespace) -> None:
    """On the clinic's machine: make a key pair (private half owner-only) and the certificate request to send."""
    try:
        key, request = keygen(settings.key_dir, _clinic_code(args.clinic), args.key_id, args.name)
    except KeyExists as exc:
        sys.exit(str(exc))
    print(f"private key kept at {key} (owner-only; it never leaves this machine)\n"
          f"certificate request: {request}\n"
          f"next: have a trusted CA certify the request (local stack: 'healthbook ca issue --clinic {args.clinic} "
          f"{request}'), then the "
          f"operator runs 'healthbook clinic register --clinic {args.clinic} --key-id {args.key_id} "
          "--certificate FILE'")


def _certificate(settings: Settings, args: argparse.Namespace) -> x509.Certificate:
    """The certificate to register: given, or issued now by the local CA for a given public key."""
    if args.certificate:
        try:
            return x509.load_pem_x509_certificate(Path(args.certificate).read_bytes())
        except (OSError, ValueError) as exc:
            sys.exit(f"{args.certificate} is not a readable PEM certificate: {exc}")
    try:
        public = serialization.load_pem_public_key(Path(args.public_key).read_bytes())
    except (OSError, ValueError) as exc:
        sys.exit(f"{args.public_key} is not a readable PEM public key: {exc}")
    if not isinstance(public, Ed25519PublicKey):
        sys.exit(f"{args.public_key} is not an Ed25519 public key, the only signing algorithm accepted")
    return local_ca(settings).certify_clinic(args.clinic, public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _checked_entry(settings: Settings, clinic: str, key_id: str, certificate: x509.Certificate) -> ClinicKey:
    """The entry for a certificate the workers will accept: issued by a trusted CA, for this clinic, valid now."""
    try:
        settings.trust_anchors().certificate(certificate.public_bytes(serialization.Encoding.DER),
                                             CLINIC_PREFIX + clinic, datetime.now(UTC))
        return certified_entry(clinic, key_id, certificate)
    except Untrusted as exc:
        sys.exit(f"not registered: {exc.message}")


def clinic_register(settings: Settings, args: argparse.Namespace) -> None:
    """Register a clinic key certified by a trusted CA, signed by the key registry."""
    broker = kafka.Broker.of(settings)
    entry = _checked_entry(settings, _clinic_code(args.clinic), args.key_id, _certificate(settings, args))
    registry = RegistrySigner.load(settings.registry_key_dir, KEY_REGISTRY_NAME)
    asyncio.run(publish_keys(broker, settings.topics.clinic_keys, [entry], registry))
    print(f"registered key '{args.key_id}' of clinic {args.clinic}; re-drive what waited for it with "
          "'healthbook dlq retry --reason unknown_clinic'")


def _run_key_change(change: Coroutine[Any, Any, None]) -> None:
    """Run a registry change; a change the registry's state does not allow exits with its reason."""
    try:
        asyncio.run(change)
    except KeyLifecycleError as exc:
        sys.exit(str(exc))


def clinic_rotate(settings: Settings, args: argparse.Namespace) -> None:
    """Switch a clinic to a new certified key; the old one stays valid for the grace period."""
    broker = kafka.Broker.of(settings)
    new = _checked_entry(settings, _clinic_code(args.clinic), args.to_key, _certificate(settings, args))
    registry = RegistrySigner.load(settings.registry_key_dir, KEY_REGISTRY_NAME)

    async def run() -> None:
        keyring = await registered_keys(broker, settings.topics.clinic_keys,
                                        settings.trust_anchors())
        entries = rotation(keyring.get(args.clinic, args.from_key), args.clinic, new, now_millis(),
                           int(args.grace_hours * 3_600_000))
        await publish_keys(broker, settings.topics.clinic_keys, entries, registry)

    _run_key_change(run())
    print(f"clinic {args.clinic} now signs with '{args.to_key}'; '{args.from_key}' stays valid for "
          f"{args.grace_hours:g} h, then signatures made with it are rejected")


def clinic_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Reject signatures made with a key from a time on."""
    broker = kafka.Broker.of(settings)
    at_ms = since_ms(args.at) or now_millis()
    registry = RegistrySigner.load(settings.registry_key_dir, KEY_REGISTRY_NAME)

    async def run() -> None:
        keyring = await registered_keys(broker, settings.topics.clinic_keys,
                                        settings.trust_anchors())
        entry = revocation(keyring.get(args.clinic, args.key_id), at_ms)
        await publish_keys(broker, settings.topics.clinic_keys, [entry], registry)

    _run_key_change(run())
    print(f"key '{args.key_id}' of clinic {args.clinic}: signatures made from {_when(at_ms)} on are rejected")


def broker_add_clinic(settings: Settings, args: argparse.Namespace) -> None:
    """Give a clinic its own broker principal on the local stack, allowed only to write the visits topic."""
    broker = kafka.Broker.of(settings)
    principal = clinic_principal(_clinic_code(args.clinic))
    made = subprocess.run(["bash", str(PROJECT_ROOT / "stack" / "stack.sh"), "add-principal", principal],
                          capture_output=True, text=True)
    if made.returncode:
        sys.exit(made.stderr.strip() or made.stdout.strip())
    asyncio.run(kafka.grant(broker, clinic_grants(settings, args.clinic)))
    print(f"clinic {args.clinic} logs in to the broker as {principal} (password in "
          f"{settings.kafka_credentials_dir / principal}; hand it to the clinic only) and may write "
          f"{settings.topics.visits}, nothing else. Running this again keeps the password and the grant; run it "
          "once per topic prefix the clinic publishes to")


def ca_init(settings: Settings, args: argparse.Namespace) -> None:
    """Make the local CA, its revocation list and the registries' keys, once."""
    ca = local_ca(settings)
    print(f"local CA '{ca.certificate.subject.rfc4514_string()}' in {ca.directory}")


def ca_issue(settings: Settings, args: argparse.Namespace) -> None:
    """Certify a clinic's certificate request with the local CA."""
    request = Path(args.request)
    try:
        certificate = local_ca(settings).certify_request(request.read_bytes(), _clinic_code(args.clinic), args.days)
    except (OSError, NotACertificateRequest, RequestRefused) as exc:
        sys.exit(f"{request}: {exc}")
    out = Path(args.out) if args.out else request.with_suffix(".crt")
    out.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    print(f"certified '{certificate.subject.rfc4514_string()}' until {certificate.not_valid_after_utc:%Y-%m-%d}: {out}")


def ca_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Put a certificate on the local CA's revocation list."""
    try:
        certificate = x509.load_pem_x509_certificate(Path(args.certificate).read_bytes())
        local_ca(settings).revoke(certificate)
    except (OSError, ValueError) as exc:
        sys.exit(f"{args.certificate}: {exc}")
    print(f"certificate {certificate.serial_number:x} is revoked from now on; running workers re-read the list within "
          "seconds and refuse what its key signs from now, while what it signed before stays valid")


def clinic_certificate(settings: Settings, args: argparse.Namespace) -> None:
    """Register the certificate that verifies a clinic's dossier signatures (CHUKYDONVI)."""
    clinic = _clinic_code(args.clinic)
    try:
        pem = Path(args.certificate).read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        sys.exit(f"{args.certificate} is not a readable PEM X.509 certificate: {exc}")
    try:
        check_signing_certificate(settings.trust_anchors(), certificate, clinic)
    except Untrusted as exc:
        sys.exit(f"not registered: {exc.message}")
    path = certificate_path(settings.key_dir, clinic)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    print(f"dossiers of clinic {args.clinic} signed in CHUKYDONVI are now verified against "
          f"'{certificate.subject.rfc4514_string()}' ({path})")


def clinic_list(settings: Settings, args: argparse.Namespace) -> None:
    """Show every registered key and its state."""
    broker = kafka.Broker.of(settings)
    keyring = asyncio.run(registered_keys(broker, settings.topics.clinic_keys,
                                       settings.trust_anchors()))
    table = Table(title="Registered clinic keys", title_justify="left")
    for column in ("clinic", "key id", "registered", "certificate valid until", "revoked from"):
        table.add_column(column)
    for entry in keyring.entries():
        if args.clinic in (None, entry.clinic_code):
            render.plain_row(table, entry.clinic_code, entry.key_id, _when(entry.registered_at_ms),
                             _when(entry.valid_until_ms), _when(entry.revoked_at_ms))
    render.console().print(table)


def identity_map(settings: Settings, args: argparse.Namespace) -> None:
    """Record which citizen a BHYT card belongs to."""
    broker = kafka.Broker.of(settings)
    try:
        check_personal_id(args.personal_id, None, None)
    except RuleBroken as exc:
        sys.exit(f"personal ID {args.personal_id!r} {exc.message}")
    registry = RegistrySigner.load(settings.registry_key_dir, INSURANCE_REGISTRY_NAME)
    asyncio.run(publish_identity_cards(broker, settings.topics.identity_cards,
                                       [(args.card, args.personal_id)], registry))
    print(f"BHYT card {args.card} belongs to {args.personal_id}; visits waiting for it will be projected")


def publish(settings: Settings, args: argparse.Namespace) -> None:
    """Validate, sign and publish a clinic's visit events from a JSON-lines file (or invented ones)."""
    if args.synthetic:
        _, events = make_population(args.seed, max(1, args.synthetic // 10), args.synthetic, [args.clinic],
                                    (2025, 2026))
    elif args.file:
        events = [json.loads(line) for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        sys.exit("give a JSON-lines FILE of visit events or --synthetic N")
    signer = load_signer(settings.key_dir, args.clinic, args.key_id)
    broker = kafka.clinic_broker(settings, args.clinic)

    async def run() -> tuple[int, int]:
        failed = 0
        async with ClinicPublisher(broker, settings.topics.visits, args.clinic, signer,
                                   max_visit_bytes=settings.max_visit_bytes) as pub:
            pending = []
            for line, event in enumerate(events, 1):
                try:
                    pending.append(await pub.publish(event))
                except InvalidVisit as exc:
                    failed += 1
                    print(f"line {line}: {exc}", file=sys.stderr)
            await asyncio.gather(*pending)
        return len(pending), failed

    sent, failed = asyncio.run(run())
    print(f"published {sent} visit(s) for clinic {args.clinic}; {failed} refused before sending")
    if failed:
        sys.exit(1)


def ingest_dossiers(settings: Settings, args: argparse.Namespace) -> None:
    """Publish (or only check) GIAMDINHHS dossiers; exit 1 when anything was rejected."""
    try:
        reports = asyncio.run(ingest(settings, Path(args.target), key_id=args.key_id, version=args.version,
                                     check_only=args.check))
    except IngestError as exc:
        sys.exit(str(exc))
    render.ingest_reports(render.console(), reports)
    if not all(report.ok for report in reports):
        sys.exit(1)
