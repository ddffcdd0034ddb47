"""A worker started after compaction left only an old registry record, re-sent by an insider, still knows it is old."""

import asyncio
import uuid

import pytest
from aiokafka.errors import KafkaError

from commands.local_ca import local_ca
from commands.processes import ServiceProcess
from healthbook import kafka
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, ensure_topics
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis
from tests.factories import visit, with_patient
from tests.integration.conftest import LOGS, certified, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration


async def _as_compaction_leaves_it(settings, topic: str, only: tuple[bytes, bytes]) -> None:
    """The topic holding nothing but one record, as compaction leaves it when that record was written last."""
    admin = kafka.admin(Broker.of(settings))
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    for _ in range(60):
        try:
            await ensure_topics(settings, Broker.of(settings))
            await kafka.send_all(Broker.of(settings), "compaction-stand-in", topic, [only])
            return
        except KafkaError:
            await asyncio.sleep(0.5)  # the broker is still deleting the old topic
    pytest.fail(f"{topic} could not be made again")


async def test_an_old_card_mapping_left_by_compaction_does_not_move_the_card_back_after_a_restart(settings):
    own = settings.model_copy(update={
        "topic_prefix": f"test-marks-{uuid.uuid4().hex[:8]}.", "worker_metrics_port": 0,
        "database_url": await recreate_database(settings.database_url, "healthbook_test_marks")})
    await ensure_topics(own, Broker.of(own))
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    child, other = new_citizen(), new_citizen()
    card = f"TE1{next_sequence():012d}"
    registry, now = local_ca(own).insurance_registry(), now_millis()
    month_old = wire.encode(catalogue.IDENTITY_CARD, registry.identity_card(
        {"card_number": card, "personal_id": other.personal_id, "updated_at": now - 60_000}))
    corrected = wire.encode(catalogue.IDENTITY_CARD, registry.identity_card(
        {"card_number": card, "personal_id": child.personal_id, "updated_at": now}))
    await kafka.send_all(Broker.of(own), "cards", own.topics.identity_cards,
                         [(card.encode(), month_old), (card.encode(), corrected)])
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
    try:
        await wait_until(lambda: pool.fetchval("select revision = $1 from registry_marks where record_key = $2",
                                               now, card), "the worker to keep the card's revision", process=worker)
    finally:
        worker.stop()
    await _as_compaction_leaves_it(own, own.topics.identity_cards, (card.encode(), month_old))
    event = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                         insurance_card_numbers=[card])
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
    try:
        from healthbook.kafka import clinic_broker
        from producers.publisher import ClinicPublisher

        async with ClinicPublisher(clinic_broker(own, "79001"), own.topics.visits, "79001", signer) as pub:
            await pub.publish_all([event])
        waiting = await wait_until(lambda: pool.fetchrow(
            "select card_number from pending_visits where visit_code = $1", event["visit_code"]),
            "the card-only visit to wait for a mapping", process=worker)
        assert waiting["card_number"] == card
        assert await visible(pool, "79001", event["visit_code"]) is None, "never put in the other citizen's book"
    finally:
        worker.stop()
        await pool.close()
