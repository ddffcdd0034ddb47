"""Commands an operator on call runs: topics, migrations, counts, status, dead letters, replay."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import asyncpg

from commands import render
from commands.clinic_commands import since_ms
from consumers.dead_letters import DeadLetterEntry, RetryReport, read_entries, retry, select
from consumers.status import status
from healthbook.config import Settings
from healthbook.database import connect_pool, migrate
from healthbook.kafka import Broker, ensure_topics, subscriber_topics, topic_names
from healthbook.store import BookReader


def topics(settings: Settings, _: argparse.Namespace) -> None:
    """Create the missing topics of the catalogue and list them all."""
    created = asyncio.run(ensure_topics(settings, Broker.of(settings)))
    for name, topic in topic_names(settings).items():
        state = "created" if name in created else "exists"
        print(f"{name:32} {topic.partitions_for(settings.visit_partitions):>2} partitions  {state:7}  {topic.purpose}")
    for name, (partitions, _) in subscriber_topics(settings).items():
        state = "created" if name in created else "exists"
        print(f"{name:32} {partitions:>2} partitions  {state:7}  one subscriber's k-anonymous visits (its policy)")


def show_config(settings: Settings, _: argparse.Namespace) -> None:
    """Print every setting's effective value (secrets masked) and the topic and group names it gives."""
    names = [(f"topic {t.name}", name) for name, t in topic_names(settings).items()]
    names += [("worker group (faust app id)", settings.worker_app_id),
              ("dedup changelog", settings.dedup_changelog),
              ("faust assignor topic", f"{settings.worker_app_id}-__assignor-__leader"),
              ("query consumer group", settings.query_group_id)]
    render.effective_settings(render.console(), settings.effective(), names)


def migrate_database(settings: Settings, _: argparse.Namespace) -> None:
    """Apply the SQL migrations not yet applied."""
    async def run() -> list[int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print(f"applied migrations {applied}" if applied else "database schema is up to date")


def counts(settings: Settings, _: argparse.Namespace) -> None:
    """Print consumed, accepted, duplicates, pending and rejections by reason."""
    async def run() -> dict[str, int]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await BookReader().counts_of(conn)
        finally:
            await conn.close()

    render.outcome_summary(render.console(), asyncio.run(run()))


def pipeline_status(settings: Settings, _: argparse.Namespace) -> None:
    """Lag per partition, outcome counts, visits waiting for a card, the worker's last error."""
    render.status(render.console(), settings.topics.visits, asyncio.run(status(settings, Broker.of(settings))))


def _dlq_entries(settings: Settings, args: argparse.Namespace) -> list[DeadLetterEntry]:
    entries = asyncio.run(read_entries(Broker.of(settings), settings.topics.dead_letter))
    return select(entries, reason=args.reason, clinic=args.clinic, since_ms=since_ms(args.since),
                  offsets=set(args.offset) if getattr(args, "offset", None) else None)


def dlq_list(settings: Settings, args: argparse.Namespace) -> None:
    """One table row per matching dead letter."""
    render.dead_letter_entries(render.console(), _dlq_entries(settings, args))


def dlq_show(settings: Settings, args: argparse.Namespace) -> None:
    """Every field of each matching dead letter, with the head of its original bytes."""
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


def dlq_retry(settings: Settings, args: argparse.Namespace) -> None:
    """Re-drive matching dead letters once their cause is fixed."""
    entries = _dlq_entries(settings, args)

    async def run() -> RetryReport:
        pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
        try:
            return await retry(settings, Broker.of(settings), pool, entries)
        finally:
            await pool.close()

    report = asyncio.run(run())
    print(f"re-driven {len(report.retried)}; skipped {len(report.already_retried)} already re-driven, "
          f"{len(report.failed_again)} that failed again after a re-drive (fix the cause and publish anew), "
          f"{len(report.not_visits)} not from the visits topic")

