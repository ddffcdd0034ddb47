"""A three-node cluster of its own (ports 19092-19293): replicas realigned; a worker starts with a node away."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from commands.processes import ServiceProcess
from healthbook import kafka
from healthbook.config import PROJECT_ROOT, Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics, worker_topics
from healthbook.replica_plan import NotEnoughBrokers
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from tests.factories import visit
from tests.integration.conftest import LOGS, certified, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration
STACK = PROJECT_ROOT / "stack" / "stack.sh"
PORT, CONTROLLER_PORT = 19092, 19093
BOOTSTRAP = ",".join(f"127.0.0.1:{PORT + 100 * n}" for n in range(3))


def _stack(home: Path, *action: str) -> None:
    env = {**os.environ, "KAFKA_HOME_DIR": str(home), "HEALTHBOOK_BROKERS": "3", "KAFKA_PORT": str(PORT),
           "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT)}
    done = subprocess.run(["bash", str(STACK), *action], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"stack/stack.sh {' '.join(action)}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three KRaft nodes in a folder of their own, beside the run's single broker."""
    home = tmp_path_factory.mktemp("cluster")
    _stack(home, "kafka-up")
    try:
        yield home
    finally:
        _stack(home, "kafka-down")


async def _layout(settings: Settings, names: list[str]) -> dict[str, list[tuple[list[int], list[int]]]]:
    client = kafka.admin(Broker.of(settings))
    await client.start()
    try:
        return {d["topic"]: [(sorted(p["replicas"]), sorted(p["isr"])) for p in d["partitions"]]
                for d in await client.describe_topics(names)}
    finally:
        await client.close()


async def _live_brokers(settings: Settings, count: int) -> bool:
    client = kafka.admin(Broker.of(settings), request_timeout_ms=5000)
    try:
        await client.start()
        return len((await client.describe_cluster())["brokers"]) == count
    except Exception:  # a client that reached the dead node first: ask again
        return False
    finally:
        await client.close()


async def _topic_config(settings: Settings, name: str) -> dict[str, str]:
    client = kafka.admin(Broker.of(settings))
    await client.start()
    try:
        described = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await client.close()
    return {e[0]: e[1] for r in described for resource in r.resources for e in resource[4]}


async def test_topics_made_for_one_broker_are_realigned_to_three_replicas(cluster, settings):
    one = settings.model_copy(update={"kafka_bootstrap": BOOTSTRAP, "brokers": 1, "topic_prefix": "realign."})
    await ensure_topics(one, Broker.of(one))
    names = [*kafka.topic_names(one), *worker_topics(one)]
    assert all(len(replicas) == 1 for parts in (await _layout(one, names)).values() for replicas, _ in parts)

    three = one.model_copy(update={"brokers": 3})
    assert await ensure_topics(three, Broker.of(three)) == []  # nothing new: the same topics, realigned
    layout = await _layout(three, names)
    assert set(layout) == set(names)
    assert all(replicas == [1, 2, 3] and isr == [1, 2, 3] for parts in layout.values() for replicas, isr in parts)
    changelog = await _topic_config(three, three.dedup_changelog)
    assert changelog["min.insync.replicas"] == "2" and changelog["unclean.leader.election.enable"] == "false"
    assert changelog["cleanup.policy"] == "compact" and changelog["segment.bytes"] == str(8 * 1024 * 1024)
    visits = await _topic_config(three, three.topics.visits)
    assert visits["message.timestamp.type"] == "LogAppendTime" and visits["min.insync.replicas"] == "2"


async def test_a_worker_starts_and_projects_while_one_node_of_three_is_away(cluster, settings):
    own = settings.model_copy(update={
        "kafka_bootstrap": BOOTSTRAP, "brokers": 3, "topic_prefix": "node-away.", "worker_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, "healthbook_test_cluster")})
    await ensure_topics(own, Broker.of(own))
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    _stack(cluster, "node-kill", "3")
    try:
        await wait_until(lambda: _live_brokers(own, 2), "the controller to fence the killed node", timeout=60)
        with pytest.raises(NotEnoughBrokers, match="2 live broker"):  # new topics cannot have three replicas now
            fresh = own.model_copy(update={"topic_prefix": "too-few."})
            await ensure_topics(fresh, Broker.of(fresh))
        # Before, faust made its assignor topic at start and exited when three replicas could not be placed.
        worker = ServiceProcess("worker", own, LOGS / "cluster-node-away-worker.log").start()
        try:
            event = visit(person=new_citizen(), sequence=next_sequence(), admitted=datetime(2025, 3, 4, 8))
            async with ClinicPublisher(clinic_broker(own, "79001"), own.topics.visits, "79001", signer) as publisher:
                await publisher.publish_all([event])  # acks=all: two of three replicas in sync take it
            pool = await connect_pool(own.database_url, min_size=1, max_size=1)
            try:
                await wait_until(lambda: visible(pool, "79001", event["visit_code"]), "the visit in the book",
                                 timeout=120, process=worker)
            finally:
                await pool.close()
            assert worker.running, worker.log_tail()
        finally:
            worker.stop()
    finally:
        _stack(cluster, "node-up", "3")
