"""The healthbook command: topics, clinic keys, publishing, the worker, the query consumer, operator tools, the demo."""

from __future__ import annotations

import argparse
import importlib
import sys

from commands.identity_standin import DEMO_PASSCODE
from consumers.trusted_keys import TrustedKeysMissing
from domain.analytics_policy import PolicyError
from domain.registry_trust import AnchorsShared, TrustAnchorsMissing
from domain.sensitive_diagnoses import BadSensitiveRanges
from domain.sensitive_visit import BadSensitiveList
from healthbook.config import BadSetting, Settings
from healthbook.database import MigrationError
from healthbook.kafka import NoKafkaLogin, TopicMissing
from producers.clinic_keys import KeyFileMissing, KeyLifecycleError
from producers.registry_signing import RegistryKeyMissing
from streams.pseudonym_key import PseudonymKeyError

SETUP_ERRORS = (NoKafkaLogin, TopicMissing, TrustedKeysMissing, TrustAnchorsMissing, BadSensitiveRanges,
                BadSensitiveList, MigrationError, KeyFileMissing, KeyLifecycleError, RegistryKeyMissing,
                PseudonymKeyError, BadSetting, AnchorsShared, PolicyError)

# Each subcommand names its function as "module.function" under commands/ and is imported only when
# run, so a worker process does not load the XML, signing and rendering stack of the other commands.

# The broker principal each command logs in as unless HEALTHBOOK_KAFKA_USER says otherwise: each role
# holds only its own ACLs. Clinics publish (publish, ingest) as clinic-<MA_CSKCB> (kafka.clinic_broker).
PRINCIPALS = {
    "worker_command.worker": "worker",
    "service_commands.query_consumer": "query",
    "service_commands.request": "identity-platform",
    "service_commands.export": "identity-platform",
    "service_commands.citizen_page": "identity-platform",
    "service_commands.demo": "admin",
    "operator_commands.topics": "admin",
    "clinic_commands.broker_add_clinic": "admin",
    "clinic_commands.clinic_register": "key-registry",
    "clinic_commands.clinic_rotate": "key-registry",
    "clinic_commands.clinic_revoke": "key-registry",
    "clinic_commands.clinic_list": "key-registry",
    "clinic_commands.identity_map": "insurance-registry",
    "analytics_commands.release": "analytics",
    "analytics_commands.check_command": "analytics",
    "analytics_commands.top": "analytics",
    "analytics_commands.add_subscriber": "admin",
    "operator_commands.pipeline_status": "operator",
    "replay_command.replay_book": "operator",
    "operator_commands.dlq_list": "operator",
    "operator_commands.dlq_show": "operator",
    "operator_commands.dlq_retry": "operator",
}


