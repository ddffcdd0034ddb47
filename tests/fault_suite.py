"""The fault suite: a steady signed load with poison while workers die, the broker restarts and PostgreSQL stops.

Each scenario gets its own topics and database. Afterwards the visits topic is read back and
the expected health book, dead letters and counts are derived from it with the pure rules; the
real ones must match exactly. `make faults` runs the full plan and rewrites docs/reliability.md:
    python -m tests.fault_suite [--events 50000] [--citizens 1000] [--docs docs/reliability.md]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from commands.identity_standin import IdentityPlatform, confirmation, ensure_identity_key, trust_identity_key
from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from consumers.dead_letters import read_dead_letters
from domain.identity import IdentityDirectory, Mismatch, WaitingForCard, resolve
from domain.keyring import ClinicKey, Keyring
from domain.validation import Accepted, validate
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics, partitions_of
from healthbook.retry import while_unreachable
from healthbook.topic_follower import TopicFollower
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer, seal_visit
from synthetic.population import CLINICS, make_citizen, make_visit
from tests import cluster_control as cluster
from tests.cluster_control import stack

# The harness sets up its own stack, topics and ACLs: it logs in to the broker as the admin principal.
os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")

_CORPUS = {c["target"]: bytes.fromhex(c["value"])
           for c in json.loads((Path(__file__).parent / "fuzz" / "regressions.json").read_text())["cases"]}
OUT_OF_RANGE_ENVELOPE = _CORPUS["visit_envelope"]
UNREADABLE_CLINIC_KEY = _CORPUS["clinic_key"]
UNREADABLE_IDENTITY_CARD = _CORPUS["identity_card"]
GARBAGE_REQUESTS = [_CORPUS["integration_request"], b"\x00\x00\x00\x00\x09" + b"\xff" * 24, b"not a request"]


def contradicting(personal_id: str) -> str:
    """A well-formed personal ID of the same province and sex digit, with another birth year."""
    return personal_id[:4] + f"{(int(personal_id[4:6]) + 7) % 100:02d}" + personal_id[6:]
LOGS = PROJECT_ROOT / ".local" / "logs" / "faults"


@dataclass(frozen=True)
class Plan:
    """How big the load is and which faults a scenario injects."""

    name: str
    events: int
    citizens: int
    rate: float
    kills: int = 0
    broker_restart: bool = False
    database_stop_seconds: float = 0.0
    two_workers_kill_one: bool = False
    rebalance_storm: int = 0
    poison_share: float = 0.02
    brokers: int = 1  # 3: the scenario runs on the local three-node cluster
    leader_kill: bool = False
    broker_pause_seconds: float = 0.0
    rolling_restart: bool = False
    controller_kill: bool = False


@dataclass
class Outcome:
    """What a scenario found."""

    plan: Plan
    published: int = 0
    poison: int = 0
    faults: list[str] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)
    expected_rows: int = 0
    rows: int = 0
    lost: int = 0
    doubled: int = 0
    dead_lettered: int = 0
    expected_dead: int = 0
    counts_match: bool = False
    dedup_state_agrees: bool = False
    checksum_match: bool = False
    dead_letter_repeats: int = 0
    requests_answered: bool = False
    unexpected_exits: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the scenario lost, doubled or misplaced nothing."""
        return (self.checksum_match and self.lost == 0 and self.doubled == 0 and self.counts_match
                and self.dead_lettered == self.expected_dead and self.dedup_state_agrees
                and self.requests_answered and not self.unexpected_exits)


