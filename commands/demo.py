"""make demo: a realistic batch through the whole pipeline, shown as a citizen and an operator see it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from datetime import datetime

import asyncpg
from rich.console import Console

from commands import render
from commands.analytics_commands import release_check_and_land
from commands.identity_standin import (
    DEMO_PASSCODE,
    IdentityPlatform,
    confirmation,
    ensure_identity_key,
    trust_identity_key,
)
from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from consumers.analytics import read_deidentified, visits_per_diagnosis_province_month
from consumers.dead_letters import read_dead_letters
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from healthbook.store import BookReader
from producers.clinic_keys import save_signer
from producers.publisher import ClinicPublisher
from producers.xml_ingest.ingest import ingest
from schemas.envelope import Signer, seal_visit
from synthetic.population import CLINICS, make_citizen, make_population, make_visit

DEMO_PORT = 8000
SEED = 20260315
SAMPLE_DOSSIER = PROJECT_ROOT / "tests" / "fixtures" / "giamdinhhs-sample.xml"
SAMPLE_CITIZEN = "079186001234"
CITIZENS, VISITS, RESENT = 50, 500, 25
YEARS = (2025, 2026)


async def wait_for_consumed(
    pool: asyncpg.Pool, expected: int, timeout: float, worker: ServiceProcess
) -> dict[str, int]:
    """Wait until the worker has counted expected messages; fail with its log if it died or stalled."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            counts = await BookReader().counts_of(conn)
        if counts.get("consumed", 0) >= expected:
            return counts
        if not worker.running or time.monotonic() > deadline:
            raise RuntimeError(
                f"worker consumed {counts.get('consumed', 0)} of {expected} messages; "
                f"its log ends:\n{worker.log_tail()}"
            )
        await asyncio.sleep(0.5)


async def publish_batch(settings: Settings, console: Console) -> tuple[int, str]:
    """Publish the demo batch with its planted faults; return the message count and a citizen to look up."""
    rng = random.Random(SEED)
    signers = {code: Signer.generate("k1") for code in CLINICS}  # made here only because this is the demo
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry(code, signer) for code, signer in signers.items()])
    citizens, events = make_population(SEED, CITIZENS, VISITS, list(CLINICS), YEARS)
    sent = 0
    for code, signer in signers.items():
        async with ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, signer) as publisher:
            mine = [e for e in events if e["facility_code"] == code]
            sent += await publisher.publish_all(mine)
            resend = [e for e in rng.sample(mine, RESENT * len(mine) // VISITS + 1)]
            sent += await publisher.publish_all(resend)
    console.print(
        f"published {VISITS} visits from {len(CLINICS)} clinics for {CITIZENS} citizens, "
        f"and re-sent {sent - VISITS} of them"
    )

    featured = citizens[0]
    original = next(e for e in events if e["patient"]["personal_id"] == featured.personal_id)
    corrected = dict(
        original,
        version=2,
        event_id=f"{original['event_id'][:-4]}c0r2",
        discharge_diagnosis=original["discharge_diagnosis"] + "; theo dõi thêm",
    )
    code = original["facility_code"]
    async with ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, signers[code]) as publisher:
        await (await publisher.publish(corrected))
        invalid = dict(
            make_visit(rng, make_citizen(rng), code, 900_001, datetime(2026, 5, 2, 9, 0)), discharged_at="202605010800"
        )
        await (await publisher.publish(invalid, validate=False))
        forged = bytearray(
            seal_visit(make_visit(rng, featured, code, 900_002, datetime(2026, 6, 1, 8, 0)), code, signers[code])
        )
        forged[-3] ^= 0xFF
        await (await publisher.publish_raw(featured.personal_id.encode(), bytes(forged)))
        await (await publisher.publish_raw(b"not-a-person", b"<TONG_HOP>this is not an envelope</TONG_HOP>"))
    stranger = Signer.generate("k1")
    unregistered = clinic_broker(settings, "92001")
    async with ClinicPublisher(unregistered, settings.topics.visits, "92001", stranger) as publisher:
        await (await publisher.publish(make_visit(rng, featured, "92001", 900_003, datetime(2026, 7, 1, 8, 0))))
    console.print(
        "also published: 1 corrected version, 1 visit breaking the rules, 1 forged signature, "
        "1 malformed message, 1 visit from an unregistered clinic"
    )
    return sent + 5, featured.personal_id


async def ingest_sample(settings: Settings, console: Console) -> int:
    """Ingest the synthetic QĐ 4750 sample dossier as clinic 79001 would; return how many visits it published."""
    signer = Signer.generate("his-1")
    save_signer(settings.key_dir, "79001", signer)
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry("79001", signer)])
    reports = await ingest(settings, SAMPLE_DOSSIER, key_id="his-1", console=console)
    render.ingest_reports(console, reports)
    return sum(report.published for report in reports)


