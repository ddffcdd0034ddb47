"""make bench (query part): a citizen's wait with a national-size book, and the database's share of it.

Loads V visits of C citizens straight into a fresh health book (COPY, as a replay would leave it),
starts the query consumer, and sends signed integration requests for random citizens and years at
R requests/s through Kafka, as the identity platform would. Prints the wait from send to reply
(p50, p99, max) and, separately, the database time of a year's query (p50, p99). Usage:
    python -m benchmarks.query_latency [--visits 1000000] [--citizens 100000] [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.end_to_end import peak_rss_mb, percentile
from commands.identity_standin import confirmation, ensure_identity_key, trust_identity_key
from commands.processes import ServiceProcess
from domain.replies import Reply
from domain.rows import BOOK_COLUMNS
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, ensure_topics
from healthbook.store import BookReader
from schemas import rules
from schemas.envelope import Signer, seal_request, seal_visit
from schemas.visit import VisitEvent
from synthetic.population import CLINICS, make_population

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")  # the harness sets up topics and ACLs itself
TEMPLATE_VISITS = 10_000


def _rows(visits: int, citizens: int) -> Any:
    """Book rows in chunks: templates repeated under fresh personal IDs and visit codes."""
    _, templates = make_population(5, TEMPLATE_VISITS // 10, TEMPLATE_VISITS, list(CLINICS), (2024, 2025, 2026))
    events = [VisitEvent.model_validate(e).model_dump(mode="json") for e in templates]
    signer = Signer.generate("k1")  # each row carries a template's signed envelope and key, as real rows do
    sealed = [seal_visit(VisitEvent.model_validate(e).model_dump(), e["facility_code"], signer) for e in templates]
    per_citizen = max(1, visits // citizens)
    chunk: list[tuple[Any, ...]] = []
    for n in range(visits):
        event = events[n % len(events)]
        citizen = n // per_citizen
        # the citizen's province, sex and birth year from one template, the last six digits their number
        personal_id = events[citizen % len(events)]["patient"]["personal_id"][:6] + f"{citizen % 1_000_000:06d}"
        record = dict(event, visit_code=f"{event['facility_code']}-Q-{n:09d}",
                      patient=dict(event["patient"], personal_id=personal_id))
        row = {"facility_code": record["facility_code"], "visit_code": record["visit_code"],
               "personal_id": personal_id, "version": 1, "event_id": str(uuid.uuid4()),
               "year": int(record["admitted_at"][:4]), "admitted_at": rules.parse_minute(record["admitted_at"]),
               "discharged_at": rules.parse_minute(record["discharged_at"]),
               "record": json.dumps(record, ensure_ascii=False), "sensitive": "[]", "clinic_key_id": "k1",
               "signature": bytes(64), "signed_at": datetime.now(UTC), "source_partition": 0, "source_offset": n,
               "signed_message": sealed[n % len(sealed)], "clinic_public_key": signer.public_key,
               "clinic_certificate": None}
        chunk.append(tuple(row[c] for c in BOOK_COLUMNS))
        if len(chunk) == 20_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _load(settings: Settings, visits: int, citizens: int, console: Console) -> list[str]:
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    ids: set[str] = set()
    started = time.perf_counter()
    try:
        async with pool.acquire() as conn:
            for chunk in _rows(visits, citizens):
                await conn.copy_records_to_table("health_book_visits", records=chunk, columns=BOOK_COLUMNS)
                ids.update(row[BOOK_COLUMNS.index("personal_id")] for row in chunk)
            # As a book that has been live a while: vacuumed (else autovacuum's first pass over the
            # fresh million rows competes with the run) and analysed.
            await conn.execute("vacuum (analyze) health_book_visits")
    finally:
        await pool.close()
    console.print(f"loaded {visits:,} visits of {len(ids):,} citizens in {time.perf_counter() - started:.0f} s")
    return sorted(ids)


async def _database_time(settings: Settings, citizens: list[str], n: int) -> list[float]:
    """Milliseconds the database and the reply shaping take for a year's query, one query at a time."""
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
    reader, times = BookReader(), []
    try:
        async with pool.acquire() as conn:
            for _ in range(n):
                started = time.perf_counter()
                await reader.visits_of(conn, random.choice(citizens), random.choice((2024, 2025, 2026)))
                times.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return times


