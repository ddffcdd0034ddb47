"""The largest visit is a healthbook rule: above Kafka's 1 MiB default it flows; above the limit it is never sent."""

from datetime import datetime

import pytest
from aiokafka.admin import NewTopic

from healthbook.kafka import RANGE_FETCH_BYTES, Broker, admin, read_range, send_all
from producers.publisher import VisitTooLarge
from schemas.topics import MAX_LISTED_PROBLEMS
from tests.factories import Citizen, visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until
from tests.integration.test_ingest import ingest
from tests.unit.test_giamdinhhs import SAMPLE

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def _visit_of(size: int, person: Citizen | None = None) -> dict:
    event = visit(person=person or new_citizen(), sequence=next_sequence(), admitted=datetime(2025, 9, 1, 8))
    event["extra"] = {"GHI_CHU": "Theo dõi sau điều trị. " * (size // 24)}
    return event


async def test_a_visit_larger_than_kafkas_default_reaches_the_book(clinics, db, settings):
    assert settings.max_visit_bytes > 2 * MiB
    big = _visit_of(2 * MiB)
    await clinics.publish(big)
    row = await wait_until(lambda: visible(db, "79001", big["visit_code"]), "the 2 MiB visit", timeout=60,
                           process=clinics.worker)
    assert len(row["record"].encode()) > 2 * MiB


async def test_a_visit_above_the_limit_is_refused_before_sending_with_a_sentence(clinics, settings):
    too_big = _visit_of(settings.max_visit_bytes + 1024)
    async with clinics.publisher() as pub:
        with pytest.raises(VisitTooLarge) as refused:
            await pub.publish(too_big)
    message = str(refused.value)
    assert too_big["visit_code"] in message and f"{settings.max_visit_bytes:,} bytes" in message
    assert "HEALTHBOOK_MAX_VISIT_BYTES" in message and "[visit_too_large]" in message


async def test_a_rule_breaking_big_visit_is_dead_lettered_with_its_problems_listed_in_bounds(clinics, settings):
    person = new_citizen()
    bad = _visit_of(MiB, person)
    assert bad["medicines"], "the factory visit has a medicine to copy"
    bad["medicines"] = [dict(bad["medicines"][0], name="x\x00", line_no=n) for n in range(1, 400)]
    await clinics.publish(bad)  # unvalidated: the worker must refuse it
    await clinics.barrier(person)
    (letter,) = [d for d in await clinics.dead_letters() if d["event_id"] == bad["event_id"]]
    assert letter["reason_code"] == "invalid_event"
    assert len(letter["violations"]) == MAX_LISTED_PROBLEMS + 1 and letter["violations"][-1]["rule"] == "more_problems"


def test_ingest_check_refuses_a_visit_above_the_limit_naming_it(settings):
    result = ingest(settings.model_copy(update={"max_visit_bytes": 1500}), "--check", str(SAMPLE))
    assert result.returncode == 1
    assert "visit_too_large" in result.stdout + result.stderr
    assert "MA_LK=79001-2026-000123" in result.stdout and "1,500 bytes" in result.stdout
    assert "MA_LK=79001-2026-000124" not in result.stdout  # the small visit beside it is valid


async def test_a_range_read_back_holds_a_visit_far_larger_than_one_fetch(settings):
    """Reading back asks for little per fetch; a record larger than that still comes whole (KIP-74)."""
    broker = Broker.of(settings)
    topic = f"{settings.topic_prefix}read-range-{next_sequence()}"
    client = admin(broker)
    await client.start()
    try:
        await client.create_topics([NewTopic(topic, 1, settings.replication.factor,
                                             topic_configs={"max.message.bytes": str(4 * MiB)})])
    finally:
        await client.close()
    big = b"B" * (8 * RANGE_FETCH_BYTES)
    await send_all(broker, "test-read-range", topic,
                   [(b"k", b"before-%d" % n) for n in range(3)] + [(b"k", big)] + [(b"k", b"after")])
    read = await read_range(broker, topic, 0, 2, 5)
    assert [(r.offset, len(r.value)) for r in read] == [(2, 8), (3, len(big)), (4, 5)]
    assert read[1].value == big
