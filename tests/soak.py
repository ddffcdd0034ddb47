"""The soak: a steady signed load on the three-node cluster while a seeded nemesis mixes faults at random.

Workers and query consumers are SIGKILLed, paused, added and removed; brokers are killed and paused
one at a time; PostgreSQL is restarted and stalled; the registries change (a key rotated then
revoked, a card mapped). Every few minutes a checker compares the book with the visits topic up to
the offsets the book says it applied; at the end the fault suite's full checker runs. The seed is
printed first: `--seed N` replays the same schedule.
    python -m tests.soak [--minutes 30] [--seed N] [--rate 150] [--docs docs/reliability.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from commands.identity_standin import (
    IdentityPlatform,
    ReplyTimeout,
    confirmation,
    ensure_identity_key,
    trust_identity_key,
)
from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from domain.keyring import ClinicKey, Keyring
from domain.validation import Accepted, validate
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from healthbook.retry import while_unreachable
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer, seal_visit
from synthetic.population import make_citizen, make_visit
from tests import cluster_control as cluster
from tests.cluster_control import memory_kib, stack
from tests.fault_suite import Load, Outcome, Plan, Services, _check, _counts, _register_clinics, content_digest

os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")
ROTATED_CLINIC = "01002"
MAPPED_CARD = "TE17990000000001"


# What the soak and the failover scenarios found, each fixed at its root with a regression test.
FINDINGS = (
    "A worker starting while one node of three was away exited: faust created its assignor topic with three "
    "replicas, which two brokers cannot place. `healthbook topics` now makes the worker's own topics "
    "(`tests/integration/test_cluster.py`).",
    "A query consumer whose group was rebalanced while it was paused (or cut off from the coordinator) exited "
    "on the refused offset commit (`CommitFailedError`, seed 29209 at 28.9 minutes). It now logs it and goes "
    "on; the partitions' new owner answers those requests again (`tests/unit/test_query_commit.py`).",
    "A worker paused while its partitions moved to another came back and replayed batches the other had "
    "applied; it wrote its stale table entry of each citizen back over the changelog's newer one, and the "
    "dedup table lost 23 visits the book held (seed 29209; the book stayed exact). A replayed batch now raises "
    "each citizen's entry to everything the book holds of them before writing it "
    "(`tests/unit/test_batch_step.py`, the test of a worker that was away).",
    "Late in the run a worker that took over partitions stalled the group for 25-30 s and reached 850-950 MiB "
    "resident (seed 29209): the dedup changelog was one uncompacted 100 MB segment per partition (57,000 "
    "whole-citizen entries for 500 citizens), since compaction never touches the active segment and Kafka's "
    "default segment is 1 GiB, and each takeover read it all. The changelog now rolls 8 MiB segments and is "
    "cleaned eagerly (`CHANGELOG_CONFIG`, set by `healthbook topics` and by faust alike).",
    "The checker expected the dedup table to know every visit in the book, but a visit the pending resolver "
    "moved in after its card was mapped reaches the table only when it comes again (the book fills that gap, "
    "as `streams/batch_step.py` says): the checker now allows exactly that gap and no other.",
    "The first worker's memory grew from 145 to 496 MiB (peak 870) over the run (seed 29209): every read-back "
    "of a few messages (a re-driven dead letter's original append time, a waiting visit set aside when its "
    "card contradicts it, offsets skipped at a rebalance) fetched and decoded up to the topic's largest "
    "message, 9 MiB, of its neighbours. A read-back now asks for 256 KiB per fetch (the broker still returns "
    "a larger first record whole). One worker under 120,000 messages with cards mapped half-way: peak 585 -> "
    "189 MiB, at the end 305 -> 175 MiB (`tests/integration/test_visit_size.py` reads a record eight "
    "fetches long back whole).",
)


@dataclass(frozen=True)
class Fault:
    """One step of the schedule: when (seconds after the start), what, and its random choices."""

    at: float
    kind: str
    hold: float = 0.0  # how long a pause, stall or outage lasts
    pick: int = 0  # which of the running targets (modulo their number)


FAULT_WEIGHTS = {
    "SIGKILL worker": 3, "SIGSTOP worker": 2, "worker joins": 1, "worker leaves": 1,
    "SIGKILL query consumer": 2, "SIGSTOP query consumer": 1,
    "SIGKILL broker": 2, "SIGSTOP broker": 2, "PostgreSQL restart": 1, "PostgreSQL stall": 1,
}
REGISTRY_STEPS = ((0.25, "key rotated"), (0.40, "old key revoked"), (0.50, "card visits before its mapping"),
                  (0.55, "card mapped"))


def schedule(seed: int, seconds: float) -> list[Fault]:
    """The nemesis's plan: a fault every 15-45 s until a minute before the end, and the registry changes."""
    rng = random.Random(seed)
    kinds, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
    faults: list[Fault] = []
    at = 20.0
    while at < seconds - 60:
        kind = rng.choices(kinds, weights)[0]
        faults.append(Fault(round(at, 1), kind, round(rng.uniform(5.0, 20.0), 1), rng.randrange(1000)))
        at += rng.uniform(15.0, 45.0)
    faults += [Fault(round(share * seconds, 1), kind) for share, kind in REGISTRY_STEPS]
    return sorted(faults, key=lambda f: f.at)


