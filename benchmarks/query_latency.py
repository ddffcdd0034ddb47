"""make bench (query part): a citizen's wait with a national-size book, as a saturation curve.

Loads V visits of C citizens straight into a health book (COPY, as a replay would leave it; a book
of that size left by the last run is reused unless --fresh-book), starts the query consumer, and
sends signed integration requests for random citizens and years through Kafka, as the identity
platform would, at each offered rate in turn. Prints per rate: answered/s, the wait from send to
reply (p50, p99, max), what went unanswered and the consumer's CPU share; and, apart, the database
time of a year's query one at a time. Usage:
    python -m benchmarks.query_latency [--visits 1000000] [--citizens 100000] [--rates 100,250,500,1000]
                                       [--seconds 20] [--fresh-book]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from benchmarks.end_to_end import cpu_seconds, machine_busy_seconds, peak_rss_mb, percentile, stack_cpu_seconds
from commands.identity_standin import confirmation, ensure_identity_key, trust_identity_key
from commands.processes import ServiceProcess
from domain.rows import BOOK_COLUMNS
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, database_url_for, recreate_database
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
    envelopes = [seal_visit(VisitEvent.model_validate(e).model_dump(), e["facility_code"], signer) for e in templates]
    policy = Settings().sensitive  # each template judged once, as the worker judges a visit on its way in
    judged = [policy.judge(e) for e in events]
    per_citizen = max(1, visits // citizens)
    chunk: list[tuple[Any, ...]] = []
    for n in range(visits):
        event, sensitivity = events[n % len(events)], judged[n % len(events)]
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
               "signed_message": envelopes[n % len(envelopes)], "clinic_public_key": signer.public_key,
               "clinic_certificate": None, "sealed": sensitivity.sensitive, "sealed_under": sensitivity.under}
        chunk.append(tuple(row[c] for c in BOOK_COLUMNS))
        if len(chunk) == 20_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


BENCH_DATABASE = "healthbook_bench_query"


async def _reused(base: Settings, visits: int) -> str | None:
    """The last run's book when it holds exactly this many visits, its ledger emptied; else None."""
    url = database_url_for(base.database_url, BENCH_DATABASE)
    try:
        pool = await connect_pool(url, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        async with pool.acquire() as conn:
            if not await conn.fetchval("select exists (select from information_schema.columns where "
                                       "table_name = 'health_book_visits' and column_name = 'sealed_under')"):
                return None
            if await conn.fetchval("select count(*) from health_book_visits") != visits:
                return None
            # a book loaded before visits were judged on their way in, or under other sensitive lists
            if await conn.fetchval("select exists (select from health_book_visits where sealed_under "
                                   "is distinct from $1)", base.sensitive.fingerprint):
                return None
            await conn.execute("truncate served_requests, consents, access_log")
    finally:
        await pool.close()
    return url


async def _citizens(settings: Settings) -> list[str]:
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return [r["personal_id"] for r in await conn.fetch(
                "select distinct personal_id from health_book_visits order by 1")]
    finally:
        await pool.close()


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
                await reader.books_of(conn, [(random.choice(citizens), random.choice((2024, 2025, 2026)), False)])
                times.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return times


@dataclass(frozen=True)
class Step:
    """One offered rate of the curve and what came of it."""

    offered: float
    sent: int
    waits_ms: list[float]
    answered_per_s: float
    consumer_cpu_share: float  # of one core, every query consumer process together, while this step ran
    machine_busy: float  # of every core of the machine (broker, database, this client included)
    client_cpu_share: float  # of one core: this process, sending the signed requests and reading replies
    stack_cpu_share: float  # of one core: the Kafka brokers and PostgreSQL together

    @property
    def unanswered(self) -> int:
        """Requests sent without a reply within 30 s of the last send."""
        return self.sent - len(self.waits_ms)


async def _ask_at_rate(settings: Settings, citizens: list[str], rate: float, seconds: float, consumer_pids: list[int]
                       ) -> Step:
    """Send signed requests at rate for seconds; each one's send-to-reply wait, and the answering rate."""
    signer = ensure_identity_key(settings)
    producer = kafka.producer(Broker.of(settings), "bench-identity", linger_ms=0)
    replies = kafka.consumer(Broker.of(settings), "bench-identity", settings.topics.integration_replies)
    await producer.start()
    await replies.start()
    sent: dict[bytes, float] = {}
    waits: dict[bytes, float] = {}
    answered_at: list[float] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set() or len(waits) < len(sent):
            for records in (await replies.getmany(timeout_ms=100)).values():
                for record in records:  # a reply's key is its request id
                    if record.key in sent and record.key not in waits:
                        answered_at.append(time.perf_counter())
                        waits[record.key] = (answered_at[-1] - sent[record.key]) * 1000
            if done.is_set() and time.perf_counter() > deadline:
                return

    total = int(rate * seconds)
    # Signed before the clock starts, as the identity platform signs on its own machines; fresh for the run.
    requests = [confirmation(random.choice(citizens), random.choice((2024, 2025, 2026))) for _ in range(total)]
    signed = [(r["request_id"].encode(), r["personal_id"].encode(), seal_request(r, signer)) for r in requests]
    deadline = time.perf_counter() + seconds + 30
    reader = asyncio.create_task(read())
    await asyncio.sleep(1)  # the reply reader has its partitions
    started = time.perf_counter()
    cpu_before = sum(cpu_seconds(pid) for pid in consumer_pids)
    busy_before, all_before = machine_busy_seconds()
    client_before, stack_before = time.process_time(), stack_cpu_seconds()
    try:
        for i, (request_id, key, raw) in enumerate(signed):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            sent[request_id] = time.perf_counter()
            await producer.send(settings.topics.integration_requests, raw, key=key)
        done.set()
        await reader
    finally:
        await producer.stop()
        await replies.stop()
    elapsed = (max(answered_at) if answered_at else time.perf_counter()) - started
    busy, every = machine_busy_seconds()
    return Step(rate, total, list(waits.values()), len(waits) / elapsed,
                (sum(cpu_seconds(pid) for pid in consumer_pids) - cpu_before) / elapsed,
                (busy - busy_before) / (every - all_before), (time.process_time() - client_before) / elapsed,
                (stack_cpu_seconds() - stack_before) / elapsed)


async def run(visits: int, citizens: int, rates: list[float], seconds: float, fresh_book: bool, consumers: int
              ) -> None:
    console = Console(width=170)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings()
    url = None if fresh_book else await _reused(base, visits)
    settings = base.model_copy(update={
        "topic_prefix": f"bench-query-{stamp}.", "query_metrics_port": 0,
        "identity_keys_file": PROJECT_ROOT / ".local" / "bench" / f"identity-{stamp}.json",
        "database_url": url or await recreate_database(base.database_url, BENCH_DATABASE)})
    await ensure_topics(settings, Broker.of(settings))
    if url:
        ids = await _citizens(settings)
        console.print(f"reused the last run's book: {visits:,} visits of {len(ids):,} citizens")
    else:
        ids = await _load(settings, visits, citizens, console)
    database = await _database_time(settings, ids, 2_000)
    trust_identity_key(settings.identity_keys_file, ensure_identity_key(settings))
    running = [ServiceProcess("query-consumer", settings, PROJECT_ROOT / ".local" / "logs" / f"bench-query-{n}.log")
               .start() for n in range(consumers)]
    pids: list[int] = [consumer.process.pid for consumer in running]  # type: ignore[union-attr]
    steps: list[Step] = []
    try:
        for _ in range(2 + 3 * (consumers > 1)):  # warm-up: the consumers have joined their group and answer
            await _ask_at_rate(settings, ids, 20, 2, pids)
        for rate in rates:
            steps.append(await _ask_at_rate(settings, ids, rate, seconds, pids))
            console.print(f"offered {rate:,.0f}/s: p99 {percentile(steps[-1].waits_ms, 99):,.1f} ms")
            await asyncio.sleep(2)
        rss = max(peak_rss_mb(pid) for pid in pids)
    finally:
        for consumer in running:
            consumer.stop()
    table = Table(title=f"a citizen's wait, signed request → reply over Kafka: {visits:,} visits of {len(ids):,} "
                        f"citizens, {consumers} query consumer process(es), {seconds:.0f} s per rate",
                  title_justify="left")
    for column in ("offered/s", "answered/s", "p50", "p99", "max", "unanswered", "consumer CPU", "client CPU",
                   "broker + db CPU", f"machine busy ({os.cpu_count()} cores)"):
        table.add_column(column, justify="right")
    for step in steps:
        waits = step.waits_ms or [float("nan")]
        table.add_row(f"{step.offered:,.0f}", f"{step.answered_per_s:,.0f}", f"{percentile(waits, 50):,.1f} ms",
                      f"{percentile(waits, 99):,.1f} ms", f"{max(waits):,.1f} ms", f"{step.unanswered:,}",
                      f"{step.consumer_cpu_share:.0%}", f"{step.client_cpu_share:.0%}", f"{step.stack_cpu_share:.0%}",
                      f"{step.machine_busy:.0%}")
    console.print(table)
    console.print(f"database time of a year's query, one at a time: p50 {percentile(database, 50):,.2f} ms, "
                  f"p99 {percentile(database, 99):,.2f} ms; query consumer peak RSS {rss:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--citizens", type=int, default=100_000)
    parser.add_argument("--rates", default="100,250,500,1000", help="offered requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fresh-book", action="store_true", help="load the book again even if the last run's fits")
    parser.add_argument("--consumers", type=int, default=1, help="query consumer processes in one group")
    args = parser.parse_args()
    asyncio.run(run(args.visits, args.citizens, [float(r) for r in args.rates.split(",")], args.seconds,
                    args.fresh_book, args.consumers))


if __name__ == "__main__":
    main()