class Load:
    """Publishes a steady, paced stream of signed visits with re-sends, corrections and poison."""

    def __init__(self, settings: Settings, signers: dict[str, Signer], plan: Plan, seed: int = 42) -> None:
        self.settings, self.signers, self.plan = settings, signers, plan
        self.rng = random.Random(seed)
        self.people = [make_citizen(self.rng, self.rng.choice(("079", "001", "048"))) for _ in range(plan.citizens)]
        self.poison = 0
        self.sent = 0
        self.nudges = 0
        owners = [make_citizen(self.rng, "079") for _ in range(10)]
        self.cards = [(f"TE1{7_900_000_000_000 + n:013d}", owner, contradicting(owner.personal_id))
                      for n, owner in enumerate(owners)]

    def _poison(self, i: int) -> tuple[bytes, bytes, str]:
        """One bad message of six kinds, each of which must be dead-lettered exactly as the rules say."""
        rng = self.rng
        person = rng.choice(self.people)
        key = person.personal_id.encode()
        kind = i % 6
        if kind == 0:
            return key, b"\x00\x00\x00\x00\x02 not avro " + str(i).encode(), "79001"
        if kind == 3:  # a timestamp far out of range: once an OverflowError that stopped readers
            return key, OUT_OF_RANGE_ENVELOPE, "79001"
        event = make_visit(rng, person, "79001", 10_000_000 + i, datetime(2026, 1, 1 + i % 28, 9))
        if kind == 1:  # forged: signed with a key nobody registered under this id
            return key, seal_visit(event, "79001", Signer.generate("k1")), "79001"
        if kind == 2:
            event = dict(event, facility_code="92001")
            return key, seal_visit(event, "92001", Signer.generate("k1")), "92001"
        if kind == 4:  # signed by the clinic, with a NUL in its text
            event = dict(event, discharge_diagnosis=event["discharge_diagnosis"] + "\x00")
            return key, seal_visit(event, "79001", self.signers["79001"]), "79001"
        card, owner, _ = self.cards[i % len(self.cards)]  # a card mapped to a personal ID that contradicts it
        event = make_visit(rng, owner, "79001", 10_000_000 + i, datetime(2026, 1, 1 + i % 28, 9))
        event["patient"] = dict(event["patient"], personal_id=None, insurance_card_numbers=[card])
        return f"card:{card}".encode(), seal_visit(event, "79001", self.signers["79001"]), "79001"

    async def publish_registry_poison(self, late: bool) -> None:
        """Contradicting card mappings (half before the load, half during it) and unreadable registry records."""
        cards = self.cards[len(self.cards) // 2:] if late else self.cards[: len(self.cards) // 2]
        await local_ca(self.settings).map_cards(self.settings, [(card, wrong) for card, _, wrong in cards])
        if not late:
            await kafka.send_all(Broker.of(self.settings), "fault-suite", self.settings.topics.clinic_keys,
                                 [(b"79001/unreadable", UNREADABLE_CLINIC_KEY)])
            await kafka.send_all(Broker.of(self.settings), "fault-suite", self.settings.topics.identity_cards,
                                 [(b"TE1-unreadable", UNREADABLE_IDENTITY_CARD)])

    def _message(self, i: int, history: list[dict[str, Any]]) -> tuple[bytes, bytes, str]:
        rng = self.rng
        roll = rng.random()
        if roll < self.plan.poison_share:
            self.poison += 1
            return self._poison(i)
        if history and roll < 0.07:  # re-send an earlier visit as it was
            event = rng.choice(history)
        elif history and roll < 0.10:  # a corrected version of an earlier visit
            earlier = rng.choice(history)
            event = dict(earlier, version=earlier["version"] + rng.choice((1, 2)), reason=f"sửa lần {i}")
            history.append(event)
        else:
            person = self.people[i % len(self.people)]
            admitted = datetime(rng.choice((2025, 2026)), rng.randint(1, 12), rng.randint(1, 28), 8, 0)
            event = make_visit(rng, person, rng.choice(list(self.signers)), i, admitted)
            history.append(event)
        clinic = event["facility_code"]
        return event["patient"]["personal_id"].encode(), seal_visit(event, clinic, self.signers[clinic]), clinic

    async def nudge(self) -> None:
        """Publish one fresh visit, so recovery shows even when the steady load is already over."""
        person = self.rng.choice(self.people)
        event = make_visit(self.rng, person, "79001", 20_000_000 + self.nudges, datetime(2026, 2, 2, 9))
        self.nudges += 1
        async with ClinicPublisher(clinic_broker(self.settings, "79001"), self.settings.topics.visits, "79001",
                                   self.signers["79001"]) as publisher:
            await publisher.publish_all([event], validate=False)

    async def run(self) -> None:
        """Publish plan.events messages at plan.rate per second, retrying sends the broker refused."""
        history: list[dict[str, Any]] = []
        publishers = {code: ClinicPublisher(clinic_broker(self.settings, code), self.settings.topics.visits, code, s,
                                            request_timeout_ms=60_000)
                      for code, s in self.signers.items()}
        for publisher in publishers.values():
            await publisher.__aenter__()
        start = time.monotonic()
        pending: list[asyncio.Future] = []
        await self.publish_registry_poison(late=False)
        try:
            for i in range(self.plan.events):
                if i == self.plan.events // 2:
                    await self.publish_registry_poison(late=True)
                key, value, clinic = self._message(i, history)
                pending.append(await publishers[clinic if clinic in publishers else "79001"].publish_raw(key, value))
                self.sent += 1
                if i % 100 == 99:
                    await asyncio.gather(*pending)
                    pending.clear()
                    await asyncio.sleep(max(0.0, start + (i + 1) / self.plan.rate - time.monotonic()))
            await asyncio.gather(*pending)
        finally:
            for publisher in publishers.values():
                await publisher.__aexit__(None, None, None)


async def _counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await while_unreachable("read counts", lambda: pool.fetch("select outcome, count from pipeline_counts"))
    return {r["outcome"]: r["count"] for r in rows}


async def _progress_after(pool: asyncpg.Pool, since: float, baseline: int, load: Load, publishing: asyncio.Task,
                          timeout: float = 180.0) -> float:
    """Seconds from `since` until the consumed counter passes baseline (nudging the topic if the load is over)."""
    if publishing.done():
        await load.nudge()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await _counts(pool)).get("consumed", 0) > baseline:
            return time.monotonic() - since
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no progress within {timeout:.0f}s of recovery")


