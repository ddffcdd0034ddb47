"""Replaying the visits topic from the beginning into an empty database gives the same health book."""

import pytest

from commands.processes import ServiceProcess
from healthbook.database import connect_pool, recreate_database
from tests.factories import visit
from tests.integration.conftest import LOGS, new_citizen, next_sequence, wait_until

pytestmark = pytest.mark.integration

BOOK = """
select facility_code, visit_code, personal_id, version, event_id, year, admitted_at, discharged_at,
       record, clinic_key_id, signature, signed_at, source_partition, source_offset
from health_book_visits order by facility_code, visit_code
"""


async def test_replay_into_an_empty_database_rebuilds_an_identical_health_book(clinics, db, settings):
    person = new_citizen()
    sequence = next_sequence()
    versions = [visit(person=person, sequence=sequence, version=v, reason=f"v{v}") for v in (1, 3, 2, 3)]
    await clinics.publish(*versions, visit(person=person, sequence=next_sequence()))
    await clinics.barrier(person)
    original = await db.fetch(BOOK)
    consumed = await db.fetchval("select count from pipeline_counts where outcome = 'consumed'")

    replay_settings = settings.model_copy(update={
        "worker_id": f"{settings.worker_app_id}-replay",
        "database_url": await recreate_database(settings.database_url, "healthbook_test_replay"),
    })
    replay_db = await connect_pool(replay_settings.database_url, min_size=1, max_size=2)
    replayer = ServiceProcess("worker", replay_settings, LOGS / f"{replay_settings.worker_app_id}.log").start()
    try:
        async def caught_up():
            return await replay_db.fetchval(
                "select count >= $1 from pipeline_counts where outcome = 'consumed'", consumed)

        await wait_until(caught_up, "the replaying worker to consume the whole topic", timeout=120, process=replayer)
        rebuilt = await replay_db.fetch(BOOK)
    finally:
        replayer.stop()
        await replay_db.close()
    assert len(rebuilt) == len(original) > 0
    assert [tuple(r) for r in rebuilt] == [tuple(r) for r in original]
