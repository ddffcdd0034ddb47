"""Commands a clinic integrator runs: signing keys, the dossier certificate, card mappings, publishing, ingest."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.table import Table

from commands import render
from healthbook.config import Settings
from producers.clinic_keys import (
    KeyLifecycleError,
    load_signer,
    new_key_entry,
    publish_keys,
    registered_keys,
    revocation,
    rotation,
    save_signer,
)
from producers.dossier_signature import certificate_path
from producers.identity_cards import publish_identity_cards
from producers.ingest import IngestError, ingest
from producers.publisher import ClinicPublisher, InvalidVisit
from schemas.envelope import Signer, now_millis
from schemas.rules import RuleBroken, check_facility_code, check_personal_id
from synthetic.population import make_population


def since_ms(text: str | None) -> int | None:
    """Epoch milliseconds of an ISO time given on the command line."""
    return None if text is None else int(datetime.fromisoformat(text).timestamp() * 1000)


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds")


def clinic_register(settings: Settings, args: argparse.Namespace) -> None:
    """Generate a clinic key, keep its private half here and publish its public half."""
    try:
        check_facility_code(args.clinic)
    except RuleBroken as exc:
        sys.exit(f"clinic code {args.clinic!r} {exc.message}")
    signer = Signer.generate(args.key_id)
    path = save_signer(settings.key_dir, args.clinic, signer)
    asyncio.run(
        publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [new_key_entry(args.clinic, signer)]))
    print(f"registered key '{args.key_id}' of clinic {args.clinic}; private key kept at {path}")


def _run_key_change(change: Coroutine[Any, Any, None]) -> None:
    """Run a registry change; a change the registry's state does not allow exits with its reason."""
    try:
        asyncio.run(change)
    except KeyLifecycleError as exc:
        sys.exit(str(exc))


def clinic_rotate(settings: Settings, args: argparse.Namespace) -> None:
    """Switch a clinic to a new key; the old one stays valid for the grace period."""
    async def run() -> None:
        keyring = await registered_keys(settings.kafka_bootstrap, settings.topics.clinic_keys)
        signer = Signer.generate(args.to_key)
        entries = rotation(keyring.get(args.clinic, args.from_key), args.clinic, signer, now_millis(),
                           int(args.grace_hours * 3_600_000))
        save_signer(settings.key_dir, args.clinic, signer)
        await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, entries)

    _run_key_change(run())
    print(f"clinic {args.clinic} now signs with '{args.to_key}'; '{args.from_key}' stays valid for "
          f"{args.grace_hours:g} h, then signatures made with it are rejected")


def clinic_revoke(settings: Settings, args: argparse.Namespace) -> None:
    """Reject signatures made with a key from a time on."""
    at_ms = since_ms(args.at) or now_millis()

    async def run() -> None:
        keyring = await registered_keys(settings.kafka_bootstrap, settings.topics.clinic_keys)
        entry = revocation(keyring.get(args.clinic, args.key_id), at_ms)
        await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [entry])

    _run_key_change(run())
    print(f"key '{args.key_id}' of clinic {args.clinic}: signatures made from {_when(at_ms)} on are rejected")


def clinic_certificate(settings: Settings, args: argparse.Namespace) -> None:
    """Register the certificate that verifies a clinic's dossier signatures (CHUKYDONVI)."""
    pem = Path(args.certificate).read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        sys.exit(f"{args.certificate} is not a PEM X.509 certificate: {exc}")
    path = certificate_path(settings.key_dir, args.clinic)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    print(f"dossiers of clinic {args.clinic} signed in CHUKYDONVI are now verified against "
          f"'{certificate.subject.rfc4514_string()}' ({path})")


def clinic_list(settings: Settings, args: argparse.Namespace) -> None:
    """Show every registered key and its state."""
    keyring = asyncio.run(registered_keys(settings.kafka_bootstrap, settings.topics.clinic_keys))
    table = Table(title="Registered clinic keys", title_justify="left")
    for column in ("clinic", "key id", "registered", "revoked from"):
        table.add_column(column)
    for entry in keyring.entries():
        if args.clinic in (None, entry.clinic_code):
            render.plain_row(table, entry.clinic_code, entry.key_id, _when(entry.registered_at_ms),
                             _when(entry.revoked_at_ms))
    render.console().print(table)


def identity_map(settings: Settings, args: argparse.Namespace) -> None:
    """Record which citizen a BHYT card belongs to."""
    try:
        check_personal_id(args.personal_id, None, None)
    except RuleBroken as exc:
        sys.exit(f"personal ID {args.personal_id!r} {exc.message}")
    asyncio.run(publish_identity_cards(settings.kafka_bootstrap, settings.topics.identity_cards,
                                       [(args.card, args.personal_id)]))
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

    async def run() -> tuple[int, int]:
        failed = 0
        async with ClinicPublisher(settings.kafka_bootstrap, settings.topics.visits, args.clinic, signer) as pub:
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
