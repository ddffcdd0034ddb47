"""Three kinds of failure, three answers: content is dead-lettered, a bug is isolated, nothing stops the services."""

import dataclasses
from datetime import datetime

import pytest

from commands.identity_standin import confirmation
from domain.batch import Delivery
from domain.identity import IdentityDirectory
from domain.keyring import ClinicKey, Keyring
from healthbook import kafka
from healthbook.config import Settings
from healthbook.kafka import Broker, ensure_topics
from healthbook.store import BookReader, BookWriter, PostgresBatchStore, create_rebuild, drop_rebuild
from schemas.envelope import Signer, now_millis, seal_visit
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from streams.batch_step import BatchStep, Checks, topic_range_reader
from tests.factories import visit, with_patient
from tests.integration.conftest import certified, map_cards, new_citizen, next_sequence, register, visible, wait_until
from tests.unit.test_hostile_input import _contradicting, _corpus

pytestmark = pytest.mark.integration
SIGNER = Signer.generate("k1")


class RecordingOutlets:
    """Keeps what the step would send, instead of sending it."""

    def __init__(self) -> None:
        self.letters, self.analytics = [], []

    async def dead_letters(self, refused) -> None:
        self.letters += refused

    async def deidentified(self, visits) -> None:
        self.analytics += [event for event, _ in visits]