@dataclass
class Step:
    """What one fault did and how long the pipeline took to move again after it ended."""

    at: float
    what: str
    recovery: float | None = None


@dataclass
class SoakReport:
    """Everything the report in docs/reliability.md says."""

    seed: int
    minutes: float
    rate: float
    steps: list[Step] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    check_failures: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # process -> (seconds, RSS KiB)
    peaks: dict[str, int] = field(default_factory=dict)  # process -> VmHWM KiB
    lifetimes: dict[str, tuple[float, float]] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    outcome: Outcome | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the final check passed, no periodic check failed, nothing exited unasked, every answer held."""
        return bool(self.outcome and self.outcome.ok and not self.check_failures and not self.unexpected_exits
                    and not self.requests["inconsistent"] and not self.requests["unanswered"]
                    and not self.memory_growth_failures())

    def memory_growth(self) -> dict[str, tuple[int, int, int]]:
        """For processes that lived through most of the run: (median RSS early, median RSS late, peak), KiB."""
        grown = {}
        for name, samples in self.memory.items():
            if len(samples) < 12:
                continue
            first, last = samples[0][0], samples[-1][0]
            if last - first < 0.6 * self.minutes * 60:
                continue
            span = last - first
            early = [kib for t, kib in samples if first + 0.2 * span <= t <= first + 0.4 * span]
            late = [kib for t, kib in samples if t >= first + 0.8 * span]
            if early and late:
                grown[name] = (int(statistics.median(early)), int(statistics.median(late)), self.peaks.get(name, 0))
        return grown

    def memory_growth_failures(self) -> list[str]:
        """Long-lived processes whose resident memory late in the run is over twice what it was early on."""
        return [f"{name}: {early // 1024} MiB -> {late // 1024} MiB"
                for name, (early, late, _) in self.memory_growth().items() if late > 2 * early]


class Nemesis:
    """Carries out the schedule against the services, the cluster and PostgreSQL, one fault at a time."""

    def __init__(self, settings: Settings, services: Services, pool: asyncpg.Pool, load: Load, keyring: Keyring,
                 report: SoakReport, publishing: asyncio.Task) -> None:
        self.settings, self.services, self.pool, self.load = settings, services, pool, load
        self.keyring, self.report, self.publishing = keyring, report, publishing
        self.started = time.monotonic()
        self.extra_workers: list[ServiceProcess] = []
        self.incarnation = Counter[str]()
        self.old_signer: Signer | None = None
        self.old_entry: ClinicKey | None = None
        self.card_owner = make_citizen(random.Random(report.seed + 3), "079")

    def start(self, command: str, role: str) -> ServiceProcess:
        """Start a service, named by its role and incarnation for the memory figures."""
        self.incarnation[role] += 1
        process = self.services.start(command, len(self.services.processes))
        process.name = f"{role}#{self.incarnation[role]}"
        self.report.lifetimes[process.name] = (self.elapsed(), 0.0)
        return process

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def run(self, plan: list[Fault]) -> None:
        for fault in plan:
            await asyncio.sleep(max(0.0, fault.at - self.elapsed()))
            at = self.elapsed()
            what, recovery = await self.inject(fault)
            self.report.steps.append(Step(at, what, recovery))
            print(f"[{at:7.1f} s] {what}" + (f", recovered {recovery:.1f} s after" if recovery else ""),
                  flush=True)

    async def progress_after(self, since: float, baseline: int) -> float | None:
        """Seconds from since until the next visit is applied; None (and a failed check) after 300 s."""
        deadline = time.monotonic() + 300
        nudged = False
        while time.monotonic() < deadline:
            if (await _counts(self.pool)).get("consumed", 0) > baseline:
                return time.monotonic() - since
            if self.publishing.done() and not nudged:
                await self.load.nudge()
                nudged = True
            await asyncio.sleep(0.2)
        self.report.check_failures.append(f"{self.elapsed() / 60:.1f} min: no visit applied within 300 s of a "
                                          "fault's end")
        return None

    async def answered_after(self, since: float) -> float | None:
        """Seconds from since until a fresh signed request is answered; None (and a failed check) after 300 s."""
        async with IdentityPlatform(self.settings, ensure_identity_key(self.settings)) as platform:
            try:
                await platform.ask(confirmation(self.load.people[0].personal_id, 2026), timeout=300)
            except ReplyTimeout:
                self.report.check_failures.append(f"{self.elapsed() / 60:.1f} min: no request answered within "
                                                  "300 s of a fault's end")
                return None
        return time.monotonic() - since

    async def consumed(self) -> int:
        return (await _counts(self.pool)).get("consumed", 0)

    def _running(self, command: str) -> list[ServiceProcess]:
        return [p for p in self.services.processes if p.command == command and p.running
                and id(p) not in self.services.ended_by_suite]

    async def inject(self, fault: Fault) -> tuple[str, float | None]:
        kind = fault.kind
        if kind in ("SIGKILL worker", "SIGKILL query consumer"):
            command = "worker" if "worker" in kind else "query-consumer"
            # the first of each kind lives the whole run (its memory is the trend to watch): pause it, never kill it
            targets = self._running(command)[1:]
            if not targets:
                return await self.inject(replace(fault, kind=kind.replace("SIGKILL", "SIGSTOP")))
            victim = targets[fault.pick % len(targets)]
            baseline = await self.consumed()
            self.retire(victim, kill=True)
            await asyncio.sleep(fault.hold / 4)
            self.start(command, command)
            return f"{kind} {victim.name}, a new one {fault.hold / 4:.1f} s later", await self.recovery(
                command, baseline)
        if kind in ("SIGSTOP worker", "SIGSTOP query consumer"):
            command = "worker" if "worker" in kind else "query-consumer"
            targets = self._running(command)
            victim = targets[fault.pick % len(targets)]
            baseline = await self.consumed()
            victim.pause()
            await asyncio.sleep(fault.hold)
            victim.resume()
            return f"{kind} {victim.name} for {fault.hold:.1f} s", await self.recovery(command, baseline)
        if kind == "worker joins":
            if len(self._running("worker")) >= 4:
                return "worker joins: skipped, four are running", None
            self.extra_workers.append(self.start("worker", "worker"))
            return "a worker joined", None
        if kind == "worker leaves":
            extra = self._running("worker")[1:]
            if len(self._running("worker")) <= 1 or not extra:
                return "worker leaves: skipped, only one is running", None
            victim = extra[fault.pick % len(extra)]
            baseline = await self.consumed()
            self.retire(victim, kill=False)
            return f"{victim.name} left (SIGTERM)", await self.progress_after(time.monotonic(), baseline)
        if kind in ("SIGKILL broker", "SIGSTOP broker"):
            await cluster.fully_replicated(self.settings)  # never a second node away while one catches up
            node = 1 + fault.pick % 3
            baseline = await self.consumed()
            if kind == "SIGKILL broker":
                cluster.kill_node(node)
                await asyncio.sleep(fault.hold)
                cluster.start_node(node)
            else:
                cluster.pause_node(node)
                await asyncio.sleep(fault.hold)
                cluster.resume_node(node)
            recovery = await self.progress_after(time.monotonic(), baseline)
            synced = await cluster.fully_replicated(self.settings)
            return f"{kind} node {node} for {fault.hold:.1f} s (in sync again {synced:.1f} s after)", recovery
        if kind == "PostgreSQL restart":
            baseline = await self.consumed()
            stack("pg-down")
            await asyncio.sleep(fault.hold)
            stack("pg-up")
            return f"PostgreSQL stopped for {fault.hold:.1f} s", await self.progress_after(time.monotonic(), baseline)
        if kind == "PostgreSQL stall":
            baseline = await self.consumed()
            signal_postgres("STOP")
            await asyncio.sleep(fault.hold)
            signal_postgres("CONT")
            return f"PostgreSQL stalled (SIGSTOP) for {fault.hold:.1f} s", await self.progress_after(
                time.monotonic(), baseline)
        return await self.registry_change(kind), None

    async def recovery(self, command: str, baseline: int) -> float | None:
        """After a worker's fault the next visit applied; after a query consumer's the next request answered."""
        if command == "worker":
            return await self.progress_after(time.monotonic(), baseline)
        return await self.answered_after(time.monotonic())

    def retire(self, process: ServiceProcess, kill: bool) -> None:
        name = process.name
        self.report.lifetimes[name] = (self.report.lifetimes[name][0], self.elapsed())
        (self.services.kill if kill else self.services.stop)(process)

    async def registry_change(self, kind: str) -> str:
        ca = local_ca(self.settings)
        if kind == "key rotated":
            new = Signer.generate("k2")
            entry = ca.entry(ROTATED_CLINIC, new)
            self.keyring.put(ClinicKey(entry.clinic_code, entry.key_id, entry.public_key, entry.registered_at_ms))
            await ca.register(self.settings, [entry])
            await asyncio.sleep(5)  # a worker that has not read it yet catches up on the first k2 visit anyway
            self.old_signer = self.load.signers[ROTATED_CLINIC]
            self.old_entry = ca.entry(ROTATED_CLINIC, self.old_signer)
            self.load.signers[ROTATED_CLINIC] = new
            return f"clinic {ROTATED_CLINIC} rotated from key k1 to k2"
        if kind == "old key revoked":
            assert self.old_entry is not None and self.old_signer is not None
            now_ms = int(time.time() * 1000)
            revoked = replace(self.old_entry, revoked_at_ms=now_ms, issued_at_ms=now_ms)
            ref = self.keyring.get(ROTATED_CLINIC, self.old_signer.key_id)
            assert ref is not None
            self.keyring.put(replace(ref, revoked_at_ms=now_ms))
            await ca.register(self.settings, [revoked])
            await asyncio.sleep(30)  # a revocation is read by the workers within moments; then the k1 visits come
            await self.publish_signed_by(self.old_signer, 5)
            return f"clinic {ROTATED_CLINIC} key k1 revoked; 30 s later 5 visits signed with it (to dead-letter)"
        if kind == "card visits before its mapping":
            await self.publish_card_visits(3, 30_000_000)
            return f"3 visits under card {MAPPED_CARD}, not yet mapped (pending)"
        if kind == "card mapped":
            await ca.map_cards(self.settings, [(MAPPED_CARD, self.card_owner.personal_id)])
            await asyncio.sleep(10)
            await self.publish_card_visits(3, 30_000_100)
            return f"card {MAPPED_CARD} mapped to its owner; 3 more visits under it"
        raise ValueError(f"no fault named {kind!r}")

    async def publish_signed_by(self, signer: Signer, n: int) -> None:
        rng = random.Random(self.report.seed + 1)
        async with ClinicPublisher(clinic_broker(self.settings, ROTATED_CLINIC), self.settings.topics.visits,
                                   ROTATED_CLINIC, signer) as publisher:
            for i in range(n):
                person = rng.choice(self.load.people)
                event = make_visit(rng, person, ROTATED_CLINIC, 40_000_000 + i, datetime(2026, 3, 3, 9))
                await (await publisher.publish_raw(person.personal_id.encode(),
                                                   seal_visit(event, ROTATED_CLINIC, signer)))

    async def publish_card_visits(self, n: int, first: int) -> None:
        rng = random.Random(first)
        signer = self.load.signers["79001"]
        async with ClinicPublisher(clinic_broker(self.settings, "79001"), self.settings.topics.visits, "79001",
                                   signer) as publisher:
            for i in range(n):
                event = make_visit(rng, self.card_owner, "79001", first + i, datetime(2026, 4, 1 + i, 9))
                event["patient"] = dict(event["patient"], personal_id=None, insurance_card_numbers=[MAPPED_CARD])
                await (await publisher.publish_raw(f"card:{MAPPED_CARD}".encode(),
                                                   seal_visit(event, "79001", signer)))


def signal_postgres(signal_name: str) -> None:
    """SIGSTOP or SIGCONT every PostgreSQL server process: a stall, not an outage."""
    subprocess.run(["pkill", f"-{signal_name}", "-u", "postgres", "-x", "postgres"], check=False)


class PrefixChecker:
    """Compares the book with the visits topic up to the offsets the book records as applied, as the run goes."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self.settings, self.pool, self.keyring = settings, pool, keyring
        self.book: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.card_visits: set[tuple[str, str]] = set()
        self.rejected: Counter[str] = Counter()
        self.consumer = kafka.consumer(Broker.of(settings), "soak-checker")
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        self.partitions = [TopicPartition(self.settings.topics.visits, p)
                           for p in await kafka.partitions_of(Broker.of(self.settings), self.settings.topics.visits)]
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def check(self) -> list[str]:
        """The problems found at this moment (none when the book is exactly what its applied prefix implies)."""
        async def snapshot() -> tuple[dict[int, int], list[asyncpg.Record], dict[str, int]]:
            async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                offsets = {r["partition"]: r["next_offset"] for r in await conn.fetch(
                    "select partition, next_offset from applied_offsets where topic = $1",
                    self.settings.topics.visits)}
                rows = await conn.fetch("select facility_code, visit_code, version, event_id, record "
                                        "from health_book_visits")
                counts = {r["outcome"]: r["count"] for r in await conn.fetch(
                    "select outcome, count from pipeline_counts")}
                return offsets, rows, counts
        offsets, rows, counts = await while_unreachable("read a consistent snapshot of the book", snapshot)
        await self._read_to(offsets)
        actual = {(r["facility_code"], r["visit_code"]): (r["version"], r["event_id"], content_digest(r["record"]))
                  for r in rows if (r["facility_code"], r["visit_code"]) not in self.card_visits}
        problems = []
        lost = [k for k, v in self.book.items() if actual.get(k) != v]
        doubled = [k for k in actual if k not in self.book]
        if lost:
            problems.append(f"{len(lost)} visits of the applied prefix missing or stale in the book, e.g. {lost[:3]}")
        if doubled:
            problems.append(f"{len(doubled)} rows in the book that the applied prefix does not hold, e.g. "
                            f"{doubled[:3]}")
        if counts.get("consumed", 0) != sum(offsets.values()):
            problems.append(f"consumed {counts.get('consumed', 0)} but the applied offsets add up to "
                            f"{sum(offsets.values())}")
        for reason, n in self.rejected.items():
            if reason != "identity_mismatch" and counts.get(f"rejected:{reason}", 0) != n:
                problems.append(f"rejected:{reason} is {counts.get(f'rejected:{reason}', 0)}, the prefix implies {n}")
        return problems

    async def _read_to(self, offsets: dict[int, int]) -> None:
        while True:
            behind = [tp for tp in self.partitions if await self.consumer.position(tp) < offsets.get(tp.partition, 0)]
            if not behind:
                return
            for tp, batch in (await self.consumer.getmany(*behind, timeout_ms=500)).items():
                for m in batch:
                    if m.offset < offsets.get(tp.partition, 0):
                        self._apply(m)
                    else:  # read past the snapshot: come back to it next time
                        self.consumer.seek(tp, m.offset)
                        break

    def _apply(self, m: Any) -> None:
        result = validate(m.key, m.value, self.keyring)
        if not isinstance(result, Accepted):
            self.rejected[str(result.code)] += 1
            return
        event = result.event
        key = (event.facility_code, event.visit_code)
        if m.key and m.key.startswith(b"card:"):  # resolved through the identity registry: the final check's
            self.card_visits.add(key)
            return
        if key not in self.book or self.book[key][0] < event.version:
            self.book[key] = (event.version, event.event_id, content_digest(event.book_json()))


