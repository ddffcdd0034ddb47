"""make bench: every path over one backlog in one run, against the transport and the work ceilings.

N signed visits are published once; each path then drains the same backlog from the beginning,
into a database of its own, and the table says what each measured:

- transport ceiling: a bare aiokafka consumer reading the bytes, nothing else;
- work ceiling: validation, the sensitivity judgement, the book row and the analytics record over those bytes,
  one process, no I/O;
- decode + verify only: the Avro decodes and the signature check alone, the part of the work ceiling no rule
  may skip. It and the work ceiling run in alternating slices of the backlog, in this process with the
  worker's garbage-collector settings, so a shared machine's slow minutes weigh on both alike;
- plain batched loop: aiokafka `getmany` into the worker's own batch step (`streams/batch_step.py`), no faust;
- the worker with one process, and with two (`healthbook worker --processes 2`), first row to last row;
- faust alone (`benchmarks/faust_only.py`): the worker's faust app and batches with no work in them, then with
  the deduplication table's writes (an entry per citizen a batch): faust's own cost, which the worker pays on
  top of the plain loop's, and so the bound on the worker's share of the plain loop;
- replay (`healthbook replay`) of the same topic, with its peak memory;
- the worker paced at 1,000 visits/s offered: publish → visible latency (a topic of its own).

Usage: python benchmarks/ceilings.py [--events N] [--citizens C]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from benchmarks import end_to_end
from benchmarks.end_to_end import cpu_seconds, machine_busy_seconds, own_cpu_seconds, peak_rss_mb, stack_cpu_seconds
from commands.local_ca import local_ca
from commands.processes import ServiceProcess, settings_env
from domain import deidentify
from domain.batch import Delivery
from domain.identity import IdentityDirectory
from domain.keyring import ClinicKey, Keyring
from domain.rows import visit_row
from domain.sensitive_visit import SensitivePolicy
from domain.validation import Accepted, SigningWindow, validate_safely
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.gc_tuning import tune_for_service
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from healthbook.store import BookWriter, PostgresBatchStore
from producers.publisher import ClinicPublisher
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from streams.batch_step import BatchStep, Checks, topic_range_reader
from streams.outlets import KafkaOutlets
from synthetic.population import CLINICS, make_population

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")  # the harness sets up topics and ACLs itself
LOGS = PROJECT_ROOT / ".local" / "logs"
PACED_RATE, PACED_EVENTS = 1_000.0, 10_000
# The ratio is defined on a quiet machine: before its slices, the bench waits until the broker and PostgreSQL
# have finished with the backlog just published (under this share of a core for a whole second).
QUIET_STACK_SHARE, MOST_SETTLING_SECONDS = 0.05, 60.0


@dataclass
class Neighbours:
    """What the rest of the machine did while the ratio's slices ran: cores busy beyond this process, the stack's."""

    settled_after: float
    others: float
    stack: float

    def sentence(self) -> str:
        """How quiet the machine was, as the bench prints it beside the ratio."""
        return (f"meanwhile the rest of the machine kept {self.others:.2f} of its 2 cores busy, the broker and "
                f"PostgreSQL {self.stack:.2f} of one (waited {self.settled_after:.0f} s for them to settle)")


def _settle() -> float:
    """Wait until the broker and PostgreSQL are quiet, at most MOST_SETTLING_SECONDS; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < MOST_SETTLING_SECONDS:
        before = stack_cpu_seconds()
        time.sleep(1.0)
        if stack_cpu_seconds() - before < QUIET_STACK_SHARE:
            break
    return time.monotonic() - started


@dataclass
class Figure:
    """One path's result: visits per second and what the figure covers."""

    path: str
    rate: float
    note: str


async def _publish(settings: Settings, events_n: int, citizens_n: int) -> dict[str, Signer]:
    signers = {code: Signer.generate("k1") for code in CLINICS}
    ca = local_ca(settings)
    await ca.register(settings, [ca.entry(code, s) for code, s in signers.items()])
    _, events = make_population(7, citizens_n, events_n, list(CLINICS), (2025, 2026))
    for code, signer in signers.items():
        async with ClinicPublisher(clinic_broker(settings, code), settings.topics.visits, code, signer) as pub:
            await pub.publish_all([e for e in events if e["facility_code"] == code])
    return signers


async def _reader_from_start(settings: Settings, client: str) -> tuple[AIOKafkaConsumer, int]:
    """A started consumer assigned every visits partition at its beginning, and how many messages they hold."""
    topic = settings.topics.visits
    ends = await kafka.end_offsets(Broker.of(settings), topic)
    reader = kafka.consumer(Broker.of(settings), client)
    await reader.start()
    partitions = [TopicPartition(topic, p) for p in ends]
    reader.assign(partitions)
    await reader.seek_to_beginning(*partitions)
    return reader, sum(ends.values())


