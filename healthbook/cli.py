"""The healthbook command: topics, clinic keys, publishing, the worker, the query consumer and the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

from rich.console import Console

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
        reports = asyncio.run(ingest(settings, Path(args.target), key_id=args.key_id, version=args.version))
    except IngestError as exc:
        sys.exit(str(exc))
    render.ingest_reports(Console(), reports)
    if not all(report.ok for report in reports):
        sys.exit(1)


def _worker(settings: Settings, _: argparse.Namespace) -> None:
    from streams.worker import main as worker_main

    sys.argv = [sys.argv[0], "worker"]
    worker_main()


def _query_consumer(settings: Settings, _: argparse.Namespace) -> None:
    from consumers.query import run

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


def _request(settings: Settings, args: argparse.Namespace) -> None:
    from healthbook import render
    from healthbook.identity_platform import IdentityPlatform, confirmation, ensure_identity_key

    async def run() -> dict:
        async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
            return await platform.ask(confirmation(args.personal_id, args.year))

    render.health_book(Console(), asyncio.run(run()), f"Sổ sức khỏe điện tử — {args.personal_id} — {args.year}")


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

    render.outcome_summary(Console(), asyncio.run(run()))


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
    ingest.set_defaults(run=_ingest)
    sub.add_parser("worker", help="run the stream worker (faust)").set_defaults(run=_worker)
    sub.add_parser("query-consumer", help="run the consent-gated query consumer").set_defaults(run=_query_consumer)
    request = sub.add_parser("request", help="confirm integration as a citizen (identity-platform stand-in)")
    request.add_argument("--personal-id", required=True)
    request.add_argument("--year", type=int, required=True)
    request.set_defaults(run=_request)
    sub.add_parser("counts", help="show the pipeline's outcome counts").set_defaults(run=_counts)
    sub.add_parser("demo", help="run the whole pipeline on a realistic batch").set_defaults(run=_demo)
    return top


def main(argv: list[str] | None = None) -> None:
    """Entry point of the healthbook command."""
    args = parser().parse_args(argv)
    args.run(Settings(), args)


if __name__ == "__main__":
    main()
