"""Two deployments under different prefixes on one broker share no topic, group or deduplication state."""

import uuid
from contextlib import AsyncExitStack
from datetime import datetime

import pytest

from commands.identity_standin import IdentityPlatform, confirmation, ensure_identity_key, trust_identity_key
from commands.processes import ServiceProcess
from healthbook import kafka
from healthbook.config import Settings
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer
from tests.factories import visit
from tests.integration.conftest import LOGS, certified, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration


async def _deployment(settings: Settings, name: str, run: str) -> Settings:
    keys = settings.key_dir / name
    own = settings.model_copy(update={  # only the prefix and the database; every Kafka name derives from the prefix
        "topic_prefix": f"test-{name}-{run}.", "worker_metrics_port": 0, "query_metrics_port": 0,
        "identity_keys_file": keys / "identity-platform.json",
        "database_url": await recreate_database(settings.database_url, f"healthbook_test_{name}")})
    assert own.worker_id == "" and own.query_group == ""
    await ensure_topics(own, Broker.of(own))
    return own


async def _broker_names() -> tuple[set[str], set[str]]:
    admin = kafka.admin(Broker.of(Settings()))
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
        return set(await admin.list_topics()), groups
    finally:
        await admin.close()


async def test_two_prefixed_deployments_on_one_broker_share_nothing(settings):
    run = uuid.uuid4().hex[:8]
    topics_before, groups_before = await _broker_names()
    east, west = await _deployment(settings, "east", run), await _deployment(settings, "west", run)
    signer = Signer.generate("k1")
    person = new_citizen()
    same = visit(person=person, sequence=next_sequence(), admitted=datetime(2025, 5, 6, 8))
    async with AsyncExitStack() as stack:
        for own in (east, west):
            await register(own, certified(own, "79001", signer))
            identity = ensure_identity_key(own)
            trust_identity_key(own.identity_keys_file, identity)
            worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
            stack.callback(worker.stop)
            query = ServiceProcess("query-consumer", own, LOGS / f"{own.query_group_id}.log").start()
            stack.callback(query.stop)
            # the very same signed visit goes to both: with shared dedup state the second would be a duplicate
            async with ClinicPublisher(clinic_broker(own, "79001"), own.topics.visits, "79001", signer) as pub:
                await pub.publish_all([same])
            pool = await connect_pool(own.database_url, min_size=1, max_size=2)
            stack.push_async_callback(pool.close)
            await wait_until(lambda p=pool: visible(p, "79001", same["visit_code"]), f"{own.topic_prefix} book",
                             timeout=120, process=worker)
            counts = {r["outcome"]: r["count"] for r in await pool.fetch("select outcome, count from pipeline_counts")}
            assert counts.get("accepted") == 1 and not counts.get("duplicate"), own.topic_prefix
            platform = await stack.enter_async_context(IdentityPlatform(own, identity))
            reply = await platform.ask(confirmation(person.personal_id, 2025), timeout=60)
            assert [v.visit_code for v in reply.visits] == [same["visit_code"]], own.topic_prefix

        topics_after, groups_after = await _broker_names()
    new_topics, new_groups = topics_after - topics_before, groups_after - groups_before
    for own in (east, west):
        assert {own.dedup_changelog, f"{own.worker_app_id}-__assignor-__leader"} <= new_topics
        assert {own.worker_app_id, own.query_group_id} <= new_groups
    # nothing either deployment made lies outside its own prefix: no shared topic, no shared group
    strays = {n for n in new_topics | new_groups if not n.startswith((east.topic_prefix, west.topic_prefix))}
    assert strays == set()