def _keyring(signers: dict[str, Signer]) -> Keyring:
    """The clinics' keys, trusted as registered (the benchmark checks speed, not certificates)."""
    keyring = Keyring(None)
    for code, signer in signers.items():
        keyring.put(ClinicKey(code, signer.key_id, signer.public_key, 0))
    return keyring


async def _read_all(settings: Settings) -> tuple[list[Delivery], float]:
    """Every message of the visits topic, and how long a bare consumer took to fetch them."""
    reader, total = await _reader_from_start(settings, "bench-transport")
    found: list[Delivery] = []
    started = time.perf_counter()
    try:
        while len(found) < total:
            for records in (await reader.getmany(timeout_ms=1000, max_records=5000)).values():
                found += [Delivery(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value) for r in records]
    finally:
        await reader.stop()
    return found, time.perf_counter() - started


def _work_ceiling(deliveries: list[Delivery], signers: dict[str, Signer]) -> float:
    """Decisions, row and analytics record for every message in this process; visits per second."""
    keyring = _keyring(signers)
    pseudonym_key = b"p" * 32
    window, sensitive = _window_and_policy()
    started = time.perf_counter()
    for d in deliveries:
        result = validate_safely(d.key, d.value, keyring, d.timestamp_ms, window)
        if isinstance(result, Accepted):
            visit_row(result, d.partition, d.offset)
            if not deidentify.withheld(result.event, sensitive):
                deidentify.encode(result.event, pseudonym_key)
    return len(deliveries) / (time.perf_counter() - started)


@functools.cache
def _window_and_policy() -> tuple[SigningWindow, SensitivePolicy]:
    """The signing window and sensitivity policy, built once as the worker builds them, not once a slice."""
    settings = Settings()
    return settings.signing_window, settings.sensitive


def _measured_quietly(deliveries: list[Delivery], signers: dict[str, Signer]
                      ) -> tuple[float, float, list[float], Neighbours]:
    """_work_and_floor once the stack has settled, with what the rest of the machine did meanwhile."""
    settled_after = _settle()
    busy, stack, own, wall = machine_busy_seconds()[0], stack_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    work, floor, ratios = _work_and_floor(deliveries, signers)
    wall = time.monotonic() - wall
    others = (machine_busy_seconds()[0] - busy - (own_cpu_seconds() - own)) / wall
    return work, floor, ratios, Neighbours(settled_after, max(0.0, others), (stack_cpu_seconds() - stack) / wall)


def _work_and_floor(deliveries: list[Delivery], signers: dict[str, Signer], slice_size: int = 250
                    ) -> tuple[float, float, list[float]]:
    """Work ceiling and floor over alternating slices (each goes first in every other one); rates and ratios.

    A slice of 250 visits takes each path about 50 ms: short enough that a neighbour's burst on a shared
    machine mostly lands on both paths of one pair, and 80 pairs over 20,000 visits make a steady median.
    """
    # The worker's collector settings: with the default ones, collections over this process's many live
    # deliveries would weigh on both paths as they never do in the worker.
    tune_for_service()
    seconds = {_work_ceiling: 0.0, _floor: 0.0}
    ratios = []
    for start in range(0, len(deliveries), slice_size):
        part = deliveries[start:start + slice_size]
        order = (_floor, _work_ceiling) if start // slice_size % 2 == 0 else (_work_ceiling, _floor)
        took = {path: len(part) / path(part, signers) for path in order}
        for path, spent in took.items():
            seconds[path] += spent
        ratios.append(took[_work_ceiling] / took[_floor])
    return len(deliveries) / seconds[_work_ceiling], len(deliveries) / seconds[_floor], ratios


def _floor(deliveries: list[Delivery], signers: dict[str, Signer]) -> float:
    """Only the two steps no rule may skip: decode envelope and payload once, verify the signature; visits per second.

    Both are native code (fastavro, libsodium), so this bounds what any one Python process can reach.
    """
    keys = {code: signer.public_key for code, signer in signers.items()}
    started = time.perf_counter()
    for d in deliveries:
        signed = wire.decode(d.value, catalogue.SIGNED_VISIT)
        wire.decode(signed["payload"], catalogue.VISIT_EVENT)
        envelope.verify(keys[signed["clinic_code"]], signed["signature"], envelope.visit_signing_input(signed))
    return len(deliveries) / (time.perf_counter() - started)


async def _own_database(base: Settings, name: str) -> Settings:
    return base.model_copy(update={"database_url": await recreate_database(base.database_url, name),
                                   "worker_id": f"{base.topic_prefix}{name}", "worker_metrics_port": 0})