async def serve_page_until_stopped(page: ServiceProcess, port: int, citizens: list[str], console: Console) -> None:
    """Wait for the citizen page to answer, print where it is, and keep the demo up until Ctrl-C or SIGTERM."""
    await page.listening(port)
    console.rule("The citizen page")
    console.print(f"Open [bold]http://127.0.0.1:{port}/[/] — sign in with a demo citizen's personal ID "
                  f"({', '.join(citizens)}), passcode [bold]{DEMO_PASSCODE}[/].")
    console.print("Ctrl-C stops the demo: the citizen page, the worker and the query consumer.")
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    while not stopped.is_set() and page.running:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), 1.0)


async def show_analytics(settings: Settings, broker: Broker, console: Console) -> None:
    """The de-identified visits, then what the release stage gives each subscriber, checked and charted."""
    records = await read_deidentified(broker, settings.topics.deidentified)
    render.analytics(console, visits_per_diagnosis_province_month(records), top=8,
                     title=f"The release stage reads {len(records)} de-identified visits; the most frequent:")
    console.rule("Analytics subscribers: k-anonymous releases, each its own pseudonyms")
    landed = PROJECT_ROOT / ".local" / "analytics" / "demo-research.duckdb"
    landed.unlink(missing_ok=True)  # each demo has topics of its own
    report, sink = await release_check_and_land(settings, "university-research", landed)
    try:
        render.release_check(console, report)
        render.month_chart(console, sink.visits_by_month("J00-J99"),
                           "university-research in DuckDB: visits by month, ICD-10 J00-J99 (respiratory)")
    finally:
        sink.close()


async def run(settings: Settings, page_port: int | None = DEMO_PORT) -> int:
    """Run the demo end to end, then serve the citizen page on page_port until stopped; return the exit code."""
    console = render.console()
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    settings = settings.model_copy(
        update={
            "topic_prefix": f"demo-{stamp}.",
            "database_url": await recreate_database(settings.database_url, "healthbook_demo"),
        }
    )
    console.rule("[bold]healthbook demo")
    console.print(f"topics prefixed [bold]{settings.topic_prefix}[/], database [bold]healthbook_demo[/] (fresh)")
    broker = Broker.of(settings)
    await ensure_topics(settings, broker)
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    trust_identity_key(settings.identity_keys_file, ensure_identity_key(settings))  # the demo is the deployer
    logs = PROJECT_ROOT / ".local" / "logs"
    worker = ServiceProcess("worker", settings, logs / "demo-worker.log").start()
    query = ServiceProcess("query-consumer", settings, logs / "demo-query-consumer.log").start()
    page = ServiceProcess("citizen-page", settings, logs / "demo-citizen-page.log", ("--port", str(page_port))
                          ) if page_port else None
    try:
        expected, personal_id = await publish_batch(settings, console)
        expected += await ingest_sample(settings, console)
        counts = await wait_for_consumed(pool, expected, 180, worker)
        console.rule("The citizen confirms the integration in the identity app")
        async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
            for year in (YEARS[-1], 2024):
                reply = await platform.ask(confirmation(personal_id, year), timeout=60)
                render.health_book(console, reply, f"Sổ sức khỏe điện tử — {personal_id} — năm {year}")
            reply = await platform.ask(confirmation(SAMPLE_CITIZEN, 2026), timeout=60)
            render.health_book(console, reply, f"Sổ sức khỏe điện tử — {SAMPLE_CITIZEN} (from the XML sample) — 2026")
            reply = await platform.ask(confirmation(personal_id, 2026, identity_level=1), timeout=60)
            console.print("The same citizen from a level-1 account:")
            render.health_book(console, reply, "")
            reply = await platform.ask(confirmation(SAMPLE_CITIZEN, 2026, answer_format="fhir", every_year=True),
                                       timeout=60)
            render.fhir_summary(console, reply, f"FHIR R4 Bundle of {SAMPLE_CITIZEN}'s whole book")
            console.print(f"'healthbook export --personal-id {SAMPLE_CITIZEN}' prints it in full.")
        console.rule("Operator view")
        render.dead_letters(console, await read_dead_letters(broker, settings.topics.dead_letter))
        adds_up = render.outcome_summary(console, counts)
        await show_analytics(settings, broker, console)
        if page is not None:
            await serve_page_until_stopped(page.start(), page_port or 0, [personal_id, SAMPLE_CITIZEN], console)
    finally:
        if page is not None:
            page.stop()
        worker.stop()
        query.stop()
        await pool.close()
    console.print(
        f"\n{'Citizen page, worker' if page else 'Worker'} and query consumer stopped (logs in {logs}). "
        "Kafka and PostgreSQL keep running: 'make down' stops them, 'make status' shows them."
    )
    return 0 if adds_up else 1


def main(settings: Settings, page_port: int | None = DEMO_PORT) -> int:
    """Entry point of 'healthbook demo'; page_port None skips the citizen page."""
    return asyncio.run(run(settings, page_port))