async def expected_from_topic(settings: Settings, keyring: Keyring) -> tuple[
        dict[tuple[str, str], tuple[Any, ...]], set[tuple[int, int]], Counter[str], int, set[tuple[str, str]]]:
    """Read the visits topic back and derive the health book, dead letters and counts it must give.

    Also returns the visits that reached the book through a card mapping (keyed `card:`), which the
    pending resolver may have moved there: the dedup table learns of those only when they come again.
    """
    identity = IdentityDirectory(None)
    await TopicFollower(Broker.of(settings), settings.topics.identity_cards, identity.apply).snapshot()
    partitions = [TopicPartition(settings.topics.visits, p)
                  for p in await partitions_of(Broker.of(settings), settings.topics.visits)]
    consumer = kafka.consumer(Broker.of(settings), "fault-suite")
    await consumer.start()
    book: dict[tuple[str, str], tuple[Any, ...]] = {}
    dead: set[tuple[int, int]] = set()
    counts: Counter[str] = Counter()
    by_card: set[tuple[str, str]] = set()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                for m in batch:
                    counts["consumed"] += 1
                    result = validate(m.key, m.value, keyring)
                    if not isinstance(result, Accepted):
                        dead.add((m.partition, m.offset))
                        counts[f"rejected:{result.code}"] += 1
                        continue
                    whose = resolve(result.event, identity)
                    if isinstance(whose, Mismatch):
                        dead.add((m.partition, m.offset))
                        counts["rejected:identity_mismatch"] += 1
                        continue
                    if isinstance(whose, WaitingForCard):
                        counts["pending"] += 1
                        continue
                    event = whose.event
                    key = (event.facility_code, event.visit_code)
                    if key in book and book[key][0] >= event.version:
                        counts["duplicate"] += 1
                    else:
                        counts["accepted"] += 1
                        book[key] = (event.version, event.event_id,
                                     content_digest(event.book_json()))
                        if m.key and m.key.startswith(b"card:"):
                            by_card.add(key)
    finally:
        await consumer.stop()
    return book, dead, counts, counts["consumed"], by_card


