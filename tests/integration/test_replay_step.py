"""Replay runs the worker's batch step: into new tables it gives the live worker's rows, counts and pending visits."""

import uuid

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import ensure_topics
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer, seal_visit
from streams.replay import rebuild
from tests.factories import visit, with_patient
from tests.integration.conftest import LOGS, certified, map_cards, new_citizen, next_sequence, register, wait_until

pytestmark = pytest.mark.integration
REBUILD = "replay_step_check"
BOOK = ("select facility_code, visit_code, personal_id, version, event_id, year, admitted_at, discharged_at, "
        "record, sensitive, clinic_key_id, signature, signed_at, source_partition, source_offset "
        "from {schema}.health_book_visits order by facility_code, visit_code")
PENDING = ("select facility_code, visit_code, card_number, version, event_id, record, source_partition, "
           "source_offset from {schema}.pending_visits order by facility_code, visit_code")
COUNTS = "select outcome, count from {schema}.pipeline_counts where count <> 0 order by outcome"


def _card_only(person, card):
    return with_patient(visit(person=person, sequence=next_sequence()), personal_id=None,
                        insurance_card_numbers=[card])


async def _publish_history(settings, signer, pool, worker):
    """Versions, re-sends, a forgery, and card-only visits: mapped before, mapped later, never mapped."""
    alice, bob, early_child, late_child, unknown_child = (new_citizen() for _ in range(5))
    early_card, late_card = f"TE1{next_sequence():012d}", f"TE1{next_sequence():012d}"
    await map_cards(settings, [(early_card, early_child.personal_id)])
    sequence = next_sequence()
    versions = [visit(person=alice, sequence=sequence, version=v, reason=f"v{v}") for v in (1, 3, 2, 3)]
    plain = visit(person=bob, sequence=next_sequence())
    late = _card_only(late_child, late_card)
    never = _card_only(unknown_child, f"TE1{next_sequence():012d}")
    async with ClinicPublisher(settings.kafka_bootstrap, settings.topics.visits, "79001", signer) as pub:
        await pub.publish_all([*versions, plain, plain, _card_only(early_child, early_card), late, never],
                              validate=False)
        forged = seal_visit(visit(person=bob, sequence=next_sequence()), "79001", Signer.generate("k1"))
        await (await pub.publish_raw(bob.personal_id.encode(), forged))
    await wait_until(lambda: pool.fetchval("select count(*) = 2 from pending_visits"), "two visits waiting",
                     process=worker)
    await map_cards(settings, [(late_card, late_child.personal_id)])
    await wait_until(lambda: pool.fetchval("select count(*) = 1 from pending_visits"), "the late card's visit",
                     process=worker)
    return 10


async def test_a_replay_into_new_tables_gives_the_live_workers_rows_counts_and_pending_visits(settings):
    run = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={
        "topic_prefix": f"test-replay-{run}.",
        "database_url": await recreate_database(settings.database_url, "healthbook_test_replay_step"),
        "worker_metrics_port": 0})
    await ensure_topics(own)
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
    try:
        published = await _publish_history(own, signer, pool, worker)
        await wait_until(lambda: pool.fetchval("select count >= $1 from pipeline_counts where outcome = 'consumed'",
                                               published), "the worker to consume everything", process=worker)
        report = await rebuild(own, REBUILD)
        live = {q: [tuple(r) for r in await pool.fetch(q.format(schema="public"))] for q in (BOOK, PENDING, COUNTS)}
        rebuilt = {q: [tuple(r) for r in await pool.fetch(q.format(schema=REBUILD))] for q in (BOOK, PENDING, COUNTS)}
    finally:
        worker.stop()
        await pool.close()
    assert report.messages == published
    assert len(live[BOOK]) == 4 and len(live[PENDING]) == 1, "newest of one visit, one re-sent, two from cards"
    assert rebuilt[BOOK] == live[BOOK]
    assert rebuilt[PENDING] == live[PENDING]
    assert rebuilt[COUNTS] == live[COUNTS]
    assert dict(live[COUNTS]) == {"consumed": 10, "accepted": 5, "duplicate": 3, "pending": 1,
                                  "rejected:bad_signature": 1}
