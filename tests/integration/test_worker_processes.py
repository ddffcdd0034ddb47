"""`healthbook worker --processes 2`: two workers of one group share the partitions; one that dies is restarted."""

import os
import re
import signal
import subprocess
import urllib.request

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool
from tests.integration.conftest import LOGS, deployment_with_backlog, free_port, wait_until

pytestmark = pytest.mark.integration
VISITS = 2_000


async def test_two_worker_processes_drain_the_topic_once_and_a_killed_one_comes_back(settings):
    own = await deployment_with_backlog(settings, "procs", 13, 400, VISITS)
    own = own.model_copy(update={"supervisor_metrics_port": free_port()})
    service = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}-supervisor.log", ("--processes", "2"))
    supervisor = service.start().process
    assert supervisor is not None
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    try:
        async def all_rows() -> bool:
            return await pool.fetchval("select count(*) from health_book_visits") == VISITS

        await wait_until(all_rows, "two workers to drain the backlog", timeout=240, process=service)
        consumed = await pool.fetchval("select coalesce(sum(count), 0) from pipeline_counts where outcome = 'consumed'")
        assert consumed == VISITS
        children = _children(supervisor.pid)
        assert len(children) == 2
        os.kill(children[0], signal.SIGKILL)

        async def replaced() -> bool:
            now = _children(supervisor.pid)
            return len(now) == 2 and children[0] not in now

        await wait_until(replaced, "the supervisor to start the killed worker again", timeout=60, process=service)
        with urllib.request.urlopen(f"http://127.0.0.1:{own.supervisor_metrics_port}/metrics", timeout=5) as reply:
            scrape = reply.read().decode()
        restarts = re.findall(r'^healthbook_worker_restarts_total\{worker="(\d)"\} (\S+)$', scrape, re.MULTILINE)
        assert [float(count) for _, count in restarts] == [1.0], scrape  # what the operator's alert counts
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
    finally:
        service.stop(60)
        await pool.close()
    assert supervisor.returncode == 0
    assert _children(supervisor.pid) == []


def _children(pid: int) -> list[int]:
    """The live child processes of pid."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]