def content_digest(record_json: str) -> str:
    """A digest of a stored record's content, independent of how PostgreSQL's jsonb orders and spaces it."""
    return hashlib.sha256(json.dumps(json.loads(record_json), sort_keys=True).encode()).hexdigest()


def checksum(rows: list[tuple[Any, ...]]) -> str:
    """A digest of the whole health book: identity, version, event and content of every row, in any order."""
    return hashlib.sha256("\n".join("|".join(map(str, r)) for r in sorted(rows)).encode()).hexdigest()


async def changelog_versions(settings: Settings) -> dict[str, int]:
    """The deduplication table as its changelog leaves it: visit key -> version."""
    latest: dict[bytes, dict[str, int]] = {}

    def apply(key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            latest[key] = json.loads(value) if value else {}

    await TopicFollower(Broker.of(settings), settings.dedup_changelog, apply).snapshot()
    return {visit_key: version for versions in latest.values() for visit_key, version in versions.items()}


class Services:
    """The scenario's worker and query-consumer processes, and which of them the suite itself ended."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: list[ServiceProcess] = []
        self.ended_by_suite: set[int] = set()

    def start(self, command: str, n: int) -> ServiceProcess:
        log = LOGS / f"{self.settings.worker_app_id}-{command}-{n}.log"
        process = ServiceProcess(command, self.settings, log).start()
        self.processes.append(process)
        return process

    def kill(self, process: ServiceProcess) -> None:
        self.ended_by_suite.add(id(process))
        process.kill()

    def stop(self, process: ServiceProcess) -> None:
        self.ended_by_suite.add(id(process))
        process.stop()

    def workers(self) -> list[ServiceProcess]:
        return [p for p in self.processes if p.command == "worker" and id(p) not in self.ended_by_suite]

    def unexpected_exits(self) -> list[str]:
        return [f"{p.log_path.name} exited with {p.process.returncode if p.process else '?'}"
                for p in self.processes if id(p) not in self.ended_by_suite and not p.running]

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)


async def _scenario_settings(plan: Plan, base: Settings) -> Settings:
    stamp = f"{datetime.now():%H%M%S}-{random.randint(0, 9999):04d}"
    name = re.sub(r"[^a-z0-9]+", "-", plan.name.lower()).strip("-")  # Kafka names: letters, digits, . _ -
    return base.model_copy(update={
        "topic_prefix": f"faults-{name}-{stamp}.", "worker_metrics_port": 0, "query_metrics_port": 0,
        "database_url": await recreate_database(base.database_url, "healthbook_faults"),
        "batch_within_seconds": 0.1,
    })


async def _register_clinics(settings: Settings) -> tuple[dict[str, Signer], Keyring]:
    signers = {code: Signer.generate("k1") for code in CLINICS}
    keyring = Keyring(None)  # the suite's own reference of what the worker must accept
    ca = local_ca(settings)
    entries = [ca.entry(code, s) for code, s in signers.items()]
    for entry in entries:
        keyring.put(ClinicKey(entry.clinic_code, entry.key_id, entry.public_key, entry.registered_at_ms))
    await ca.register(settings, entries)
    return signers, keyring


async def _inject_faults(plan: Plan, services: Services, pool: asyncpg.Pool, load: Load, publishing: asyncio.Task,
                         outcome: Outcome) -> None:
    rng = random.Random(7)
    workers = services.workers()
    await asyncio.sleep(3)
    for n in range(plan.kills):
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        baseline = (await _counts(pool)).get("consumed", 0)
        services.kill(workers[0])
        outcome.faults.append(f"SIGKILL worker ({n + 1})")
        restarted = time.monotonic()
        workers[0] = services.start("worker", 10 + n)
        outcome.recovery_seconds.append(await _progress_after(pool, restarted, baseline, load, publishing))
    if plan.broker_restart:
        stack("kafka-down")
        outcome.faults.append("broker restart")
        await asyncio.sleep(3)
        stack("kafka-up")
        back = time.monotonic()
        outcome.recovery_seconds.append(
            await _progress_after(pool, back, (await _counts(pool)).get("consumed", 0), load, publishing))
    if plan.database_stop_seconds:
        baseline = (await _counts(pool)).get("consumed", 0)
        stack("pg-down")
        outcome.faults.append(f"PostgreSQL stopped {plan.database_stop_seconds:.0f}s")
        await asyncio.sleep(plan.database_stop_seconds)
        stack("pg-up")
        # Nothing can be committed while the database is down, so progress now is progress after it.
        outcome.recovery_seconds.append(await _progress_after(pool, time.monotonic(), baseline, load, publishing))
    if plan.two_workers_kill_one:
        await asyncio.sleep(2)
        baseline = (await _counts(pool)).get("consumed", 0)
        services.kill(workers[1])
        outcome.faults.append("two workers, one SIGKILLed")
        outcome.recovery_seconds.append(await _progress_after(pool, time.monotonic(), baseline, load, publishing))
    await _rebalance_storm(plan, services, rng, outcome)
    await _failovers(plan, pool, load, publishing, outcome)


async def _failovers(plan: Plan, pool: asyncpg.Pool, load: Load, publishing: asyncio.Task,
                     outcome: Outcome) -> None:
    """Faults of one node of three: the pipeline must go on without it, then the node rejoins in full."""
    settings = load.settings

    async def after(fault: str, since: float, baseline: int) -> None:
        outcome.faults.append(fault)
        outcome.recovery_seconds.append(await _progress_after(pool, since, baseline, load, publishing))

    if plan.leader_kill:
        node = await cluster.partition_leader(settings, settings.topics.visits)
        baseline = (await _counts(pool)).get("consumed", 0)
        cluster.kill_node(node)
        killed = time.monotonic()
        await after(f"SIGKILL node {node}, leader of visits[0]", killed, baseline)
        await asyncio.sleep(5)
        cluster.start_node(node)
        outcome.faults.append(f"node {node} back in sync {await cluster.fully_replicated(settings):.1f} s after start")
    if plan.broker_pause_seconds:
        node = await cluster.partition_leader(settings, settings.topics.visits, 1)
        baseline = (await _counts(pool)).get("consumed", 0)
        cluster.pause_node(node)
        paused = time.monotonic()
        await asyncio.sleep(plan.broker_pause_seconds)
        cluster.resume_node(node)
        await after(f"SIGSTOP node {node} (leader of visits[1]) {plan.broker_pause_seconds:.0f} s", paused, baseline)
        synced = await cluster.fully_replicated(settings)
        outcome.faults.append(f"node {node} back in sync {synced:.1f} s after SIGCONT")
    if plan.rolling_restart:
        for node in (1, 2, 3):
            baseline = (await _counts(pool)).get("consumed", 0)
            cluster.stop_node(node)
            stopped = time.monotonic()
            cluster.start_node(node)
            await after(f"node {node} restarted", stopped, baseline)
            await cluster.fully_replicated(settings)
    if plan.controller_kill:
        node = await _elected_leader(other_than=None)
        baseline = (await _counts(pool)).get("consumed", 0)
        cluster.kill_node(node)
        killed = time.monotonic()
        successor = await _elected_leader(other_than=node)
        await after(f"SIGKILL node {node}, the controller quorum's leader (next: node {successor})", killed, baseline)
        cluster.start_node(node)
        outcome.faults.append(f"node {node} back in sync {await cluster.fully_replicated(settings):.1f} s after start")


async def _elected_leader(other_than: int | None, timeout: float = 30.0) -> int:
    """The controller quorum's leader once one is elected, other than the node given (the one just killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = cluster.quorum_leader()
        if leader is not None and leader != other_than:
            return leader
        await asyncio.sleep(0.5)
    raise RuntimeError(f"no controller quorum leader other than node {other_than} was elected within {timeout:.0f}s")


async def _rebalance_storm(plan: Plan, services: Services, rng: random.Random, outcome: Outcome) -> None:
    """Workers join and leave under load: most stop cleanly, every third is SIGKILLed."""
    for n in range(plan.rebalance_storm):
        extra = services.start("worker", 100 + n)
        await asyncio.sleep(rng.uniform(4.0, 7.0))
        (services.kill if n % 3 == 2 else services.stop)(extra)
        await asyncio.sleep(rng.uniform(1.0, 3.0))
    if plan.rebalance_storm:
        outcome.faults.append(f"{plan.rebalance_storm} workers joined and left")


async def _hostile_requests(settings: Settings, load: Load, publishing: asyncio.Task) -> bool:
    """Garbage on the requests topic all through the load, then one real confirmation: is it answered?"""
    async with IdentityPlatform(settings, ensure_identity_key(settings)) as platform:
        while not publishing.done():
            for raw in GARBAGE_REQUESTS:
                await platform.send_raw(b"garbage", raw)
            await asyncio.sleep(1.0)
        reply = await platform.ask(confirmation(load.people[0].personal_id, 2026), timeout=120)
    return reply.status == "ok"


async def _check(outcome: Outcome, settings: Settings, pool: asyncpg.Pool, keyring: Keyring,
                 services: Services) -> None:
    book, dead, expected_counts, total, by_card = await expected_from_topic(settings, keyring)
    deadline = time.monotonic() + 600
    while (await _counts(pool)).get("consumed", 0) < total and time.monotonic() < deadline:
        if not services.workers() or not any(w.running for w in services.workers()):
            raise RuntimeError(f"every worker died: {services.unexpected_exits()}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # let the last changelog writes land
    rows = await pool.fetch("select facility_code, visit_code, version, event_id, record from health_book_visits")
    actual = {(r["facility_code"], r["visit_code"]): (r["version"], r["event_id"], content_digest(r["record"]))
              for r in rows}
    outcome.expected_rows, outcome.rows = len(book), len(actual)
    outcome.lost = sum(1 for key, value in book.items() if actual.get(key) != value)
    outcome.doubled = sum(1 for key in actual if key not in book)
    outcome.checksum_match = checksum([(*k, *v) for k, v in actual.items()]) == \
        checksum([(*k, *v) for k, v in book.items()])
    counts = await _counts(pool)
    outcome.counts_match = {k: v for k, v in counts.items() if v} == dict(expected_counts)
    if not outcome.counts_match:
        outcome.faults.append(f"counts {counts} expected {dict(expected_counts)}")
    letters = await read_dead_letters(Broker.of(settings), settings.topics.dead_letter, distinct=False)
    distinct = {(d["source_partition"], d["source_offset"]) for d in letters}
    outcome.dead_lettered, outcome.expected_dead = len(distinct & dead), len(dead)
    outcome.dead_letter_repeats = len(letters) - len(distinct)
    outcome.doubled += len(distinct - dead)
    versions = await changelog_versions(settings)
    # The table is a cache of the book: it may not have heard of a visit the pending resolver moved in, but
    # it never holds a version the book does not.
    disagreeing = {f"{f}/{v}": (versions.get(f"{f}/{v}"), entry[0]) for (f, v), entry in book.items()
                   if versions.get(f"{f}/{v}") != entry[0]
                   and not ((f, v) in by_card and versions.get(f"{f}/{v}") is None)}
    outcome.dedup_state_agrees = not disagreeing
    if disagreeing:  # (changelog, book) versions of the first few, so the race can be chased
        outcome.faults.append(f"dedup table disagrees with the book for {len(disagreeing)} visits: "
                              f"{dict(list(disagreeing.items())[:5])}")
    outcome.unexpected_exits = services.unexpected_exits()


async def run_scenario(plan: Plan, base: Settings | None = None) -> Outcome:
    """Run one scenario end to end and check it."""
    settings = await _scenario_settings(plan, base or Settings())
    outcome = Outcome(plan)
    started = time.monotonic()
    await ensure_topics(settings, Broker.of(settings))
    pool = await connect_pool(settings.database_url, min_size=1, max_size=2)
    signers, keyring = await _register_clinics(settings)
    trust_identity_key(settings.identity_keys_file, ensure_identity_key(settings))  # the suite is the deployer
    services = Services(settings)
    for n in range(2 if plan.two_workers_kill_one else 1):
        services.start("worker", n)
    services.start("query-consumer", 0)
    load = Load(settings, signers, plan)
    publishing = asyncio.create_task(load.run())
    requests = asyncio.create_task(_hostile_requests(settings, load, publishing))
    try:
        await _inject_faults(plan, services, pool, load, publishing, outcome)
        await publishing
        outcome.published, outcome.poison = load.sent, load.poison
        if load.nudges:
            outcome.faults.append(f"{load.nudges} visit(s) sent after the load to observe recovery")
        outcome.requests_answered = await requests
        await _check(outcome, settings, pool, keyring, services)
    except RuntimeError as stalled:
        exits = services.unexpected_exits()
        if exits:  # say so: a stall is often a service that is no longer there
            raise RuntimeError(f"{stalled}; unexpected exits: {'; '.join(exits)}") from stalled
        raise
    finally:
        publishing.cancel()
        requests.cancel()
        services.stop_all()
        await pool.close()
        outcome.seconds = time.monotonic() - started
    return outcome


def plans(events: int, citizens: int, rate: float) -> list[Plan]:
    """The full suite: each fault under the same steady load."""
    return [
        Plan("worker killed", events, citizens, rate, kills=5),
        Plan("broker restarted", events, citizens, rate, broker_restart=True),
        Plan("database stopped", events, citizens, rate, database_stop_seconds=30),
        Plan("two workers, one killed", events, citizens, rate, two_workers_kill_one=True),
        Plan("rebalance storm", events, citizens, rate * 0.7, rebalance_storm=10),
        Plan("partition leader killed", events, citizens, rate, brokers=3, leader_kill=True),
        Plan("broker paused 20 s", events, citizens, rate, brokers=3, broker_pause_seconds=20),
        Plan("rolling restart", events, citizens, rate, brokers=3, rolling_restart=True),
        Plan("controller killed", events, citizens, rate, brokers=3, controller_kill=True),
    ]


def table_markdown(outcomes: list[Outcome]) -> str:
    """The figures as a Markdown table."""
    lines = ["| scenario | messages | poison | faults | worst recovery | rows (expected) | lost | doubled | "
             "dead-lettered (expected) | dead letters sent again | counts exact | dedup state agrees | "
             "requests answered | unexpected exits | result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        recovery = f"{max(o.recovery_seconds):.1f} s" if o.recovery_seconds else "-"
        lines.append(f"| {o.plan.name} | {o.published:,} | {o.poison} | {'; '.join(o.faults) or '-'} | {recovery} | "
                     f"{o.rows:,} ({o.expected_rows:,}) | {o.lost} | {o.doubled} | {o.dead_lettered} "
                     f"({o.expected_dead}) | {o.dead_letter_repeats} | {'yes' if o.counts_match else 'no'} | "
                     f"{'yes' if o.dedup_state_agrees else 'no'} | {'yes' if o.requests_answered else 'no'} | "
                     f"{'; '.join(o.unexpected_exits) or 'none'} | {'pass' if o.ok else 'FAIL'} |")
    return "\n".join(lines)


SOAK_SECTIONS = ("\n## Soak runs", "\n## The soak:")  # written by tests/soak.py and by hand; kept


def write_docs(path: Path, outcomes: list[Outcome], events: int, citizens: int, rate: float, run_note: str) -> None:
    """Regenerate docs/reliability.md from a run, keeping the soak's report (tests/soak.py) after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = [old.index(marker) for marker in SOAK_SECTIONS if marker in old]
    soak = old[min(kept):] if kept else ""
    path.write_text(f"""# Reliability: the fault suite

Generated by `make faults` (`python -m tests.fault_suite --docs {path.relative_to(PROJECT_ROOT)}`) on
{datetime.now():%Y-%m-%d %H:%M}. {run_note}

Each scenario publishes {events:,} messages for {citizens:,} citizens at about {rate:,.0f} messages/s
(the rebalance storm at 70% of that, so that its load outlasts ten joins and leaves) from three
clinics into its own topics and database: fresh visits, re-sends, corrected versions and 2% poison
of six kinds (malformed bytes, a timestamp far out of range, forged signatures, an unregistered
clinic, a clinic-signed NUL character, card-only visits whose card is mapped to a personal ID that
contradicts them, half mapped before the load and half while the visits wait). It also puts
unreadable records on the clinic-key and identity-card registries, and garbage on the requests
topic all through the load against a running query consumer, then sends one real confirmation.
Each scenario injects its fault while the load runs. Afterwards the visits topic is read back and
the expected health book, dead letters and counts are derived from it with the pure rules; the real
ones must match exactly. The first five scenarios run on one broker; the last four on the local
three-node cluster (`HEALTHBOOK_BROKERS=3`: three replicas, `min.insync.replicas=2`, no unclean
leader election), where a node is killed, paused or restarted and the pipeline must go on without
it; each node then comes back and the suite waits until every partition is in sync again.

{table_markdown(outcomes)}

- *rows*: the checksum covers every row's facility, MA_LK, version, event id and record content.
- *lost*: visits whose expected version and content are missing from the health book or stored otherwise.
- *doubled*: rows that should not exist, plus dead letters for messages that were not bad.
- *dead-lettered*: distinct source offsets on the dead-letter topic that are expected bad messages.
- *dead letters sent again*: records beyond one per bad message. The topic is at-least-once: a worker
  killed between sending a dead letter and committing its batch sends it again, and readers
  deduplicate by source partition and offset (`healthbook dlq` does).
- *counts exact*: consumed, accepted, duplicate, pending and rejected-by-reason equal what the topic
  implies, so no message was applied twice or skipped.
- *dedup state agrees*: the faust table's changelog holds every visit at the version the book holds.
- *requests answered*: after all the garbage, a real signed confirmation got its health book.
- *unexpected exits*: any worker or query consumer that exited without the suite stopping it.
- *worst recovery*: from the restart (worker, broker or database) to the first progress; on three
  brokers, from the kill, the pause or the node's stop, since the pipeline must go on without it.

How it holds: each batch's health-book rows, outcome counts and the next offset of every
partition in it are written in one PostgreSQL transaction; a redelivered message below that
offset only refreshes the deduplication table, and a batch never advances a partition past a
message it did not apply. See README.md, "Effectively once".
{soak}""", encoding="utf-8")


async def main_async(args: argparse.Namespace) -> int:
    outcomes = []
    running = None
    for plan in sorted(plans(args.events, args.citizens, args.rate), key=lambda p: p.brokers):
        if args.only and plan.name not in args.only:
            continue
        if plan.brokers != running:
            print(f"stack: {plan.brokers} broker(s) ...", flush=True)
            cluster.use_brokers(plan.brokers)
            running = plan.brokers
        print(f"scenario: {plan.name} ...", flush=True)
        outcome = await run_scenario(plan)
        print(table_markdown([outcome]).splitlines()[-1], flush=True)
        outcomes.append(outcome)
    if not outcomes:
        names = ", ".join(repr(plan.name) for plan in plans(args.events, args.citizens, args.rate))
        print(f"no scenario is named {args.only}; the scenarios are {names}", file=sys.stderr)
        return 2
    print(table_markdown(outcomes))
    if running != 1:
        cluster.use_brokers(1)  # leave the default stack behind, as `make up` starts it
    if args.docs:
        write_docs(PROJECT_ROOT / args.docs, outcomes, args.events, args.citizens, args.rate, args.run_note)
    return 0 if all(o.ok for o in outcomes) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--citizens", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=700.0)
    parser.add_argument("--docs", help="Markdown file to rewrite with the figures")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable), e.g. 'worker killed'")
    parser.add_argument("--run-note", default="", help="a sentence on which run this was, for the docs")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
