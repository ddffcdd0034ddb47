"""The healthbook command: topics, clinic keys, publishing, the worker, the query consumer and the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from healthbook.config import Settings


def _topics(settings: Settings, _: argparse.Namespace) -> None:
    from healthbook.topics import ensure_topics, topic_specs

    created = asyncio.run(ensure_topics(settings))
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        print(f"{spec.name:32} {spec.partitions:>2} partitions  {state:7}  {spec.purpose}")


def _migrate(settings: Settings, _: argparse.Namespace) -> None:
    import asyncpg

    from healthbook.database import migrate

    async def run() -> list[int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print(f"applied migrations {applied}" if applied else "database schema is up to date")


def _clinic_register(settings: Settings, args: argparse.Namespace) -> None:
    from producers.clinic_keys import new_key_entry, publish_keys, save_signer
    from schemas.envelope import Signer
    from schemas.rules import RuleBroken, check_facility_code

    try:
        check_facility_code(args.clinic)
    except RuleBroken as exc:
        sys.exit(f"clinic code {args.clinic!r} {exc.message}")
    signer = Signer.generate(args.key_id)
    path = save_signer(settings.key_dir, args.clinic, signer)
    asyncio.run(
        publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [new_key_entry(args.clinic, signer)])
    )
    print(f"registered key '{args.key_id}' of clinic {args.clinic}; private key kept at {path}")


def _run_key_change(change: Any) -> None:
    """Run a registry change; a change the registry's state does not allow exits with its reason."""
    from producers.clinic_keys import KeyLifecycleError

    try:
        asyncio.run(change)
    except KeyLifecycleError as exc:
        sys.exit(str(exc))


def _clinic_rotate(settings: Settings, args: argparse.Namespace) -> None:
    from producers.clinic_keys import publish_keys, registered_keys, rotation, save_signer
    from schemas.envelope import Signer, now_millis

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


def _clinic_revoke(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import datetime

    from producers.clinic_keys import publish_keys, registered_keys, revocation
    from schemas.envelope import now_millis

    at_ms = _since_ms(args.at) or now_millis()

    async def run() -> None:
        keyring = await registered_keys(settings.kafka_bootstrap, settings.topics.clinic_keys)
        entry = revocation(keyring.get(args.clinic, args.key_id), at_ms)
        await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [entry])

    _run_key_change(run())
    print(f"key '{args.key_id}' of clinic {args.clinic}: signatures made from "
          f"{datetime.fromtimestamp(at_ms / 1000).isoformat(timespec='seconds')} on are rejected")


def _clinic_certificate(settings: Settings, args: argparse.Namespace) -> None:
    from cryptography import x509

    from producers.dossier_signature import certificate_path

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


