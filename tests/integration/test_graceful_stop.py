"""A worker asked to stop (SIGTERM) in the middle of a batch loses nothing: the batch is read again, applied once."""

import asyncio

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool
from tests.integration.conftest import LOGS, deployment_with_backlog, wait_until

pytestmark = pytest.mark.integration
VISITS = 3_000


async def test_a_worker_stopped_mid_batch_three_times_loses_no_visit(settings):
    own = await deployment_with_backlog(settings, "stop", 11, 300, VISITS)
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