class BuggyVersions(dict):
    """A deduplication table with a bug that strikes one citizen every time."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def get(self, personal_id, default=None):
        if personal_id == self.victim:
            raise RuntimeError("a bug met on this citizen's visits")
        return super().get(personal_id, default)


def deliveries(events, topic="visits") -> list[Delivery]:
    appended = now_millis()  # as the broker stamps a message it appends
    return [Delivery(topic, 0, offset, appended, e["patient"]["personal_id"].encode(), seal_visit(e, "79001", SIGNER))
            for offset, e in enumerate(events)]


def step_on(db, schema, versions, outlets) -> BatchStep:
    keyring = Keyring(None)
    keyring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))

    async def no_gaps_expected(topic, partition, start, end):
        raise AssertionError(f"these batches start at their applied offsets; nothing to read at {start}-{end}")

    return BatchStep("visits", PostgresBatchStore(db, BookWriter(schema)),
                     Checks(keyring, IdentityDirectory(None), Settings().signing_window), versions, outlets,
                     no_gaps_expected)


async def test_a_row_postgresql_refuses_is_dead_lettered_and_the_rest_of_its_batch_is_written(db):
    schema = "failure_refused"
    async with db.acquire() as conn:
        await create_rebuild(conn, schema)
        await conn.execute(f"alter table {schema}.health_book_visits add constraint no_refuse_me "
                           "check (visit_code not like '%REFUSE-ME')")
    events = [visit(person=new_citizen(), sequence=next_sequence()) for _ in range(5)]
    events[2]["visit_code"] += "-REFUSE-ME"
    outlets = RecordingOutlets()
    try:
        result = await step_on(db, schema, {}, outlets).run(deliveries(events))
        async with db.acquire() as conn:
            counts = await BookReader(schema).counts_of(conn)
            stored = await BookReader(schema).row_count(conn)
    finally:
        async with db.acquire() as conn:
            await drop_rebuild(conn, schema)
    assert [(r.delivery.offset, r.rejected.code) for r in outlets.letters] == [(2, "refused_by_database")]
    assert "CheckViolationError, SQLSTATE 23514" in outlets.letters[0].rejected.reason
    assert stored == 4 and result.counts["accepted"] == 4
    assert {k: v for k, v in counts.items() if v} == {"consumed": 5, "accepted": 4, "rejected:refused_by_database": 1}


async def test_a_bug_that_repeats_on_one_message_is_isolated_after_the_restart_and_dead_lettered_once(db):
    schema = "failure_bug"
    people = [new_citizen() for _ in range(6)]
    events = [visit(person=p, sequence=next_sequence()) for p in people]
    batch = deliveries(events, topic=f"visits-{schema}")
    async with db.acquire() as conn:
        await create_rebuild(conn, schema)
    try:
        first = step_on(db, schema, BuggyVersions(people[4].personal_id), RecordingOutlets())
        first.topic = batch[0].topic
        with pytest.raises(RuntimeError):
            await first.run(batch)
        await first.record_suspect(batch, RuntimeError())  # what the worker does before it stops

        outlets = RecordingOutlets()
        restarted = step_on(db, schema, BuggyVersions(people[4].personal_id), outlets)
        restarted.topic = batch[0].topic
        restarted.suspects = await BookWriter(schema).suspect_batches(db, restarted.topic)
        assert restarted.suspects == [(0, 0, 5)]
        result = await restarted.run(batch)
        async with db.acquire() as conn:
            counts = await BookReader(schema).counts_of(conn)
        left = await BookWriter(schema).suspect_batches(db, restarted.topic)
    finally:
        async with db.acquire() as conn:
            await drop_rebuild(conn, schema)
    assert [(r.delivery.offset, r.rejected.code) for r in outlets.letters] == [(4, "internal_error")]
    assert {k: v for k, v in counts.items() if v} == {"consumed": 6, "accepted": 5, "rejected:internal_error": 1}
    assert result.counts["consumed"] == 6 and left == [] and restarted.suspects == []


async def test_a_card_mapped_to_a_contradicting_personal_id_dead_letters_the_waiting_visit(clinics, db, settings):
    child = new_citizen()
    card = f"TE1{next_sequence():012d}"
    event = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                         insurance_card_numbers=[card])
    await clinics.publish(event)
    await wait_until(lambda: db.fetchrow("select 1 from pending_visits where visit_code = $1", event["visit_code"]),
                     "the visit to wait for its card", process=clinics.worker)
    wrong = _contradicting(new_citizen().personal_id, Visit.of_model(VisitEvent.model_validate(with_patient(
        event, personal_id=child.personal_id))))
    await map_cards(settings, [(card, wrong)])

    async def dead_lettered():
        return [d for d in await clinics.dead_letters() if d["event_id"] == event["event_id"]]

    (letter,) = await wait_until(dead_lettered, "the contradicted visit's dead letter", process=clinics.worker)
    assert letter["reason_code"] == "identity_mismatch" and letter["original_value"]
    await wait_until(lambda: db.fetchval("select count(*) = 0 from pending_visits where visit_code = $1",
                                         event["visit_code"]), "the visit to stop waiting", process=clinics.worker)
    assert await visible(db, "79001", event["visit_code"]) is None
    await clinics.barrier(new_citizen())
    assert clinics.worker.running


async def test_unreadable_registry_records_and_requests_are_skipped_and_the_services_go_on(clinics, db, settings,
                                                                                         identity):
    await kafka.send_all(Broker.of(settings), "test-harness", settings.topics.clinic_keys,
                         [(b"79001/k1", bytes.fromhex(_corpus("clinic_key")))])
    newcomer = Signer.generate("k1")
    await register(settings, certified(settings, "56020", newcomer))
    person = new_citizen()
    later = visit(person=person, facility="56020", sequence=next_sequence(), admitted=datetime(2026, 4, 1, 9))
    async with clinics.publisher("56020", newcomer) as pub:
        await pub.publish_all([later])
    await wait_until(lambda: visible(db, "56020", later["visit_code"]), "a visit signed with a key registered after "
                     "an unreadable registry record", process=clinics.worker)

    await identity.send_raw(b"x", bytes.fromhex(_corpus("integration_request")))
    await identity.send_raw(b"x", b"\x00\x00\x00\x00\x09" + b"\xff" * 20)
    reply = await identity.ask(confirmation(person.personal_id, 2026))
    assert reply.status == "ok" and [v.visit_code for v in reply.visits] == [later["visit_code"]]
    assert identity.process.running


@pytest.mark.parametrize("delivered", [[5, 6, 7, 8, 9], [0, 1, 2, 6, 7, 8, 9]], ids=["at-the-start", "inside"])
async def test_a_batch_that_skips_offsets_reads_the_skipped_messages_from_the_topic_and_applies_all(db, settings,
                                                                                                   delivered):
    own = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}gap-{next_sequence()}."})
    await ensure_topics(own, Broker.of(own))
    topic = own.topics.visits
    events = [visit(person=new_citizen(), sequence=next_sequence()) for _ in range(10)]
    async with kafka.producer(Broker.of(own), "test-gap") as sender:
        for event in events:
            await sender.send_and_wait(topic, seal_visit(event, "79001", SIGNER),
                                       key=event["patient"]["personal_id"].encode(), partition=0)
    read = topic_range_reader(Broker.of(own))
    batch = [d for d in await read(topic, 0, 0, 10) if d.offset in delivered]  # what a skipping consumer hands over
    schema = "failure_gap"
    async with db.acquire() as conn:
        await create_rebuild(conn, schema)
    try:
        step = step_on(db, schema, {}, RecordingOutlets())
        step.topic, step.read_range = topic, read
        result = await step.run(batch)
        async with db.acquire() as conn:
            counts = await BookReader(schema).counts_of(conn)
            rows = await BookReader(schema).row_count(conn)
            applied = await BookWriter(schema).applied_offsets(conn, topic, [0])
    finally:
        async with db.acquire() as conn:
            await drop_rebuild(conn, schema)
    assert [d.offset for d in result.applied] == list(range(10))
    assert (rows, counts["consumed"], counts["accepted"], applied) == (10, 10, 10, {0: 10})


async def test_a_dedup_table_that_lost_its_changelog_writes_is_filled_from_the_book(db):
    """A worker killed after its commit but before its table writes reached the changelog: the book decides."""
    schema = "failure_lost_changelog"
    async with db.acquire() as conn:
        await create_rebuild(conn, schema)
    person = new_citizen()
    events = [visit(person=person, sequence=next_sequence()) for _ in range(3)]
    table: dict = {}
    try:
        step = step_on(db, schema, table, RecordingOutlets())
        await step.run(deliveries(events))
        table.clear()  # the changelog never got them, and faust committed the offsets: nothing replays them
        resent = [dataclasses.replace(d, offset=d.offset + 3) for d in deliveries(events[:2])]
        result = await step.run(resent)
    finally:
        async with db.acquire() as conn:
            await drop_rebuild(conn, schema)
    assert (result.counts["duplicate"], result.counts.get("accepted", 0)) == (2, 0)
    assert table[person.personal_id] == {f"79001/{e['visit_code']}": e["version"] for e in events[:2]}, \
        "the visits the batch met are healed from the book"
