"""make bench-analytics: a year of visits at one district hospital's density, released to every shipped subscriber.

Invents a year of visits at three facilities (about 1,700 a facility a month, the density the issue
names), de-identifies them as the worker does (sensitive visits withheld), puts them on a
deployment's own `visits.deidentified`, and times the release stage from start until every window
is closed and published. Then runs the checker, lands one subscriber in DuckDB and draws its chart.
Prints events/s, the stage's peak memory, the smallest cells and the share suppressed. Usage:
    python -m benchmarks.analytics_release [--visits 60000] [--citizens 20000] [--subscriber university-research]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
import uuid
from typing import Any

from rich.console import Console

from commands import render
from consumers.analytics_sink import DuckDBSink, land_topic
from consumers.release_check import check
from consumers.released_visits import read_released
from domain.analytics_policy import load_policies
from domain.deidentify import pseudonym
from healthbook import kafka
from healthbook.analytics_store import ReleaseStore
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from schemas import catalogue, wire
from streams.analytics_release import ReleaseStage, release_until_caught_up, released_topic
from streams.outlets import send_keyed
from synthetic.population import CLINICS, make_population

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")  # the harness sets up topics itself
WORKER_KEY = b"w" * 32  # stands in for the worker's pseudonym key


def deidentified_year(settings: Settings, visits: int, citizens: int) -> list[dict[str, Any]]:
    """A year (2025) of invented visits as the worker puts them on visits.deidentified, sensitive ones withheld."""
    _, events = make_population(2025, citizens, visits, sorted(CLINICS), (2025,))
    sensitive = settings.sensitive
    found = []
    for event in events:
        if sensitive.of_visit(event, has_sensitive_tables=bool(event.get("sensitive"))):
            continue
        patient = event["patient"]
        found.append({
            "pseudonym": pseudonym(WORKER_KEY, patient["personal_id"]),
            "visit_ref": pseudonym(WORKER_KEY, f"{event['facility_code']}/{event['visit_code']}"),
            "version": event["version"], "facility_code": event["facility_code"],
            "birth_year": int(patient["birth_date"][:4]), "sex": patient["sex"],
            "province_code": patient["province_code"], "visit_type": event["visit_type"],
            "admitted_month": event["admitted_at"][:6], "treatment_days": event.get("treatment_days"),
            "main_diagnosis_code": event["main_diagnosis_code"],
            "secondary_diagnosis_codes": list(event["secondary_diagnosis_codes"]),
            "treatment_result": event["treatment_result"],
            "drug_codes": [m["drug_code"] for m in event["medicines"]],
            "total_cost": event["total_cost"], "insurance_paid": event["insurance_paid"]})
    return found


async def run(visits: int, citizens: int, subscriber: str) -> None:
    """Build the deployment, release, check, land and print."""
    console = Console()
    base = Settings()
    settings = base.model_copy(update={
        "topic_prefix": f"bench-analytics-{uuid.uuid4().hex[:6]}.",
        "database_url": await recreate_database(base.database_url, "healthbook_bench_analytics")})
    broker = kafka.Broker.of(settings)
    await kafka.ensure_topics(settings, broker)
    records = deidentified_year(settings, visits, citizens)
    producer = kafka.producer(broker, "bench-analytics", linger_ms=50)
    await producer.start()
    try:
        await send_keyed(producer, settings.topics.deidentified,
                         [(r["pseudonym"].encode(), wire.encode(catalogue.DEIDENTIFIED_VISIT, r)) for r in records])
    finally:
        await producer.stop()
    console.print(f"{len(records):,} de-identified visits of 2025 ({visits - len(records):,} of {visits:,} invented "
                  "withheld as sensitive) on "
                  f"{settings.topics.deidentified}")

    policies = load_policies(settings.analytics_policy_dir)
    pool = await connect_pool(settings.database_url, min_size=1, max_size=3)
    try:
        stage = ReleaseStage(pool, broker, settings.topics.deidentified, settings.topic_prefix, policies,
                             b"r" * 32, settings.analytics_grace_days)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        began, cpu_began = time.perf_counter(), time.process_time()
        await stage.start()
        try:
            await release_until_caught_up(stage, timeout=3600)
        finally:
            await stage.stop()
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        counted = await ReleaseStore(pool).tallies()
        counts = await pool.fetchval("select count(*) from analytics_visit_counts")
    finally:
        await pool.close()
    console.print(f"release stage, {len(policies)} subscribers: {len(records) / seconds:,.0f} visits/s "
                  f"({seconds:.1f} s wall, {cpu:.1f} s CPU in this process; PostgreSQL's own CPU not counted), "
                  f"peak memory {rss:,.0f} MiB (before the stage: {rss_before:,.0f} MiB); "
                  f"{counts:,} rows in analytics_visit_counts")

    streams = {p.name: await read_released(broker, released_topic(settings.topic_prefix, p.name)) for p in policies}
    render.release_check(console, check(policies, streams, counted))

    landed_at = PROJECT_ROOT / ".local" / "analytics" / f"bench-{subscriber}.duckdb"
    landed_at.unlink(missing_ok=True)
    sink = DuckDBSink(landed_at)
    try:
        began = time.perf_counter()
        landed = await land_topic(broker, released_topic(settings.topic_prefix, subscriber), sink)
        console.print(f"DuckDB sink: {landed:,} records in {time.perf_counter() - began:.1f} s into {landed_at}")
        chapter = "J00-J99"
        render.month_chart(console, sink.visits_by_month(chapter),
                           f"{subscriber}: visits by month, ICD-10 {chapter} (respiratory)")
    finally:
        sink.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=60_000)
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--subscriber", default="university-research")
    args = parser.parse_args()
    asyncio.run(run(args.visits, args.citizens, args.subscriber))


if __name__ == "__main__":
    main()