async def book_of(pool: asyncpg.Pool, personal_id: str, year: int) -> set[tuple[str, str]]:
    """The (facility, MA_LK) of a citizen's visits in a year, as the book holds them now."""
    rows = await while_unreachable("read the book", lambda: pool.fetch(
        "select facility_code, visit_code from health_book_visits where personal_id = $1 and year = $2",
        personal_id, year))
    return {(r["facility_code"], r["visit_code"]) for r in rows}


async def ask_continuously(settings: Settings, pool: asyncpg.Pool, load: Load, report: SoakReport,
                           publishing: asyncio.Task) -> None:
    """A signed request every two seconds: each answer must lie between the book before it and after it."""
    rng = random.Random(report.seed + 2)
    async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
        while not publishing.done():
            person = rng.choice(load.people)
            year = rng.choice((2025, 2026))
            consent = rng.random() > 0.1
            before = await book_of(pool, person.personal_id, year)
            try:
                reply = await platform.ask(confirmation(person.personal_id, year, consent_confirmed=consent),
                                           timeout=180)
            except ReplyTimeout:
                report.requests["unanswered"] += 1
                continue
            after = await book_of(pool, person.personal_id, year)
            shown = {(v.facility_code, v.visit_code) for v in reply.visits}
            if not consent:
                ok = reply.status != "ok" and not shown
            else:
                ok = reply.status == "ok" and before <= shown <= after
            report.requests["consistent" if ok else "inconsistent"] += 1
            if not ok:
                print(f"inconsistent answer for {person.personal_id}/{year} (consent {consent}): status "
                      f"{reply.status}, {len(shown)} shown, {len(before)} before, {len(after)} after", flush=True)
            await asyncio.sleep(2.0)