def _days(text: str) -> int:
    """A positive whole number of days, or an error argparse prints as one line."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number of days")
    return int(text)


def _clinic_parsers(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("clinic", help="clinic signing keys").add_subparsers(dest="action", required=True)
    keygen = keys.add_parser("keygen", help="on the clinic's machine: make a key pair and its certificate request")
    keygen.add_argument("--clinic", required=True, help="facility code (MA_CSKCB), 5 digits")
    keygen.add_argument("--key-id", default="k1")
    keygen.add_argument("--name", help="the facility's name as the citizen should read it (the certificate's O)")
    keygen.set_defaults(run="clinic_commands.clinic_keygen")
    register = keys.add_parser("register", help="register a clinic key certified by a trusted CA")
    register.add_argument("--clinic", required=True, help="facility code (MA_CSKCB), 5 digits")
    register.add_argument("--key-id", default="k1", help="the id the clinic signs with (its envelope's key_id)")
    source = register.add_mutually_exclusive_group(required=True)
    source.add_argument("--certificate", help="PEM certificate of the clinic's key, issued by a trusted CA")
    source.add_argument("--public-key", help="PEM public key, certified here by the local CA (the CA is the registry)")
    register.set_defaults(run="clinic_commands.clinic_register")
    rotate = keys.add_parser("rotate", help="switch a clinic to a new certified key; the old one expires after a grace")
    rotate.add_argument("--clinic", required=True)
    rotate.add_argument("--from-key", required=True, help="the key id in use now")
    rotate.add_argument("--to-key", required=True, help="the new key's id")
    rotate.add_argument("--certificate", required=True, help="PEM certificate of the new key")
    rotate.add_argument("--grace-hours", type=float, default=24.0, help="how long the old key stays valid (24)")
    rotate.set_defaults(run="clinic_commands.clinic_rotate")
    revoke = keys.add_parser("revoke", help="reject signatures made with a key from a time on")
    revoke.add_argument("--clinic", required=True)
    revoke.add_argument("--key-id", required=True)
    revoke.add_argument("--at", help="ISO time the key stopped being trustworthy (default: now)")
    revoke.set_defaults(run="clinic_commands.clinic_revoke")
    certificate = keys.add_parser("certificate", help="register the certificate that signs a clinic's dossiers")
    certificate.add_argument("--clinic", required=True)
    certificate.add_argument("certificate", help="PEM X.509 certificate of the facility's XML signature")
    certificate.set_defaults(run="clinic_commands.clinic_certificate")
    listing = keys.add_parser("list", help="show registered keys and their state")
    listing.add_argument("--clinic")
    listing.set_defaults(run="clinic_commands.clinic_list")


def _publishing_parsers(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("ca", help="the local stack's certificate authority").add_subparsers(dest="action",
                                                                                            required=True)
    issue = ca.add_parser("issue", help="certify a clinic's certificate request for the facility the operator names "
                          "(local stack; production uses a licensed CA); any other subject is refused")
    issue.add_argument("--clinic", required=True, help="the facility code (MA_CSKCB) the certificate is for")
    issue.add_argument("request", help="the .csr file 'healthbook clinic keygen' made")
    issue.add_argument("--out", help="where to write the certificate (default: beside the request, .crt)")
    issue.add_argument("--days", type=_days, default=730, help="how long the certificate is valid (730)")
    issue.set_defaults(run="clinic_commands.ca_issue")
    withdraw = ca.add_parser("revoke", help="put a certificate on the CA's revocation list")
    withdraw.add_argument("certificate", help="PEM certificate to revoke")
    withdraw.set_defaults(run="clinic_commands.ca_revoke")
    ca.add_parser("init", help="make the local CA and registry keys (idempotent)").set_defaults(
        run="clinic_commands.ca_init")
    broker = sub.add_parser("broker", help="broker principals").add_subparsers(dest="action", required=True)
    add_clinic = broker.add_parser("add-clinic", help="give a clinic its own broker login, allowed only to write this "
                                   "deployment's visits topic (HEALTHBOOK_TOPIC_PREFIX); idempotent")
    add_clinic.add_argument("--clinic", required=True, help="facility code (MA_CSKCB)")
    add_clinic.set_defaults(run="clinic_commands.broker_add_clinic")
    identity = sub.add_parser("identity", help="identity mappings").add_subparsers(dest="action", required=True)
    mapping = identity.add_parser("map", help="record which citizen a BHYT card belongs to")
    mapping.add_argument("--card", required=True, help="BHYT card number (MA_THE_BHYT)")
    mapping.add_argument("--personal-id", required=True)
    mapping.set_defaults(run="clinic_commands.identity_map")
    publish = sub.add_parser("publish", help="sign and publish a clinic's visit events")
    publish.add_argument("file", nargs="?", help="JSON lines, one VisitEvent per line")
    publish.add_argument("--clinic", required=True)
    publish.add_argument("--key-id", default="k1")
    publish.add_argument("--synthetic", type=int, default=0, help="publish N invented visits instead of a file")
    publish.add_argument("--seed", type=int, default=1)
    publish.set_defaults(run="clinic_commands.publish")
    ingest = sub.add_parser("ingest", help="publish GIAMDINHHS (QĐ 4750) dossier files of a clinic")
    ingest.add_argument("target", help="a dossier file, or a directory of them")
    ingest.add_argument("--key-id", default="k1", help="which of the facility's registered keys signs")
    ingest.add_argument("--version", type=int, help="visit version to publish (default: NGAYLAP as yyyyMMdd)")
    ingest.add_argument("--check", action="store_true", help="read and validate only; publish nothing")
    ingest.set_defaults(run="clinic_commands.ingest_dossiers")


def _service_parsers(sub: argparse._SubParsersAction) -> None:
    run_worker = sub.add_parser("worker", help="run the stream worker (faust)")
    run_worker.add_argument("--processes", type=int, default=1,
                            help="run this many workers of one group under a supervisor, one per core")
    run_worker.set_defaults(run="worker_command.worker")
    sub.add_parser("query-consumer", help="run the consent-gated query consumer").set_defaults(
        run="service_commands.query_consumer")
    request = sub.add_parser("request", help="confirm integration as a citizen (identity-platform stand-in)")
    request.add_argument("--personal-id", required=True)
    request.add_argument("--year", type=int, required=True)
    request.set_defaults(run="service_commands.request")
    export = sub.add_parser("export", help="a citizen's health book as a FHIR R4 Bundle (identity-platform stand-in)")
    export.add_argument("--personal-id", required=True)
    export.add_argument("--year", type=int, help="only this year (default: every year)")
    export.add_argument("--visit", help="FACILITY/MA_LK: one visit in full, its sensitive tables included")
    export.add_argument("--out", help="write the Bundle to this file instead of standard output")
    export.set_defaults(run="service_commands.export")
    page = sub.add_parser("citizen-page", help="serve the citizen's flow to the health book (identity-app stand-in)")
    page.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (8000)")
    page.add_argument("--passcode", default=DEMO_PASSCODE, help=f"the stand-in's passcode ({DEMO_PASSCODE})")
    page.set_defaults(run="service_commands.citizen_page")
    demo = sub.add_parser("demo", help="run the whole pipeline on a realistic batch, then serve the citizen page")
    demo.add_argument("--no-page", action="store_true", help="stop after the terminal walk-through")
    demo.add_argument("--port", type=int, default=8000, help="the citizen page's port on 127.0.0.1 (8000)")
    demo.set_defaults(run="service_commands.demo")


def _operator_parsers(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("topics", help="create the topics healthbook needs (idempotent)").set_defaults(
        run="operator_commands.topics")
    sub.add_parser("config", help="show the effective settings (secrets masked) and the names they give").set_defaults(
        run="operator_commands.show_config")
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run="operator_commands.migrate_database")
    sub.add_parser("counts", help="show the pipeline's outcome counts").set_defaults(run="operator_commands.counts")
    sub.add_parser("status", help="lag per partition, counts by outcome, last error").set_defaults(
        run="operator_commands.pipeline_status")
    replay = sub.add_parser("replay", help="rebuild the health book from the visits topic and swap it in")
    replay.add_argument("--processes", type=int, default=1,
                        help="rebuild in N processes over disjoint partitions (one per core), then swap in once")
    replay.add_argument("--partitions", help="used by --processes: rebuild only these partitions (0,2,...) into "
                                             "the rebuild a parent began; no swap")
    replay.set_defaults(run="replay_command.replay_book")
    _analytics_parsers(sub)
    dlq = sub.add_parser("dlq", help="the dead-letter topic").add_subparsers(dest="action", required=True)
    for name, run, text in (("list", "operator_commands.dlq_list", "list dead letters"),
                            ("show", "operator_commands.dlq_show", "show dead letters in full"),
                            ("retry", "operator_commands.dlq_retry", "re-drive dead letters once the cause is fixed")):
        action = dlq.add_parser(name, help=text)
        action.add_argument("--reason", help="reason code, e.g. unknown_clinic")
        action.add_argument("--clinic", help="facility code")
        action.add_argument("--since", help="ISO time: only dead letters from then on")
        action.add_argument("--offset", type=int, action="append", help="dead-letter offset (repeatable)")
        action.set_defaults(run=run)


def _analytics_parsers(sub: argparse._SubParsersAction) -> None:
    analytics = sub.add_parser("analytics", help="k-anonymous releases to subscribers, their checker and sink"
                               ).add_subparsers(dest="action", required=True)
    analytics.add_parser("release", help="run the release stage: hold each visit until its cell holds k people"
                         ).set_defaults(run="analytics_commands.release")
    check = analytics.add_parser("check", help="smallest released cell, share suppressed, pseudonyms shared")
    check.add_argument("--subscriber", action="append", help="only this subscriber (repeatable; default: all)")
    check.set_defaults(run="analytics_commands.check_command")
    sink = analytics.add_parser("sink", help="land a subscriber's released visits in DuckDB (and Parquet)")
    sink.add_argument("--subscriber", required=True)
    sink.add_argument("--duckdb", help="the DuckDB file (default .local/analytics/<subscriber>.duckdb)")
    sink.add_argument("--parquet", help="also write the landed visits to DIR/visits.parquet")
    sink.add_argument("--follow", action="store_true", help="keep landing new releases until stopped")
    sink.set_defaults(run="analytics_commands.sink")
    chart = analytics.add_parser("chart", help="visits by month for one ICD-10 chapter, from a landed DuckDB file")
    chart.add_argument("--duckdb", required=True)
    chart.add_argument("--chapter", default="J00-J99", help="the chapter as its code range (default J00-J99)")
    chart.set_defaults(run="analytics_commands.chart")
    add = analytics.add_parser("add-subscriber", help="a broker principal that may read only its own topic")
    add.add_argument("subscriber")
    add.set_defaults(run="analytics_commands.add_subscriber")
    top = analytics.add_parser("top", help="operators: visits per diagnosis, province and month, internal topic")
    top.add_argument("--top", type=int, default=20)
    top.set_defaults(run="analytics_commands.top")


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(prog="healthbook", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for add in (_operator_parsers, _clinic_parsers, _publishing_parsers, _service_parsers):
        add(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    """Entry point of the healthbook command."""
    args = parser().parse_args(argv)
    settings = Settings()
    if args.run in PRINCIPALS and not settings.kafka_user:
        settings = settings.model_copy(update={"kafka_user": PRINCIPALS[args.run]})
    module, _, function = args.run.rpartition(".")
    try:
        getattr(importlib.import_module(f"commands.{module}"), function)(settings, args)
    except SETUP_ERRORS as exc:  # a missing login, key, topic or file: one sentence, not a traceback
        sys.exit(f"healthbook {args.command}: {exc}")


if __name__ == "__main__":
    main()
