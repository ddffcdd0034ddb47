"""make bench-replay: rebuild a national-size book with `healthbook replay` and measure it.

Publishes N signed visits (templates of the synthetic population under fresh personal IDs and visit
codes, each signed by its clinic) to a topic of its own, then runs `healthbook replay --processes P`
into a database of its own. Prints the wall time, the rate, each process's peak memory and how long
the live book was locked at the swap: the longest a running worker's write could wait. Usage:
    python -m benchmarks.replay_national [--visits 1000000] [--citizens 100000] [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from datetime import datetime

from rich.console import Console
from rich.table import Table

from benchmarks.end_to_end import peak_rss_mb
from commands.local_ca import local_ca
from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from schemas.visit import VisitEvent
from synthetic.population import CLINICS, make_population

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")  # the harness sets up topics and ACLs itself
TEMPLATES = 10_000
IN_FLIGHT = 5_000  # sends queued before waiting for their acknowledgements


async def _publish(settings: Settings, visits: int, citizens: int, console: Console) -> float:
    """Sign and publish the visits; seconds it took."""
    signers = {code: Signer.generate("k1") for code in CLINICS}
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry(code, s) for code, s in signers.items()])
    _, templates = make_population(13, TEMPLATES // 10, TEMPLATES, list(CLINICS), (2024, 2025, 2026))
    events = [VisitEvent.model_validate(e).model_dump() for e in templates]
    publishers = {code: ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, signer)
                  for code, signer in signers.items()}
    for publisher in publishers.values():
        await publisher.__aenter__()
    per_citizen = max(1, visits // citizens)
    started = time.perf_counter()
    pending: list[asyncio.Future] = []
    try:
        for n in range(visits):
            event, citizen = events[n % len(events)], n // per_citizen
            # the citizen is a template's patient (birth date and sex agree with the ID) with a number of their own
            patient = events[citizen % len(events)]["patient"]
            record = dict(event, visit_code=f"{event['facility_code']}-R-{n:09d}", patient=dict(
                patient, personal_id=patient["personal_id"][:6] + f"{citizen % 1_000_000:06d}"))
            pending.append(await publishers[record["facility_code"]].publish(record, validate=False))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending = []
            if (n + 1) % 100_000 == 0:
                console.print(f"published {n + 1:,} visits ({(n + 1) / (time.perf_counter() - started):,.0f}/s)")
        await asyncio.gather(*pending)
    finally:
        for publisher in publishers.values():
            await publisher.__aexit__(None, None, None)
    return time.perf_counter() - started


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for child in (int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()):  # noqa: SIM115
            found += [child, *_descendants(child)]
    return found


def _replay(settings: Settings, processes: int) -> tuple[float, dict[int, float], str]:
    """`healthbook replay --processes P`: seconds, each process's peak RSS (MiB), and its last line."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "commands.cli", "replay", "--processes", str(processes)],
                               cwd=PROJECT_ROOT, env=settings_env(settings), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, float] = {}
    output: list[str] = []
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while process.poll() is None:
        for pid in (process.pid, *_descendants(process.pid)):
            with contextlib.suppress(OSError):  # it ended between listing and reading
                peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mb(pid))
        with contextlib.suppress(TypeError):  # nothing to read yet
            output.append(process.stdout.read() or "")
        time.sleep(0.2)
    output.append(process.stdout.read() or "")
    elapsed = time.perf_counter() - started
    text = "".join(output)
    if process.returncode:
        raise RuntimeError(f"replay failed:\n{text[-3000:]}")
    return elapsed, peaks, text.strip().splitlines()[-1]


async def run(visits: int, citizens: int, processes: int) -> None:
    console = Console(width=150)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings()
    settings = base.model_copy(update={
        "topic_prefix": f"bench-replay-{stamp}.",
        "database_url": await recreate_database(base.database_url, "healthbook_bench_replay")})
    await ensure_topics(settings, Broker.of(settings))
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)  # the live tables, migrated
    await pool.close()
    console.print(f"publishing {visits:,} signed visits of {citizens:,} citizens ...")
    published = await _publish(settings, visits, citizens, console)
    console.print(f"replaying in {processes} process(es) ...")
    seconds, peaks, last = _replay(settings, processes)
    locked = re.search(r"locked (\d+) ms", last)
    pool = await connect_pool(settings.database_url, min_size=1, max_size=1)
    try:
        rows = await pool.fetchval("select count(*) from health_book_visits")
    finally:
        await pool.close()
    table = Table(title=f"replay of {visits:,} signed visits ({settings.visit_partitions} partitions, "
                        f"healthbook replay --processes {processes})", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("published (sign + send, acks=all)", f"{published:,.0f} s ({visits / published:,.0f} visits/s)")
    table.add_row("replay wall time, start-up, merge and swap included", f"{seconds / 60:,.1f} min "
                  f"({visits / seconds:,.0f} visits/s)")
    table.add_row("rows in the swapped-in book", f"{rows:,}")
    table.add_row("peak RSS per process", ", ".join(f"{peak:,.0f}" for peak in sorted(peaks.values(),
                                                                                        reverse=True)) + " MiB")
    table.add_row("live book locked at the swap (a worker's write waits at most this)",
                  f"{locked.group(1) if locked else '?'} ms")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--citizens", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(run(args.visits, args.citizens, args.processes))


if __name__ == "__main__":
    main()
