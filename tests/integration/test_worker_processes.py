"""`healthbook worker --processes 2`: two workers of one group share the partitions; one that dies is restarted."""

import os
import signal
import subprocess
import sys
import uuid

import pytest

from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from synthetic.population import make_population
from tests.integration.conftest import LOGS, certified, register, wait_until

pytestmark = pytest.mark.integration
VISITS = 2_000


async def test_two_worker_processes_drain_the_topic_once_and_a_killed_one_comes_back(settings):
    run = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={
        "topic_prefix": f"test-procs-{run}.", "worker_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, "healthbook_test_procs")})
    await ensure_topics(own)
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    _, events = make_population(13, 400, VISITS, ["79001"], (2025, 2026))
    async with ClinicPublisher(own.kafka_bootstrap, own.topics.visits, "79001", signer) as publisher:
        await publisher.publish_all(events)
    env = settings_env(own)
    env.pop("HEALTHBOOK_KAFKA_USER", None)
    log = (LOGS / f"{own.worker_app_id}-supervisor.log").open("ab")
    supervisor = subprocess.Popen([sys.executable, "-m", "commands.cli", "worker", "--processes", "2"],
                                  cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    try:
        async def rows() -> int:
            return await pool.fetchval("select count(*) from health_book_visits")

        async def all_rows() -> bool:
            return await rows() == VISITS

        await wait_until(all_rows, "two workers to drain the backlog", timeout=240)
        consumed = await pool.fetchval("select coalesce(sum(count), 0) from pipeline_counts where outcome = 'consumed'")
        assert consumed == VISITS
        children = _children(supervisor.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)

        async def replaced() -> bool:
            now = _children(supervisor.pid)
            return len(now) == 2 and children[0] not in now

        await wait_until(replaced, "the supervisor to start the killed worker again", timeout=60)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(60)
        finally:
            log.close()
            await pool.close()
    assert supervisor.returncode == 0
    assert _children(supervisor.pid) == []


def _children(pid: int) -> list[int]:
    """The live child processes of pid."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]
