"""A worker and a query consumer started while the broker is away hold, and serve once it is back."""

import asyncio

import pytest

from commands.identity_standin import IdentityPlatform, confirmation, ensure_identity_key, trust_identity_key
from commands.processes import ServiceProcess
from healthbook.database import connect_pool
from tests.fault_suite import stack
from tests.integration.conftest import LOGS, deployment_with_backlog, wait_until

pytestmark = pytest.mark.integration
VISITS = 300


async def test_services_started_while_the_broker_is_away_wait_for_it_in_the_same_process(settings):
    own = await deployment_with_backlog(settings, "away", 29, 60, VISITS)
    signer = ensure_identity_key(own)
    trust_identity_key(own.identity_keys_file, signer)
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log")
    query = ServiceProcess("query-consumer", own, LOGS / f"{own.query_group_id}.log")
    stack("kafka-down")
    try:
        worker.start()
        query.start()
        await asyncio.sleep(8)  # both fail to reach the broker at least once and back off
        held = worker.running, query.running
    finally:
        stack("kafka-up")
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    try:
        assert held == (True, True), f"a service exited while the broker was away: see {worker.log_path}, " \
                                     f"{query.log_path}"
        pids = worker.process.pid, query.process.pid

        async def all_rows() -> bool:
            return await pool.fetchval("select count(*) from health_book_visits") == VISITS

        await wait_until(all_rows, "the worker to project the backlog once the broker is back", timeout=180,
                         process=worker)
        someone = await pool.fetchrow("select personal_id, year, count(*) as visits from health_book_visits "
                                      "group by personal_id, year order by personal_id, year limit 1")
        async with IdentityPlatform(own, signer) as platform:
            reply = await platform.ask(confirmation(someone["personal_id"], someone["year"]), timeout=120)
        assert reply.status == "ok" and len(reply.visits) == someone["visits"]
        assert (worker.process.pid, query.process.pid) == pids and worker.running and query.running
        logged = worker.log_path.read_text(encoding="utf-8")
        assert "could not reach the broker while starting" in logged, "the worker held at its start"
        assert "the broker does not answer" in query.log_path.read_text(encoding="utf-8")
    finally:
        worker.stop()
        query.stop()
        await pool.close()
