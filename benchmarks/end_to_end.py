"""make bench: publish N signed visit events and measure until the last is visible in PostgreSQL.

Prints end-to-end throughput (first publish to last row visible), publish-to-visible latency
percentiles, the publisher's own rate and the worker's peak memory. Usage:
    python benchmarks/end_to_end.py [--events N] [--citizens C] [--rate R]

Unpaced, latency is mostly queueing behind the backlog; --rate below the throughput
shows the latency of a pipeline that keeps up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from synthetic.population import CLINICS, make_population

# The harness sets up its own stack, topics and ACLs: it logs in to the broker as the admin principal.
os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds."""
    return _cpu_of_stat(Path(f"/proc/{pid}/stat").read_text())


def own_cpu_seconds() -> float:
    """User + system CPU time this process has used so far, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of_stat(stat: str) -> float:
    """User + system CPU seconds of a /proc/PID/stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_cpu_seconds(commands: tuple[str, ...] = ("java", "postgres")) -> float:
    """CPU seconds used so far by every running process of the stack (the Kafka brokers and PostgreSQL)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        if text[text.index("(") + 1:text.rindex(")")] in commands:
            total += _cpu_of_stat(text)
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds every core of the machine has been busy, and in all, so far (from /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class EndToEnd:
    """What one end-to-end run measured."""

    throughput: float  # events/s, first publish to last visible
    publish_rate: float  # events/s the publisher offered (sign, send, acks=all)
    latencies_ms: list[float]  # publish to visible, per event
    worker_cpu_per_1000: float  # seconds
    worker_rss_mb: float

    @property
    def p50(self) -> float:
        """Median publish-to-visible latency, ms."""
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        """99th percentile publish-to-visible latency, ms."""
        return percentile(self.latencies_ms, 99)


async def measure(events_n: int, citizens_n: int, rate: float, console: Console) -> EndToEnd:
    """Publish events_n visits (paced at rate, or unpaced when 0) to a running worker; measure until all visible."""
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings()
    settings = base.model_copy(update={
        "topic_prefix": f"bench-{stamp}.",
        "database_url": await recreate_database(base.database_url, "healthbook_bench"),
    })
    await ensure_topics(settings, Broker.of(settings))
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    signers = {code: Signer.generate("k1") for code in CLINICS}
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry(code, s) for code, s in signers.items()])
    console.print(f"generating {events_n} visits for {citizens_n} citizens ...")
    _, events = make_population(7, citizens_n, events_n + 1, list(CLINICS), (2025, 2026))
    warmup, events = events[0], events[1:]

    worker = ServiceProcess("worker", settings, PROJECT_ROOT / ".local" / "logs" / "bench-worker.log").start()
    try:
        code = warmup["facility_code"]
        async with ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, signers[code]) as pub:
            await pub.publish_all([warmup])
        while not await pool.fetchval("select count(*) from health_book_visits"):
            if not worker.running:
                raise RuntimeError(f"worker died:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)

        cpu_at_start = cpu_seconds(worker.process.pid)  # type: ignore[union-attr]
        published_at: dict[tuple[str, str], float] = {}
        publishers = {code: ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, s)
                      for code, s in signers.items()}
        for pub in publishers.values():
            await pub.__aenter__()
        start = time.time()
        pending = []
        for i, event in enumerate(events):
            if rate and i % 50 == 0:  # pace in small bursts to hold the offered load at `rate`
                await asyncio.sleep(max(0.0, start + i / rate - time.time()))
            published_at[(event["facility_code"], event["visit_code"])] = time.time()
            pending.append(await publishers[event["facility_code"]].publish(event))
        await asyncio.gather(*pending)
        published = time.time()
        for pub in publishers.values():
            await pub.__aexit__(None, None, None)

        while (await pool.fetchval("select count(*) from health_book_visits")) < events_n + 1:
            if not worker.running:
                raise RuntimeError(f"worker died:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)
        rows = await pool.fetch("select facility_code, visit_code, extract(epoch from projected_at) as t "
                                "from health_book_visits")
        worker_rss = peak_rss_mb(worker.process.pid)  # type: ignore[union-attr]
        worker_cpu = cpu_seconds(worker.process.pid) - cpu_at_start  # type: ignore[union-attr]
    finally:
        worker.stop()
        await pool.close()

    visible = {(r["facility_code"], r["visit_code"]): float(r["t"]) for r in rows}
    last_visible = max(visible[k] for k in published_at)
    return EndToEnd(events_n / (last_visible - start), events_n / (published - start),
                    [(visible[k] - t) * 1000 for k, t in published_at.items()], worker_cpu / events_n * 1000,
                    worker_rss)


async def run(events_n: int, citizens_n: int, rate: float) -> None:
    console = Console()
    result = await measure(events_n, citizens_n, rate, console)
    settings = Settings()
    offered = f"offered {rate:,.0f}/s" if rate else "unpaced"
    table = Table(title=f"healthbook end-to-end benchmark ({events_n} events, {citizens_n} citizens, {offered}, "
                        f"{settings.visit_partitions} partitions, batch {settings.batch_size})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("end-to-end throughput (first publish → last visible)", f"{result.throughput:,.0f} events/s")
    table.add_row("publish rate (sign + send, acks=all)", f"{result.publish_rate:,.0f} events/s")
    table.add_row("latency p50 (publish → visible)", f"{result.p50:,.0f} ms")
    table.add_row("latency p99", f"{result.p99:,.0f} ms")
    table.add_row("latency mean / max",
                  f"{statistics.fmean(result.latencies_ms):,.0f} / {max(result.latencies_ms):,.0f} ms")
    table.add_row("worker CPU per 1,000 events (user + system)", f"{result.worker_cpu_per_1000:,.2f} s")
    table.add_row("worker peak RSS", f"{result.worker_rss_mb:,.0f} MiB")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--citizens", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=0, help="offered load in events/s; 0 publishes unpaced")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.citizens, args.rate))


if __name__ == "__main__":
    main()
