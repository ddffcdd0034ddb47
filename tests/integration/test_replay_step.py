"""Replay runs the worker's batch step: into new tables it gives the live worker's rows, counts and pending visits."""

import asyncio
import uuid

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool, recreate_database
from healthbook.kafka import Broker, clinic_broker, ensure_topics
from healthbook.store import create_rebuild, database_now, swap_in_rebuild
from producers.publisher import ClinicPublisher
from schemas.envelope import Signer, seal_visit
from streams.replay import RecentVersions, rebuild
from tests.factories import visit, with_patient
from tests.integration.conftest import LOGS, certified, map_cards, new_citizen, next_sequence, register, wait_until
from tests.integration.test_cli import healthbook

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
    async with ClinicPublisher(clinic_broker(settings, "79001"), settings.topics.visits, "79001", signer) as pub:
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
    await ensure_topics(own, Broker.of(own))
    signer = Signer.generate("k1")
    await register(own, certified(own, "79001", signer))
    pool = await connect_pool(own.database_url, min_size=1, max_size=2)
    worker = ServiceProcess("worker", own, LOGS / f"{own.worker_app_id}.log").start()
    try:
        published = await _publish_history(own, signer, pool, worker)
        await wait_until(lambda: pool.fetchval("select count >= $1 from pipeline_counts where outcome = 'consumed'",
                                               published), "the worker to consume everything", process=worker)
        report = await rebuild(own, Broker.of(own), REBUILD)
        live = {q: [tuple(r) for r in await pool.fetch(q.format(schema="public"))] for q in (BOOK, PENDING, COUNTS)}
        rebuilt = {q: [tuple(r) for r in await pool.fetch(q.format(schema=REBUILD))] for q in (BOOK, PENDING, COUNTS)}
        # A table holding one citizen at a time looks the rest up in the rebuilt book, and decides the same.
        small = RecentVersions(visits=1)
        await rebuild(own, Broker.of(own), REBUILD, versions=small)
        from_small = {q: [tuple(r) for r in await pool.fetch(q.format(schema=REBUILD))] for q in (BOOK, PENDING,
                                                                                                 COUNTS)}
        assert len(small) == 1
        # The operator's replay in two processes over disjoint partitions swaps in the same book.
        replayed = await asyncio.to_thread(healthbook, own, "replay", "--processes", "2")
        swapped = [tuple(r) for r in await pool.fetch(BOOK.format(schema="public"))]
    finally:
        worker.stop()
        await pool.close()
    assert report.messages == published
    assert len(live[BOOK]) == 4 and len(live[PENDING]) == 1, "newest of one visit, one re-sent, two from cards"
    assert rebuilt[BOOK] == live[BOOK]
    assert rebuilt[PENDING] == live[PENDING]
    assert rebuilt[COUNTS] == live[COUNTS]
    assert from_small == rebuilt
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "in 2 processes over partitions 0,2; 1,3" in replayed.stderr + replayed.stdout
    assert "replayed 10 messages into 4 health-book rows" in replayed.stdout
    assert swapped == live[BOOK]
    assert dict(live[COUNTS]) == {"consumed": 10, "accepted": 5, "duplicate": 3, "pending": 1,
                                  "rejected:bad_signature": 1}


async def test_the_swap_merges_only_what_the_worker_wrote_since_the_rebuild_began(settings):
    """Rows written before the rebuild began came from messages it read; later ones are merged, higher version wins."""
    database_url = await recreate_database(settings.database_url, "healthbook_test_swap")
    pool = await connect_pool(database_url, min_size=1, max_size=2)
    schema = "replay_swap_check"
    try:
        async with pool.acquire() as conn:
            await conn.execute("insert into health_book_visits (facility_code, visit_code, personal_id, version, "
                               "event_id, year, admitted_at, discharged_at, record, clinic_key_id, signature, "
                               "signed_at, source_partition, source_offset, projected_at) "
                               "select '79001', 'v' || n, '079203000001', 1, 'e' || n, 2026, now(), now(), '{}', "
                               "'k1', decode('00', 'hex'), now(), 0, n, clock_timestamp() - interval '1 day' "
                               "from generate_series(1, 500) n")
            await create_rebuild(conn, schema)
            await conn.execute(f"insert into {schema}.health_book_visits select * from health_book_visits")
            since = await database_now(conn)
            # While the rebuild ran, the worker wrote a newer version of v1 and a new visit v501.
            await conn.execute("update health_book_visits set version = 2, event_id = 'e1-2', "
                               "projected_at = clock_timestamp() where visit_code = 'v1'")
            await conn.execute("insert into health_book_visits (facility_code, visit_code, personal_id, version, "
                               "event_id, year, admitted_at, discharged_at, record, clinic_key_id, signature, "
                               "signed_at, source_partition, source_offset) select facility_code, 'v501', "
                               "personal_id, 1, 'e501', year, admitted_at, discharged_at, record, clinic_key_id, "
                               "signature, signed_at, source_partition, 501 from health_book_visits "
                               "where visit_code = 'v2'")
            merged, locked = await swap_in_rebuild(conn, schema, since)
            book = {r["visit_code"]: (r["version"], r["event_id"])
                    for r in await conn.fetch("select visit_code, version, event_id from health_book_visits")}
            schemas = await conn.fetchval("select count(*) from pg_namespace where nspname = $1", schema)
    finally:
        await pool.close()
    assert merged == 2, "only the two rows written since the rebuild began"
    assert locked > 0, "the time the live book was locked is measured"
    assert len(book) == 501 and book["v1"] == (2, "e1-2") and book["v501"] == (1, "e501")
    assert schemas == 0