async def _plain_loop(base: Settings, signers: dict[str, Signer], total: int) -> tuple[float, float]:
    """aiokafka getmany batches into the worker's batch step, without faust; visits per second, CPU µs a visit."""
    settings = await _own_database(base, "healthbook_bench_plain")
    pool = await connect_pool(settings.database_url, min_size=1, max_size=4)
    producer = kafka.producer(Broker.of(settings), "bench-plain")
    await producer.start()

    step = BatchStep(settings.topics.visits, PostgresBatchStore(pool, BookWriter()),
                     Checks(_keyring(signers), IdentityDirectory(None), settings.signing_window,
                            sensitive=settings.sensitive), {},
                     KafkaOutlets(producer, settings.topics, b"p" * 32, settings.sensitive),
                     topic_range_reader(Broker.of(settings)))
    reader, _ = await _reader_from_start(settings, "bench-plain")
    done = 0
    started, cpu_before = time.perf_counter(), own_cpu_seconds()
    try:
        while done < total:
            fetched = await reader.getmany(timeout_ms=200, max_records=settings.batch_size)
            batch = [Delivery(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                     for records in fetched.values() for r in records]
            if batch:
                await step.run(batch)
                done += len(batch)
        elapsed, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu_before
    finally:
        await reader.stop()
        await producer.stop()
        await pool.close()
    return total / elapsed, cpu / total * 1e6



async def _worker(base: Settings, name: str, total: int, processes: int) -> tuple[float, str, Settings]:
    """A worker (or a supervisor of several) from its first row to the backlog's last; rate, resources, settings."""
    settings = await _own_database(base, name)
    await ensure_topics(settings, Broker.of(settings))  # ACLs for this worker id
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    args = ("--processes", str(processes)) if processes > 1 else ()
    service = ServiceProcess("worker", settings, LOGS / f"bench-{name}.log", args).start()
    process = service.process
    assert process is not None
    try:
        first = last = None
        while True:
            count, first, last = await pool.fetchrow(
                "select count(*), extract(epoch from min(projected_at)), extract(epoch from max(projected_at)) "
                "from health_book_visits")
            if count >= total:
                break
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited; see {service.log_path}")
            await asyncio.sleep(0.5)
        resources = ""
        if processes == 1:  # its CPU while draining: what is left of one core is time it waited
            busy = cpu_seconds(process.pid) / (float(last) - float(first))
            resources = f"CPU {cpu_seconds(process.pid) / total * 1000:.2f} s per 1,000 ({busy:.0%} of a core " \
                        f"while draining, start-up included), peak RSS {peak_rss_mb(process.pid):.0f} MiB"
    finally:
        service.stop(60)
        await pool.close()
    return total / (float(last) - float(first)), resources, settings


async def _faust_only(base: Settings, name: str, total: int, with_table: bool) -> tuple[float, float]:
    """faust alone (benchmarks/faust_only.py) over the backlog, batched and acknowledged as the worker does."""
    settings = await _own_database(base, name)
    await ensure_topics(settings, Broker.of(settings))  # ACLs for this app id
    out = LOGS / f"bench-{name}.json"
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "benchmarks.faust_only", "--expect", str(total), "--out", str(out)]
    with (LOGS / f"bench-{name}.log").open("ab") as log:
        process = subprocess.Popen([*args, *(["--table"] if with_table else [])], cwd=PROJECT_ROOT,
                                   env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT)
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), 600)
    finally:
        if process.poll() is None:
            process.kill()
    if not out.exists():
        raise RuntimeError(f"faust alone did not finish; see {LOGS / f'bench-{name}.log'}")
    result = json.loads(out.read_text())
    return result["events"] / result["seconds"], result["cpu_seconds"] / result["events"] * 1e6


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _replay(settings: Settings, processes: int) -> tuple[float, float]:
    """`healthbook replay` over the topic into a worker's database: seconds and the largest process's peak RSS."""
    started = time.perf_counter()
    log = LOGS / "bench-replay.log"
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "commands.cli", "replay", "--processes", str(processes)],
                                   cwd=PROJECT_ROOT, env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT)
    peak = 0.0
    while process.poll() is None:
        for pid in (process.pid, *_children(process.pid)):
            with contextlib.suppress(OSError):  # it ended between listing and reading
                peak = max(peak, peak_rss_mb(pid))
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"replay failed; see {log}")
    return elapsed, peak


