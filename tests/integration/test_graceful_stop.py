"""A worker asked to stop (SIGTERM) in the middle of a batch loses nothing: the batch is read again, applied once."""

import asyncio
import uuid

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from synthetic.population import make_population
from tests.integration.conftest import LOGS, certified, register, wait_until

pytestmark = pytest.mark.integration
VISITS = 3_000


async def test_a_worker_stopped_mid_batch_three_times_loses_no_visit(settings):
    run = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={
        "topic_prefix": f"test-stop-{run}.", "worker_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, "healthbook_test_stop")})
    await ensure_topics(own)
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    _, events = make_population(11, 300, VISITS, ["79001"], (2025, 2026))
    async with ClinicPublisher(own.kafka_bootstrap, own.topics.visits, "79001", signer) as publisher:
        await publisher.publish_all(events)
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)

    async def consumed() -> int:
        return await pool.fetchval("select coalesce(sum(count), 0) from pipeline_counts where outcome = 'consumed'")

    started: list[ServiceProcess] = []
    try:
        for n in range(3):  # each worker is stopped while the backlog is still being drained
            worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}-{n}.log").start()
            started.append(worker)
            before = await consumed()
            await wait_until(lambda b=before: _more_than(consumed, b), "the worker to apply a batch", timeout=90,
                             process=worker)
            worker.stop()
            await asyncio.sleep(0.5)
        last = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}-last.log").start()
        started.append(last)
        await wait_until(lambda: _more_than(consumed, VISITS - 1), "every visit to be applied", timeout=180,
                         process=last)
        rows = await pool.fetchval("select count(*) from health_book_visits")
        assert (rows, await consumed()) == (VISITS, VISITS)
    finally:
        for process in started:
            process.stop()
        await pool.close()


async def _more_than(read, value: int) -> bool:
    return await read() > value
