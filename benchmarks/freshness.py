"""make bench (freshness part): how soon a visit a clinic sends is in the citizen's book, at steady offered rates.

One worker runs throughout; for each offered rate a publisher in another process (as a clinic's
system would be) signs and sends visits paced at that rate for S seconds. Prints per rate: what the
worker drained, publish → visible p50/p99/max (visible = the row's projected_at in PostgreSQL), and
the CPU share of the worker, the publisher and the broker with PostgreSQL, and how busy the machine was. Usage:
    python -m benchmarks.freshness [--rates 50,250,1000] [--seconds 20] [--citizens 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from rich.console import Console
from rich.table import Table

from benchmarks.end_to_end import cpu_seconds, machine_busy_seconds, peak_rss_mb, percentile, stack_cpu_seconds
from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from synthetic.population import CLINICS, make_population

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")  # the harness sets up topics and ACLs itself


@dataclass(frozen=True)
class Step:
    """One offered rate and what the worker made of it."""

    offered: float
    drained_per_s: float  # rows visible / (last visible - first publish)
    latencies_ms: list[float]
    worker_cpu_share: float  # of one core, first publish to last visible
    publisher_cpu_share: float  # of one core: the clinic's publisher signing and sending, in its own process
    stack_cpu_share: float  # of one core: the Kafka brokers and PostgreSQL together
    machine_busy: float  # of every core of the machine


def _publish_paced(prefix: str, keys: dict[str, bytes], events: list[dict[str, Any]], rate: float,
                   sent: Any) -> None:
    """In a child process: sign and send events at rate; send back when each was published (epoch seconds)."""
    signers = {code: Signer("k1", Ed25519PrivateKey.from_private_bytes(raw)) for code, raw in keys.items()}
    settings = Settings().model_copy(update={"topic_prefix": prefix})

    async def publish() -> tuple[dict[tuple[str, str], float], float]:
        publishers = {code: ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, s)
                      for code, s in signers.items()}
        for publisher in publishers.values():
            await publisher.__aenter__()
        published_at: dict[tuple[str, str], float] = {}
        pending = []
        sent.send("ready")  # the parent starts its CPU clocks here, after this process's start-up
        cpu_started, start = time.process_time(), time.time()
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, start + i / rate - time.time()))
            published_at[(event["facility_code"], event["visit_code"])] = time.time()
            pending.append(await publishers[event["facility_code"]].publish(event))
        await asyncio.gather(*pending)
        for publisher in publishers.values():
            await publisher.__aexit__(None, None, None)
        return published_at, time.process_time() - cpu_started

    sent.send(asyncio.run(publish()))


async def _step(settings: Settings, pool: Any, keys: dict[str, bytes], events: list[dict[str, Any]], rate: float,
                worker: ServiceProcess) -> Step:
    pid: int = worker.process.pid  # type: ignore[union-attr]
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=_publish_paced, args=(settings.topic_prefix, keys, events, rate, send))
    child.start()
    await asyncio.to_thread(receive.recv)  # ready to publish
    cpu_before, stack_before, (busy_before, every_before) = cpu_seconds(pid), stack_cpu_seconds(), \
        machine_busy_seconds()
    published_at, publisher_cpu = await asyncio.to_thread(receive.recv)
    await asyncio.to_thread(child.join)
    codes = [visit_code for _, visit_code in published_at]
    while True:
        rows = await pool.fetch("select facility_code, visit_code, extract(epoch from projected_at) as t "
                                "from health_book_visits where visit_code = any($1)", codes)
        if len(rows) == len(codes):
            break
        if not worker.running:
            raise RuntimeError(f"worker died:\n{worker.log_tail()}")
        await asyncio.sleep(0.2)
    visible = {(r["facility_code"], r["visit_code"]): float(r["t"]) for r in rows}
    first, last = min(published_at.values()), max(visible.values())
    # shares over first publish to now: the child's start-up before its first publish is nobody's work here
    elapsed, (busy, every) = time.time() - first, machine_busy_seconds()
    return Step(rate, len(codes) / (last - first), [(visible[k] - t) * 1000 for k, t in published_at.items()],
                (cpu_seconds(pid) - cpu_before) / elapsed, publisher_cpu / elapsed,
                (stack_cpu_seconds() - stack_before) / elapsed, (busy - busy_before) / (every - every_before))


async def run(rates: list[float], seconds: float, citizens: int, within: float | None) -> None:
    console = Console(width=170)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings()
    settings = base.model_copy(update={
        "topic_prefix": f"bench-fresh-{stamp}.",
        "database_url": await recreate_database(base.database_url, "healthbook_bench_freshness"),
        "batch_within_seconds": within or base.batch_within_seconds})
    await ensure_topics(settings, Broker.of(settings))
    signers = {code: Signer.generate("k1") for code in CLINICS}
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry(code, s) for code, s in signers.items()])
    keys = {code: s.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            for code, s in signers.items()}
    total = int(sum(rate * seconds for rate in rates)) + 1
    _, events = make_population(11, citizens, total, list(CLINICS), (2025, 2026))
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    worker = ServiceProcess("worker", settings, PROJECT_ROOT / ".local" / "logs" / "bench-freshness.log").start()
    steps: list[Step] = []
    try:
        await _step(settings, pool, keys, events[:1], 1, worker)  # warm-up: the worker has its partitions
        used = 1
        for rate in rates:
            n = int(rate * seconds)
            steps.append(await _step(settings, pool, keys, events[used:used + n], rate, worker))
            used += n
            console.print(f"offered {rate:,.0f}/s: p99 {percentile(steps[-1].latencies_ms, 99):,.0f} ms")
        rss = peak_rss_mb(worker.process.pid)  # type: ignore[union-attr]
    finally:
        worker.stop()
        await pool.close()
    table = Table(title=f"freshness, publish → visible (publisher in its own process, {seconds:.0f} s per rate, "
                        f"{settings.visit_partitions} partitions, batch {settings.batch_size} within "
                        f"{settings.batch_within_seconds:g} s)", title_justify="left")
    for column in ("offered/s", "drained/s", "p50", "p99", "max", "worker CPU", "publisher CPU", "broker + db CPU",
                   f"machine busy ({os.cpu_count()} cores)"):
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(f"{step.offered:,.0f}", f"{step.drained_per_s:,.0f}",
                      f"{percentile(step.latencies_ms, 50):,.0f} ms", f"{percentile(step.latencies_ms, 99):,.0f} ms",
                      f"{max(step.latencies_ms):,.0f} ms",
                      f"{step.worker_cpu_share:.0%}", f"{step.publisher_cpu_share:.0%}", f"{step.stack_cpu_share:.0%}",
                      f"{step.machine_busy:.0%}")
    console.print(table)
    console.print(f"worker peak RSS {rss:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="50,250,1000", help="offered visits/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--citizens", type=int, default=2_000)
    parser.add_argument("--within", type=float, help="the worker's batch window in seconds (default: the setting)")
    args = parser.parse_args()
    asyncio.run(run([float(r) for r in args.rates.split(",")], args.seconds, args.citizens, args.within))


if __name__ == "__main__":
    main()