async def watch_memory(services: Services, report: SoakReport, started: float) -> None:
    """Every 10 s, each live process's resident memory; its peak (VmHWM) as last seen."""
    while True:
        now = time.monotonic() - started
        watched: dict[str, int] = {}
        for p in services.processes:
            if p.pid:
                watched[p.name] = p.pid
        for node in (1, 2, 3):
            pid = cluster.node_pid(node)
            if pid:
                watched[f"broker-{node} (pid {pid})"] = pid
        for name, pid in watched.items():
            rss, peak = memory_kib(pid), memory_kib(pid, "VmHWM")
            if rss:
                report.memory.setdefault(name, []).append((now, rss))
            if peak:
                report.peaks[name] = max(report.peaks.get(name, 0), peak)
        await asyncio.sleep(10)


async def periodic_checks(checker: PrefixChecker, services: Services, report: SoakReport, every: float,
                          started: float) -> None:
    while True:
        await asyncio.sleep(every)
        problems = await checker.check()
        exits = services.unexpected_exits()
        if exits:
            problems.append(f"exited without the nemesis: {'; '.join(exits)}")
        line = (f"{(time.monotonic() - started) / 60:.1f} min: {len(checker.book):,} visits of the applied prefix "
                f"agree with the book" if not problems else f"{(time.monotonic() - started) / 60:.1f} min: "
                f"{'; '.join(problems)}")
        report.checks.append(line)
        if problems:
            report.check_failures.append(line)
        print(f"check {line}", flush=True)


