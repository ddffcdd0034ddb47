"""Fixtures on the real local stack: a fresh database and topic set per run, a worker and a query consumer."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from commands.identity_standin import IdentityPlatform, ensure_identity_key, trust_identity_key
from commands.local_ca import LocalCA, local_ca
from commands.processes import ServiceProcess
from consumers.dead_letters import read_dead_letters
from domain.keyring import ClinicKey
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.clinic_keys import save_signer
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from synthetic.population import Citizen, make_population
from tests.factories import citizen, visit

# The harness sets up its own stack, topics and ACLs: it logs in to the broker as the admin principal.
os.environ.setdefault("HEALTHBOOK_KAFKA_USER", "admin")

pytestmark = pytest.mark.integration
LOGS = PROJECT_ROOT / ".local" / "logs" / "tests"
CLINICS = ("79001", "01002")


async def wait_until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0,
                     process: ServiceProcess | None = None) -> Any:
    """Poll check until it returns something truthy; fail naming what was awaited (and the process log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline or (process is not None and not process.running):
            tail = f"\n{process.command} log:\n{process.log_tail()}" if process else ""
            pytest.fail(f"timed out waiting for {what}{tail}")
        await asyncio.sleep(0.2)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
async def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for this run: its own topics, worker id and an empty database."""
    base = Settings()
    try:
        admin = kafka.admin(Broker.of(base), request_timeout_ms=5000)
        await admin.start()
        await admin.close()
        conn = await asyncpg.connect(base.database_url, timeout=5)
        await conn.close()
    except Exception as exc:
        pytest.fail(f"the local stack is not reachable ({exc!r}); 'make test' starts it, or run 'make up'")
    run = uuid.uuid4().hex[:8]
    keys: Path = tmp_path_factory.mktemp("keys")
    settings = base.model_copy(update={
        "topic_prefix": f"test-{run}.",
        "database_url": await recreate_database(base.database_url, "healthbook_test"),
        "key_dir": keys,
        "identity_keys_file": keys / "identity-platform.json",
        "ingest_ledger": keys / "ingest-ledger.sqlite",
        "pseudonym_key_file": keys / "pseudonym.key",
        "worker_data_dir": tmp_path_factory.mktemp("worker"),
        "trust_anchors_file": keys / "pki" / "ca.crt",
        "registry_anchors_file": keys / "pki" / "registry-ca.crt",
        "revocation_lists": f"{keys / 'pki' / 'ca.crl'},{keys / 'pki' / 'registry-ca.crl'}",
        "registry_key_dir": keys / "pki",
        "worker_metrics_port": free_port(),
        "query_metrics_port": free_port(),
        "batch_within_seconds": 0.05,
    })
    await ensure_topics(settings, Broker.of(settings))
    local_ca(settings)
    return settings


@pytest.fixture(scope="session")
def ca(settings: Settings) -> LocalCA:
    """The run's certificate authority, key registry and insurance registry."""
    return local_ca(settings)


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the run's database, migrated."""
    pool = await connect_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def signers(settings: Settings, ca: LocalCA) -> dict[str, Signer]:
    """Keys of the test clinics, generated here, certified and registered on the run's registry topic."""
    keys = {code: Signer.generate("k1") for code in CLINICS}
    for code, signer in keys.items():
        save_signer(settings.key_dir, code, signer)
    await ca.register(settings, [ca.entry(code, signer) for code, signer in keys.items()])
    return keys


_sequence = itertools.count(1000)


def next_sequence() -> int:
    """A visit number no other test uses, so visit keys never collide across tests."""
    return next(_sequence)


def new_citizen() -> Citizen:
    """A citizen no other test uses."""
    return citizen(next_sequence())


async def visible(pool: asyncpg.Pool, facility: str, visit_code: str) -> asyncpg.Record | None:
    """The health-book row of a visit, if projected."""
    return await pool.fetchrow("select * from health_book_visits where facility_code = $1 and visit_code = $2",
                               facility, visit_code)


class Clinics:
    """Publishes as the test clinics and waits for the worker to get past what was published."""

    def __init__(self, settings: Settings, signers: dict[str, Signer], pool: asyncpg.Pool,
                 worker: ServiceProcess) -> None:
        self.settings, self.signers, self.pool, self.worker = settings, signers, pool, worker

    def publisher(self, clinic: str = "79001", signer: Signer | None = None) -> ClinicPublisher:
        return ClinicPublisher(clinic_broker(self.settings, clinic), self.settings.topics.visits, clinic,
                               signer or self.signers[clinic])

    async def publish(self, *events: dict[str, Any], clinic: str = "79001") -> None:
        async with self.publisher(clinic) as pub:
            await pub.publish_all(events, validate=False)

    async def barrier(self, person: Citizen, clinic: str = "79001") -> None:
        """Publish a sentinel visit for the citizen and wait for it: all earlier messages of that partition are done."""
        sentinel = visit(person=person, sequence=next_sequence(), facility=clinic, admitted=datetime(2020, 1, 2, 8))
        await self.publish(sentinel, clinic=clinic)
        await wait_until(lambda: visible(self.pool, clinic, sentinel["visit_code"]), "the barrier visit",
                         process=self.worker)

    async def counts(self) -> dict[str, int]:
        return {r["outcome"]: r["count"] for r in await self.pool.fetch("select outcome, count from pipeline_counts")}

    async def dead_letters(self) -> list[dict[str, Any]]:
        return await read_dead_letters(Broker.of(self.settings), self.settings.topics.dead_letter)


async def publish_and_wait(clinics: Clinics, db: asyncpg.Pool, *events: dict[str, Any]) -> None:
    """Publish visits of clinic 79001 and wait until the worker has put each in the book."""
    await clinics.publish(*events)
    for event in events:
        await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the visits", process=clinics.worker)


@pytest.fixture(scope="session")
async def worker(settings: Settings, signers: dict[str, Signer], db: asyncpg.Pool) -> AsyncIterator[ServiceProcess]:
    """The stream worker, running as 'healthbook worker', proven ready by a projected canary visit."""
    process = ServiceProcess("worker", settings, LOGS / f"{settings.worker_app_id}.log").start()
    try:
        canary = visit(person=citizen(1), sequence=next_sequence())
        async with ClinicPublisher(clinic_broker(settings, "79001"), settings.topics.visits, "79001",
                                   signers["79001"]) as pub:
            await pub.publish_all([canary])
        await wait_until(lambda: visible(db, "79001", canary["visit_code"]), "the worker to project a canary visit",
                         timeout=120, process=process)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def clinics(settings: Settings, signers: dict[str, Signer], db: asyncpg.Pool,
                  worker: ServiceProcess) -> Clinics:
    """The test clinics, with the worker running."""
    return Clinics(settings, signers, db, worker)


@pytest.fixture(scope="session")
async def identity(settings: Settings) -> AsyncIterator[IdentityPlatform]:
    """The identity-platform stand-in, its key trusted by a running query consumer."""
    signer = ensure_identity_key(settings)
    trust_identity_key(settings.identity_keys_file, signer)  # the harness deploys the stand-in as trusted
    process = ServiceProcess("query-consumer", settings, LOGS / f"{settings.query_group_id}.log").start()
    try:
        async with IdentityPlatform(settings, signer) as platform:
            platform.process = process  # type: ignore[attr-defined]
            yield platform
    finally:
        process.stop()


def certified(settings: Settings, clinic: str, signer: Signer, not_before: datetime | None = None) -> ClinicKey:
    """A registry entry for a test clinic's key, certified by the run's CA (from not_before, default 5 min ago)."""
    return local_ca(settings).entry(clinic, signer, not_before)


async def register(settings: Settings, *entries: ClinicKey) -> None:
    """Publish clinic-key entries signed by the run's key registry."""
    await local_ca(settings).register(settings, list(entries))


async def map_cards(settings: Settings, mappings: list[tuple[str, str]]) -> None:
    """Publish card mappings signed by the run's insurance registry."""
    await local_ca(settings).map_cards(settings, mappings)


async def deployment_with_backlog(settings: Settings, name: str, seed: int, citizens: int, visits: int
                                  ) -> Settings:
    """A deployment of its own (prefix and database) whose clinic 79001 has published a backlog of visits."""
    own = settings.model_copy(update={
        # the session's own worker and query consumer serve their metrics; this deployment's do not
        "topic_prefix": f"test-{name}-{uuid.uuid4().hex[:8]}.", "worker_metrics_port": 0, "query_metrics_port": 0,
        "supervisor_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, f"healthbook_test_{name}")})
    await ensure_topics(own, Broker.of(own))
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    _, events = make_population(seed, citizens, visits, ["79001"], (2025, 2026))
    async with ClinicPublisher(clinic_broker(own, "79001"), own.topics.visits, "79001", signer) as publisher:
        await publisher.publish_all(events)
    return own
