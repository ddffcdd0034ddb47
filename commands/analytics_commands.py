"""Analytics: the release stage, the release checker, the reference DuckDB subscriber and its chart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import sys
from pathlib import Path

from commands import render
from consumers.analytics import read_deidentified, visits_per_diagnosis_province_month
from consumers.analytics_sink import DuckDBSink, land_topic
from consumers.release_check import CheckReport, check
from consumers.released_visits import read_released
from domain.analytics_policy import SubscriberPolicy, load_policies
from healthbook import kafka
from healthbook.analytics_store import ReleaseStore
from healthbook.broker_acls import subscriber_grants, subscriber_principal
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool
from streams.analytics_release import release_now, released_topic, run_release_stage
from streams.pseudonym_key import load_or_create_key


async def release_check_and_land(settings: Settings, subscriber: str, database: Path) -> tuple[CheckReport, DuckDBSink]:
    """Release what the de-identified topic holds now, check every subscriber, and land one in DuckDB (the demo)."""
    policies = load_policies(settings.analytics_policy_dir)
    broker = kafka.Broker.of(settings)
    await release_now(settings, load_or_create_key(settings.analytics_release_key_file))
    report = await check_release(settings, policies)
    sink = DuckDBSink(database)
    await land_topic(broker, released_topic(settings.topic_prefix, subscriber), sink)
    return report, sink


def release(settings: Settings, _: argparse.Namespace) -> None:
    """Run the release stage in the foreground: hold, release k-anonymous records, close windows."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_release_stage(settings))


def _chosen(settings: Settings, names: list[str] | None) -> list[SubscriberPolicy]:
    policies = load_policies(settings.analytics_policy_dir)
    unknown = sorted(set(names or []) - {p.name for p in policies})
    if unknown:
        sys.exit(f"no policy for subscriber(s) {', '.join(unknown)} in {settings.analytics_policy_dir}")
    return [p for p in policies if not names or p.name in names]


async def check_release(settings: Settings, policies: list[SubscriberPolicy]) -> CheckReport:
    """Read every chosen subscriber's topic and the stage's tallies, and check them."""
    broker = kafka.Broker.of(settings)
    streams = {p.name: await read_released(broker, released_topic(settings.topic_prefix, p.name)) for p in policies}
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
    try:
        counted = await ReleaseStore(pool).tallies()
    finally:
        await pool.close()
    return check(policies, streams, counted)


def check_command(settings: Settings, args: argparse.Namespace) -> None:
    """Print each subscriber's smallest cell, suppressed share and links; exit 1 if a promise is broken."""
    report = asyncio.run(check_release(settings, _chosen(settings, args.subscriber)))
    render.release_check(render.console(), report)
    if report.problems:
        sys.exit("release check failed: " + "; ".join(report.problems))


def sink(settings: Settings, args: argparse.Namespace) -> None:
    """Land one subscriber's released visits in a DuckDB file (and Parquet), each once by visit_ref and version."""
    (policy,) = _chosen(settings, [args.subscriber])
    database = Path(args.duckdb or f".local/analytics/{policy.name}.duckdb")
    broker = kafka.Broker.of(settings, subscriber_principal(policy.name)) if not settings.kafka_user else \
        kafka.Broker.of(settings)
    store = DuckDBSink(database)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            landed = asyncio.run(land_topic(broker, released_topic(settings.topic_prefix, policy.name), store,
                                            follow=args.follow))
            print(f"landed {landed} record(s) in {database}")
        if args.parquet:
            print(f"wrote {store.export_parquet(Path(args.parquet))}")
    finally:
        store.close()


def chart(settings: Settings, args: argparse.Namespace) -> None:
    """Draw visits per admission month for one ICD-10 chapter from a landed DuckDB file."""
    store = DuckDBSink(Path(args.duckdb))
    try:
        render.month_chart(render.console(), store.visits_by_month(args.chapter),
                           f"Visits by month, ICD-10 {args.chapter} ({args.duckdb})")
    finally:
        store.close()


def add_subscriber(settings: Settings, args: argparse.Namespace) -> None:
    """Give a subscriber its own broker principal on the local stack, allowed only to read its own topic."""
    (policy,) = _chosen(settings, [args.subscriber])
    principal = subscriber_principal(policy.name)
    made = subprocess.run(["bash", str(PROJECT_ROOT / "stack" / "stack.sh"), "add-principal", principal],
                          capture_output=True, text=True)
    if made.returncode:
        sys.exit(made.stderr.strip() or made.stdout.strip())
    asyncio.run(kafka.grant(kafka.Broker.of(settings), subscriber_grants(settings, policy.name)))
    print(f"subscriber {policy.name} logs in to the broker as {principal} (password in "
          f"{settings.kafka_credentials_dir / principal}; hand it to the subscriber only) and may read "
          f"{released_topic(settings.topic_prefix, policy.name)}, nothing else")


def top(settings: Settings, args: argparse.Namespace) -> None:
    """The operator's view of the internal de-identified topic: visits per diagnosis, province and month."""
    found = visits_per_diagnosis_province_month(
        asyncio.run(read_deidentified(kafka.Broker.of(settings), settings.topics.deidentified)))
    render.analytics(render.console(), found, args.top, "Visits per diagnosis, province and month (de-identified)")