async def run(events_n: int, citizens_n: int) -> None:
    console = Console(width=150)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    base = Settings().model_copy(update={"topic_prefix": f"bench-ceil-{stamp}."})
    await ensure_topics(base, Broker.of(base))
    console.print(f"publishing {events_n:,} signed visits of {citizens_n:,} citizens ...")
    signers = await _publish(base, events_n, citizens_n)
    deliveries, transport_seconds = await _read_all(base)
    total = len(deliveries)
    figures = [Figure("bare aiokafka consumer, bytes only (transport ceiling)", total / transport_seconds,
                      "fetch only")]
    console.print("work ceiling and its floor, in alternating slices ...")
    work, floor, ratios, neighbours = _measured_quietly(deliveries, signers)
    quartiles = statistics.quantiles(ratios, n=4)
    figures.append(Figure("validate + judge + row + analytics record, one process, no I/O (work ceiling)", work,
                          "decode, verify, rules, sensitivity, row, analytics record"))
    figures.append(Figure("decode + verify only, one process (what no rule may skip)", floor,
                          f"fastavro decode and libsodium Ed25519 verify: {1e6 / floor:.0f} µs a visit "
                          f"of the work ceiling's {1e6 / work:.0f} µs; work ceiling / floor over the slices "
                          f"median {statistics.median(ratios):.2f}x (middle half {quartiles[0]:.2f} to "
                          f"{quartiles[2]:.2f}x, {len(ratios)} slices); {neighbours.sentence()}"))
    console.print("plain batched loop ...")
    plain, plain_cpu = await _plain_loop(base, signers, total)
    figures.append(Figure("plain loop: getmany + the worker's batch step, no faust", plain,
                          f"one transaction and acknowledged analytics records per batch; CPU {plain_cpu:.0f} µs "
                          "a visit"))
    replayed, worker_rate = base, 0.0
    for processes, name in ((1, "healthbook_bench_w1"), (2, "healthbook_bench_w2")):
        console.print(f"the worker, {processes} process(es) ...")
        rate, resources, used = await _worker(base, name, total, processes)
        if processes == 1:
            replayed, worker_rate = used, rate
        figures.append(Figure(f"the healthbook worker, {processes} process{'es' if processes > 1 else ''}", rate,
                              "first row to last row" + (f"; {resources}" if resources else "")))
    faust_cpu = 0.0
    for with_table, name in ((False, "healthbook_bench_faust"), (True, "healthbook_bench_faust_table")):
        console.print("faust alone" + (" with the deduplication table's writes" if with_table else "") + " ...")
        rate, faust_cpu = await _faust_only(base, name, total, with_table)
        figures.append(Figure("faust alone: the worker's app and batches, no work"
                              + (", + a table entry per citizen a batch" if with_table else ""), rate,
                              f"CPU {faust_cpu:.0f} µs a visit"))
    for processes in (1, 2):
        console.print(f"replay, {processes} process(es) ...")
        seconds, rss = _replay(replayed, processes)
        figures.append(Figure(f"replay (healthbook replay --processes {processes})", total / seconds,
                              f"{seconds:.1f} s including start-up, merge and swap; peak RSS {rss:.0f} MiB "
                              "(largest process)"))
    console.print(f"paced at {PACED_RATE:,.0f}/s ...")
    paced = await end_to_end.measure(PACED_EVENTS, citizens_n, PACED_RATE, console)
    figures.append(Figure(f"the worker, paced at {PACED_RATE:,.0f} visits/s offered", paced.throughput,
                          f"publish → visible p50 {paced.p50:,.0f} ms, p99 {paced.p99:,.0f} ms over "
                          f"{PACED_EVENTS:,} visits; publisher on the same cores"))
    table = Table(title=f"healthbook paths over one backlog of {total:,} signed visits "
                        f"({base.visit_partitions} partitions, batch {base.batch_size})", title_justify="left")
    for column, justify in (("path", "left"), ("visits/s", "right"), ("vs work ceiling", "right"),
                            ("what it measured", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for figure in figures:
        ratio = "—" if "transport" in figure.path or "paced" in figure.path else f"{figure.rate / work:.0%}"
        table.add_row(figure.path, f"{figure.rate:,.0f}", ratio, figure.note)
    console.print(table)
    # The worker runs the plain loop's work inside faust on about one core, overlapping the waits the plain
    # loop sits out: at best its wall time a visit is the plain loop's CPU plus faust's, table included.
    bound = (1e6 / plain) / (plain_cpu + faust_cpu)
    console.print(f"the worker reached {worker_rate / plain:.0%} of the plain loop; faust bounds it at {bound:.0%} "
                  f"(plain loop {1e6 / plain:.0f} µs a visit, of it {plain_cpu:.0f} µs CPU; faust with its table "
                  f"{faust_cpu:.0f} µs CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--citizens", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.citizens))


if __name__ == "__main__":
    main()