def _clinic_list(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import datetime

    from rich.table import Table

    from healthbook import render
    from producers.clinic_keys import registered_keys

    def when(ms: int | None) -> str:
        return "" if ms is None else datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds")

    keyring = asyncio.run(registered_keys(settings.kafka_bootstrap, settings.topics.clinic_keys))
    table = Table(title="Registered clinic keys", title_justify="left")
    for column in ("clinic", "key id", "registered", "revoked from"):
        table.add_column(column)
    for entry in keyring.entries():
        if args.clinic in (None, entry.clinic_code):
            table.add_row(entry.clinic_code, entry.key_id, when(entry.registered_at_ms), when(entry.revoked_at_ms))
    render.console().print(table)


def _identity_map(settings: Settings, args: argparse.Namespace) -> None:
    from producers.clinic_keys import publish_identity_cards
    from schemas.rules import RuleBroken, check_personal_id

    try:
        check_personal_id(args.personal_id, None, None)
    except RuleBroken as exc:
        sys.exit(f"personal ID {args.personal_id!r} {exc.message}")
    asyncio.run(publish_identity_cards(settings.kafka_bootstrap, settings.topics.identity_cards,
                                       [(args.card, args.personal_id)]))
    print(f"BHYT card {args.card} belongs to {args.personal_id}; visits waiting for it will be projected")


def _publish(settings: Settings, args: argparse.Namespace) -> None:
    from producers.clinic_keys import load_signer
    from producers.publisher import ClinicPublisher, InvalidVisit
    from producers.synthetic import make_population

    if args.synthetic:
        _, events = make_population(
            args.seed, max(1, args.synthetic // 10), args.synthetic, [args.clinic], (2025, 2026)
        )
    elif args.file:
        events = [json.loads(line) for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        sys.exit("give a JSON-lines FILE of visit events or --synthetic N")
    signer = load_signer(settings.key_dir, args.clinic, args.key_id)

    async def run() -> tuple[int, int]:
        sent = failed = 0
        async with ClinicPublisher(settings.kafka_bootstrap, settings.topics.visits, args.clinic, signer) as pub:
            pending = []
            for line, event in enumerate(events, 1):
                try:
                    pending.append(await pub.publish(event))
                except InvalidVisit as exc:
                    failed += 1
                    print(f"line {line}: {exc}", file=sys.stderr)
            await asyncio.gather(*pending)
            sent = len(pending)
        return sent, failed

    sent, failed = asyncio.run(run())
    print(f"published {sent} visit(s) for clinic {args.clinic}; {failed} refused before sending")
    if failed:
        sys.exit(1)


def _ingest(settings: Settings, args: argparse.Namespace) -> None:
    from healthbook import render
    from producers.ingest import IngestError, ingest

    try:
        reports = asyncio.run(ingest(settings, Path(args.target), key_id=args.key_id, version=args.version,
                                     check_only=args.check))
    except IngestError as exc:
        sys.exit(str(exc))
    render.ingest_reports(render.console(), reports)
    if not all(report.ok for report in reports):
        sys.exit(1)


def _worker(settings: Settings, _: argparse.Namespace) -> None:
    from streams.worker import main as worker_main

    sys.argv = [sys.argv[0], "worker"]
    worker_main()


def _query_consumer(settings: Settings, _: argparse.Namespace) -> None:
    from consumers.query import run
    from healthbook.observability import use_json_logs

    if settings.log_format == "json":
        use_json_logs()
    else:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


def _request(settings: Settings, args: argparse.Namespace) -> None:
    from healthbook import render
    from healthbook.identity_platform import IdentityPlatform, confirmation, ensure_identity_key

    async def run() -> dict:
        async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
            return await platform.ask(confirmation(args.personal_id, args.year))

    title = f"Sổ sức khỏe điện tử — {args.personal_id} — {args.year}"
    render.health_book(render.console(), asyncio.run(run()), title)


def _counts(settings: Settings, _: argparse.Namespace) -> None:
    import asyncpg

    from healthbook import render
    from streams.projection import read_counts

    async def run() -> dict[str, int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await read_counts(conn)
        finally:
            await conn.close()

    render.outcome_summary(render.console(), asyncio.run(run()))


def _since_ms(text: str | None) -> int | None:
    from datetime import datetime

    return None if text is None else int(datetime.fromisoformat(text).timestamp() * 1000)


def _dlq_entries(settings: Settings, args: argparse.Namespace) -> list:
    from consumers.dlq import read_entries, select

    entries = asyncio.run(read_entries(settings.kafka_bootstrap, settings.topics.dead_letter))
    return select(entries, reason=args.reason, clinic=args.clinic, since_ms=_since_ms(args.since),
                  offsets=set(args.offset) if getattr(args, "offset", None) else None)


def _dlq_list(settings: Settings, args: argparse.Namespace) -> None:
    from rich.table import Table

    from healthbook import render

    entries = _dlq_entries(settings, args)
    table = Table(title=f"Dead letters ({len(entries)})", title_justify="left")
    for column in ("offset", "failed at", "reason", "clinic", "source", "why"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        r = entry.record
        table.add_row(f"{entry.partition}:{entry.offset}" + (" (retried, failed again)" if entry.failed_again else ""),
                      str(r["failed_at"])[:19], r["reason_code"], r["clinic_code"] or "-",
                      f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}", r["reason"])
    render.console().print(table)


def _dlq_show(settings: Settings, args: argparse.Namespace) -> None:
    entries = _dlq_entries(settings, args)
    if not entries:
        sys.exit("no dead letter matches; see 'healthbook dlq list'")
    for entry in entries:
        record = dict(entry.record)
        value = record.pop("original_value") or b""
        record["original_key"] = (record["original_key"] or b"").decode("utf-8", "replace")
        record["original_bytes"] = len(value)
        record["original_head_hex"] = value[:32].hex()
        print(json.dumps({"dlq_partition": entry.partition, "dlq_offset": entry.offset, **record},
                         ensure_ascii=False, indent=2, default=str))


def _dlq_retry(settings: Settings, args: argparse.Namespace) -> None:
    from consumers.dlq import retry
    from healthbook.database import connect_pool

    entries = _dlq_entries(settings, args)

    async def run() -> object:
        pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await retry(settings, pool, entries)
        finally:
            await pool.close()

    report = asyncio.run(run())
    print(f"re-driven {len(report.retried)}; skipped {len(report.already_retried)} already re-driven, "
          f"{len(report.failed_again)} that failed again after a re-drive (fix the cause and publish anew), "
          f"{len(report.not_visits)} not from the visits topic")


def _status(settings: Settings, _: argparse.Namespace) -> None:
    from rich.table import Table

    from consumers.status import status
    from healthbook import render

    found = asyncio.run(status(settings))
    console = render.console()
    table = Table(title=f"{settings.topics.visits}: lag per partition", title_justify="left")
    for column in ("partition", "end offset", "applied", "lag"):
        table.add_column(column, justify="right")
    for p in found.partitions:
        table.add_row(str(p.partition), str(p.end_offset), str(p.applied), str(p.lag))
    console.print(table)
    render.outcome_summary(console, found.counts)
    console.print(f"visits waiting for a BHYT card mapping: {found.pending_visits}")
    error = found.last_error
    console.print("last error: " + (f"{error['at']:%Y-%m-%d %H:%M:%S} {error['worker_id']}: {error['message']}"
                                    if error else "none recorded"), markup=False)


def _replay(settings: Settings, _: argparse.Namespace) -> None:
    from consumers.replay import replay
    from healthbook import render

    report = asyncio.run(replay(settings, render.console()))
    print(f"replayed {report.messages} messages into {report.rows} health-book rows "
          f"({report.merged_from_live} newer rows kept from the live table) and swapped it in")


def _analytics(settings: Settings, args: argparse.Namespace) -> None:
    from consumers.analytics import read_deidentified, visits_per_diagnosis_province_month
    from healthbook import render

    counts = visits_per_diagnosis_province_month(
        asyncio.run(read_deidentified(settings.kafka_bootstrap, settings.topics.deidentified)))
    render.analytics(render.console(), counts, args.top, "Visits per diagnosis, province and month (de-identified)")


def _demo(settings: Settings, _: argparse.Namespace) -> None:
    from healthbook.demo import main as demo_main

    sys.exit(demo_main(settings))


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(prog="healthbook", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="create the topics healthbook needs (idempotent)").set_defaults(run=_topics)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    clinic = sub.add_parser("clinic", help="clinic signing keys").add_subparsers(dest="action", required=True)
    register = clinic.add_parser("register", help="generate a clinic key and publish its public half")
    register.add_argument("--clinic", required=True, help="facility code (MA_CSKCB), 5 digits")
    register.add_argument("--key-id", default="k1")
    register.set_defaults(run=_clinic_register)
    rotate = clinic.add_parser("rotate", help="switch a clinic to a new key; the old one expires after a grace period")
    rotate.add_argument("--clinic", required=True)
    rotate.add_argument("--from-key", required=True, help="the key id in use now")
    rotate.add_argument("--to-key", required=True, help="the new key's id")
    rotate.add_argument("--grace-hours", type=float, default=24.0, help="how long the old key stays valid (24)")
    rotate.set_defaults(run=_clinic_rotate)
    revoke = clinic.add_parser("revoke", help="reject signatures made with a key from a time on")
    revoke.add_argument("--clinic", required=True)
    revoke.add_argument("--key-id", required=True)
    revoke.add_argument("--at", help="ISO time the key stopped being trustworthy (default: now)")
    revoke.set_defaults(run=_clinic_revoke)
    certificate = clinic.add_parser("certificate", help="register the certificate that signs a clinic's dossiers")
    certificate.add_argument("--clinic", required=True)
    certificate.add_argument("certificate", help="PEM X.509 certificate of the facility's XML signature")
    certificate.set_defaults(run=_clinic_certificate)
    listing = clinic.add_parser("list", help="show registered keys and their state")
    listing.add_argument("--clinic")
    listing.set_defaults(run=_clinic_list)
    identity = sub.add_parser("identity", help="identity mappings").add_subparsers(dest="action", required=True)
    mapping = identity.add_parser("map", help="record which citizen a BHYT card belongs to")
    mapping.add_argument("--card", required=True, help="BHYT card number (MA_THE_BHYT)")
    mapping.add_argument("--personal-id", required=True)
    mapping.set_defaults(run=_identity_map)
    publish = sub.add_parser("publish", help="sign and publish a clinic's visit events")
    publish.add_argument("file", nargs="?", help="JSON lines, one VisitEvent per line")
    publish.add_argument("--clinic", required=True)
    publish.add_argument("--key-id", default="k1")
    publish.add_argument("--synthetic", type=int, default=0, help="publish N invented visits instead of a file")
    publish.add_argument("--seed", type=int, default=1)
    publish.set_defaults(run=_publish)
    ingest = sub.add_parser("ingest", help="publish GIAMDINHHS (QĐ 4750) dossier files of a clinic")
    ingest.add_argument("target", help="a dossier file, or a directory of them")
    ingest.add_argument("--key-id", default="k1", help="which of the facility's registered keys signs")
    ingest.add_argument("--version", type=int, help="visit version to publish (default: NGAYLAP as yyyyMMdd)")
    ingest.add_argument("--check", action="store_true", help="read and validate only; publish nothing")
    ingest.set_defaults(run=_ingest)
    sub.add_parser("worker", help="run the stream worker (faust)").set_defaults(run=_worker)
    sub.add_parser("query-consumer", help="run the consent-gated query consumer").set_defaults(run=_query_consumer)
    request = sub.add_parser("request", help="confirm integration as a citizen (identity-platform stand-in)")
    request.add_argument("--personal-id", required=True)
    request.add_argument("--year", type=int, required=True)
    request.set_defaults(run=_request)
    sub.add_parser("counts", help="show the pipeline's outcome counts").set_defaults(run=_counts)
    sub.add_parser("status", help="lag per partition, counts by outcome, last error").set_defaults(run=_status)
    sub.add_parser("replay", help="rebuild the health book from the visits topic and swap it in").set_defaults(
        run=_replay)
    analytics = sub.add_parser("analytics", help="visits per diagnosis, province and month, de-identified")
    analytics.add_argument("--top", type=int, default=20)
    analytics.set_defaults(run=_analytics)
    dlq = sub.add_parser("dlq", help="the dead-letter topic").add_subparsers(dest="action", required=True)
    for name, run, text in (("list", _dlq_list, "list dead letters"), ("show", _dlq_show, "show dead letters in full"),
                            ("retry", _dlq_retry, "re-drive dead letters once their cause is fixed")):
        action = dlq.add_parser(name, help=text)
        action.add_argument("--reason", help="reason code, e.g. unknown_clinic")
        action.add_argument("--clinic", help="facility code")
        action.add_argument("--since", help="ISO time: only dead letters from then on")
        action.add_argument("--offset", type=int, action="append", help="dead-letter offset (repeatable)")
        action.set_defaults(run=run)
    sub.add_parser("demo", help="run the whole pipeline on a realistic batch").set_defaults(run=_demo)
    return top


def main(argv: list[str] | None = None) -> None:
    """Entry point of the healthbook command."""
    args = parser().parse_args(argv)
    args.run(Settings(), args)


if __name__ == "__main__":
    main()