async def soak(minutes: float, seed: int, rate: float, check_every: float) -> SoakReport:
    """Run the soak and its checks; return the report."""
    report = SoakReport(seed, minutes, rate)
    base = cluster.use_brokers(3)
    settings = base.model_copy(update={
        "topic_prefix": f"soak-{datetime.now():%H%M%S}-{seed}.", "worker_metrics_port": 0, "query_metrics_port": 0,
        "database_url": await recreate_database(base.database_url, "healthbook_soak"), "batch_within_seconds": 0.1})
    await ensure_topics(settings, Broker.of(settings))
    pool = await connect_pool(settings.database_url, min_size=1, max_size=3)
    signers, keyring = await _register_clinics(settings)
    trust_identity_key(settings.identity_keys_file, ensure_identity_key(settings))
    services = Services(settings)
    load = Load(settings, signers, Plan("soak", int(rate * minutes * 60), 2_000, rate), seed=seed)
    publishing = asyncio.create_task(load.run())
    nemesis = Nemesis(settings, services, pool, load, keyring, report, publishing)
    for command in ("worker", "worker", "query-consumer", "query-consumer"):
        nemesis.start(command, command)
    checker = PrefixChecker(settings, pool, keyring)
    await checker.start()
    started = nemesis.started
    plan = schedule(seed, minutes * 60)
    background = [asyncio.create_task(watch_memory(services, report, started)),
                  asyncio.create_task(periodic_checks(checker, services, report, check_every, started))]
    asking = asyncio.create_task(ask_continuously(settings, pool, load, report, publishing))
    try:
        await nemesis.run(plan)
        await publishing
        await asking
        for task in background:
            task.cancel()
        problems = await checker.check()
        report.checks.append(f"end of the load: {len(checker.book):,} visits of the applied prefix; "
                             f"{'; '.join(problems) or 'agree with the book'}")
        if problems:
            report.check_failures.append(report.checks[-1])
        outcome = Outcome(load.plan, published=load.sent, poison=load.poison)
        await _check(outcome, settings, pool, keyring, services)
        outcome.requests_answered = report.requests["consistent"] > 0
        report.outcome = outcome
        report.unexpected_exits = services.unexpected_exits()
    finally:
        for task in (*background, asking, publishing):
            task.cancel()
        signal_postgres("CONT")
        for node in (1, 2, 3):
            cluster.resume_node(node)
        for p in services.processes:
            p.resume()
        services.stop_all()
        await checker.stop()
        await pool.close()
        report.seconds = time.monotonic() - started
    return report