async def _ask_at_rate(settings: Settings, citizens: list[str], rate: float, seconds: float) -> tuple[list[float], int]:
    """Send signed requests at rate for seconds; the send-to-reply wait of each, and how many went unanswered."""
    signer = ensure_identity_key(settings)
    producer = kafka.producer(Broker.of(settings), "bench-identity", linger_ms=0)
    replies = kafka.consumer(Broker.of(settings), "bench-identity", settings.topics.integration_replies)
    await producer.start()
    await replies.start()
    sent: dict[str, float] = {}
    waits: dict[str, float] = {}
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set() or len(waits) < len(sent):
            for records in (await replies.getmany(timeout_ms=100)).values():
                for record in records:
                    request_id = Reply.decode(record.value).request_id
                    if request_id in sent:
                        waits[request_id] = (time.perf_counter() - sent[request_id]) * 1000
            if done.is_set() and time.perf_counter() > deadline:
                return

    deadline = time.perf_counter() + seconds + 30
    reader = asyncio.create_task(read())
    await asyncio.sleep(1)  # the reply reader has its partitions
    started = time.perf_counter()
    total = int(rate * seconds)
    try:
        for i in range(total):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            request = confirmation(random.choice(citizens), random.choice((2024, 2025, 2026)))
            raw = seal_request(request, signer)
            sent[request["request_id"]] = time.perf_counter()
            await producer.send(settings.topics.integration_requests, raw, key=request["personal_id"].encode())
        done.set()
        await reader
    finally:
        await producer.stop()
        await replies.stop()
    return list(waits.values()), total - len(waits)


async def run(visits: int, citizens: int, rate: float, seconds: float) -> None:
    console = Console(width=150)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings()
    settings = base.model_copy(update={
        "topic_prefix": f"bench-query-{stamp}.", "query_metrics_port": 0,
        "identity_keys_file": PROJECT_ROOT / ".local" / "bench" / f"identity-{stamp}.json",
        "database_url": await recreate_database(base.database_url, "healthbook_bench_query")})
    await ensure_topics(settings, Broker.of(settings))
    ids = await _load(settings, visits, citizens, console)
    database = await _database_time(settings, ids, 2_000)
    trust_identity_key(settings.identity_keys_file, ensure_identity_key(settings))
    consumer = ServiceProcess("query-consumer", settings, PROJECT_ROOT / ".local" / "logs" / "bench-query.log").start()
    try:
        await _ask_at_rate(settings, ids, 20, 2)  # warm-up: the consumer has joined its group and is answering
        waits, unanswered = await _ask_at_rate(settings, ids, rate, seconds)
        rss = peak_rss_mb(consumer.process.pid)  # type: ignore[union-attr]
    finally:
        consumer.stop()
    table = Table(title=f"a citizen's wait: {visits:,} visits of {len(ids):,} citizens, {rate:,.0f} requests/s for "
                        f"{seconds:.0f} s", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("signed request → reply over Kafka, p50", f"{percentile(waits, 50):,.1f} ms")
    table.add_row("p99", f"{percentile(waits, 99):,.1f} ms")
    table.add_row("max", f"{max(waits):,.1f} ms")
    table.add_row("unanswered within 30 s", f"{unanswered:,}")
    table.add_row("database time of a year's query, p50 (one at a time)", f"{percentile(database, 50):,.2f} ms")
    table.add_row("p99", f"{percentile(database, 99):,.2f} ms")
    table.add_row("query consumer peak RSS", f"{rss:,.0f} MiB")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--citizens", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.visits, args.citizens, args.rate, args.seconds))


if __name__ == "__main__":
    main()