def report_markdown(report: SoakReport) -> str:
    """The soak's section of docs/reliability.md."""
    o = report.outcome
    lines = [f"## The soak: {report.minutes:g} minutes of random faults on three brokers", "",
             f"Generated by `make soak` (`python -m tests.soak --minutes {report.minutes:g} --seed {report.seed}`) "
             f"on {datetime.now():%Y-%m-%d %H:%M}; `--seed {report.seed}` replays the same schedule.", "",
             f"A steady {report.rate:g} messages/s for {report.minutes:g} minutes from three clinics (re-sends, "
             "corrections and 2% poison, as the fault suite's load) plus a signed request every two seconds, "
             "one in ten without consent, on the three-node cluster with two workers and two query consumers "
             "to begin with. The first worker and query consumer are only ever paused, never killed, so their "
             "memory is followed over the whole run.", "",
             "| at | fault | recovered after |", "| --- | --- | --- |"]
    lines += [f"| {s.at / 60:.1f} min | {s.what} | {f'{s.recovery:.1f} s' if s.recovery is not None else '-'} |"
              for s in report.steps]
    recoveries = [s.recovery for s in report.steps if s.recovery is not None]
    if recoveries:
        lines += ["", f"Recovery over {len(recoveries)} faults: median {statistics.median(recoveries):.1f} s, "
                      f"worst {max(recoveries):.1f} s (from the end of the fault to the next visit applied, or "
                      "for a query consumer's fault to the next request answered)."]
    lines += ["", "Checks as the run went (the book against the visits topic up to the offsets it records):", ""]
    lines += [f"- {c}" for c in report.checks]
    if o is not None:
        lines += ["", "The final check (the fault suite's checker, over the whole topic):", "",
                  "| messages | poison | rows (expected) | lost | doubled | dead-lettered (expected) | "
                  "dead letters sent again | counts exact | dedup state agrees | unexpected exits |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                  f"| {o.published:,} | {o.poison} | {o.rows:,} ({o.expected_rows:,}) | {o.lost} | {o.doubled} | "
                  f"{o.dead_lettered} ({o.expected_dead}) | {o.dead_letter_repeats} | "
                  f"{'yes' if o.counts_match else 'no'} | {'yes' if o.dedup_state_agrees else 'no'} | "
                  f"{'; '.join(o.unexpected_exits) or 'none'} |"]
        if o.faults:
            lines += ["", "The checker noted: " + "; ".join(o.faults) + "."]
    r = report.requests
    lines += ["", f"Requests: {r['consistent']:,} answered consistently with consent and the book, "
                  f"{r['inconsistent']} inconsistent, {r['unanswered']} unanswered within 180 s.", "",
              "Memory (resident set, MiB) of the processes that lived through most of the run:", "",
              "| process | early (20-40% of its life) | late (last 20%) | peak (VmHWM) |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {early / 1024:.0f} | {late / 1024:.0f} | {peak / 1024:.0f} |"
              for name, (early, late, peak) in sorted(report.memory_growth().items())]
    short = sorted((name, peak) for name, peak in report.peaks.items() if name not in report.memory_growth())
    if short:
        lines += ["", "Peak resident memory of the shorter-lived ones (MiB): "
                  + ", ".join(f"{name} {peak / 1024:.0f}" for name, peak in short) + "."]
    lines += ["", f"Result: **{'pass' if report.ok else 'FAIL'}** in {report.seconds / 60:.1f} minutes.", "",
              "Found by the soak and the failover scenarios, and fixed:", ""]
    lines += [f"- {finding}" for finding in FINDINGS]
    return "\n".join(lines)


def write_report(path: Path, report: SoakReport) -> None:
    """Put the soak's section into docs/reliability.md, replacing the one before."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Reliability\n"
    marker = "\n## The soak:"
    head = text.split(marker)[0].rstrip("\n")
    path.write_text(f"{head}\n\n{report_markdown(report)}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 30))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED") or random.randrange(1, 10**6)))
    parser.add_argument("--rate", type=float, default=150.0, help="visits topic messages per second")
    parser.add_argument("--check-every", type=float, default=300.0, help="seconds between checks during the run")
    parser.add_argument("--docs", help="Markdown file whose soak section to rewrite with the report")
    args = parser.parse_args()
    print(f"soak: seed {args.seed}, {args.minutes:g} minutes (replay with --seed {args.seed})", flush=True)
    for fault in schedule(args.seed, args.minutes * 60):
        print(f"  planned at {fault.at:7.1f} s: {fault.kind}", flush=True)
    report = asyncio.run(soak(args.minutes, args.seed, args.rate, args.check_every))
    print(report_markdown(report))
    if args.docs:
        write_report(PROJECT_ROOT / args.docs, report)
    cluster.use_brokers(1)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
