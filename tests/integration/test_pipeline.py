"""Signed visit events through the real broker and worker into the PostgreSQL health book."""

import json
from datetime import datetime
from decimal import Decimal

import pytest

from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from tests.factories import visit, with_patient
from tests.integration.conftest import certified, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration


async def test_a_published_visit_reaches_the_health_book_field_by_field(clinics, db):
    person = new_citizen()
    event = visit(person=person, sequence=next_sequence())
    await clinics.publish(event)
    row = await wait_until(lambda: visible(db, "79001", event["visit_code"]), "the visit", process=clinics.worker)
    assert (row["personal_id"], row["version"], row["year"]) == (person.personal_id, 1, 2026)
    assert row["admitted_at"] == datetime(2026, 3, 15, 8, 30)
    record = json.loads(row["record"])
    assert record["patient"]["full_name"] == person.full_name
    assert [{k: stored[k] for k in sent} for stored, sent in zip(record["medicines"], event["medicines"],
                                                                  strict=True)] == event["medicines"]
    assert [r["value"] for r in record["results"]] == [r["value"] for r in event["results"]]
    assert Decimal(record["total_cost"]) == event["total_cost"]
    assert row["clinic_key_id"] == "k1"
    env = {"clinic_code": "79001", "key_id": "k1", "event_id": event["event_id"], "visit_version": 1,
           "signed_at": row["signed_at"], "payload": wire.encode(catalogue.VISIT_EVENT, event)}
    assert envelope.verify(clinics.signers["79001"].public_key, bytes(row["signature"]),
                           envelope.visit_signing_input(env)), "the stored signature vouches for the stored visit"


async def test_resent_visits_are_counted_as_duplicates_and_stored_once(clinics, db):
    person = new_citizen()
    event = visit(person=person, sequence=next_sequence())
    before = await _counts(db)
    await clinics.publish(event, event, event)
    await clinics.barrier(person)
    after = await _counts(db)
    rows = await db.fetch("select * from health_book_visits where personal_id = $1 and year = 2026",
                          person.personal_id)
    assert len(rows) == 1
    assert after["duplicate"] - before.get("duplicate", 0) == 2
    assert after["accepted"] - before["accepted"] == 2  # the visit and the barrier


async def test_newer_version_replaces_and_older_is_ignored(clinics, db):
    person = new_citizen()
    sequence = next_sequence()
    v1 = visit(person=person, sequence=sequence, version=1, reason="first")
    v3 = visit(person=person, sequence=sequence, version=3, reason="corrected")
    v2 = visit(person=person, sequence=sequence, version=2, reason="late and stale")
    await clinics.publish(v1)
    await wait_until(lambda: visible(db, "79001", v1["visit_code"]), "version 1", process=clinics.worker)
    await clinics.publish(v3, v2)
    await clinics.barrier(person)
    row = await visible(db, "79001", v1["visit_code"])
    assert row["version"] == 3
    assert json.loads(row["record"])["reason"] == "corrected"


async def test_same_visit_code_at_two_facilities_are_two_visits(clinics, db):
    person = new_citizen()
    sequence = next_sequence()
    here = visit(person=person, sequence=sequence, facility="79001")
    there = dict(visit(person=person, sequence=sequence, facility="01002"), visit_code=here["visit_code"])
    await clinics.publish(here)
    await clinics.publish(there, clinic="01002")
    await clinics.barrier(person)
    rows = await db.fetch("select facility_code from health_book_visits where visit_code = $1", here["visit_code"])
    assert sorted(r["facility_code"] for r in rows) == ["01002", "79001"]


async def test_every_rejection_reaches_the_dead_letter_topic_with_its_bytes_and_not_the_book(clinics, db, settings):
    person = new_citizen()
    key = person.personal_id.encode()
    signer = clinics.signers["79001"]
    stranger = Signer.generate("k1")
    planted = {}

    def sealed(event, clinic="79001", by=signer):
        return envelope.seal_visit(event, clinic, by)

    def fresh(**changes):
        return visit(person=person, sequence=next_sequence(), **changes)

    planted["malformed"] = (key, b"\x00\x00\x00\x00\x02 definitely not avro")
    planted["unsupported_schema"] = (key, wire.encode(catalogue.VISIT_EVENT, fresh()))
    unknown_clinic = fresh(facility="92001")
    planted["unknown_clinic"] = (key, sealed(unknown_clinic, "92001", stranger))
    planted["unknown_key"] = (key, sealed(fresh(), by=Signer.generate("k9")))
    planted["bad_signature"] = (key, sealed(fresh(), by=Signer("k1", stranger.private_key)))
    planted["clinic_mismatch"] = (key, sealed(fresh(facility="01002")))
    planted["wrong_key"] = (b"somebody-else", sealed(fresh()))
    planted["invalid_event"] = (key, sealed(with_patient(fresh(discharged_at="202603140000"), birth_date="19991301")))

    async with clinics.publisher() as pub:
        for message_key, value in planted.values():
            await (await pub.publish_raw(message_key, value))
    before = await _counts(db)
    await clinics.barrier(person)

    letters = {bytes(r["original_value"]): r for r in await clinics.dead_letters()}
    for reason, (message_key, value) in planted.items():
        letter = letters.get(value)
        assert letter is not None, f"{reason} message is not on the dead-letter topic"
        assert letter["reason_code"] == reason
        assert letter["reason"]
        assert letter["original_key"] == message_key
        assert letter["source_topic"] == settings.topics.visits
        assert letter["source_offset"] >= 0
    invalid = letters[planted["invalid_event"][1]]
    assert {(v["field"], v["rule"]) for v in invalid["violations"]} == {
        ("patient.birth_date", "birth_date_format"), ("discharged_at", "discharge_before_admission")}
    stored = await db.fetchval("select count(*) from health_book_visits where personal_id = $1 and year = 2026",
                               person.personal_id)
    assert stored == 0
    after = await _counts(db)
    assert sum(v for k, v in after.items() if k.startswith("rejected:")) >= len(planted)
    assert before["consumed"] <= after["consumed"]


async def test_counts_add_up(clinics, db):
    counts = await _counts(db)
    rejected = sum(v for k, v in counts.items() if k.startswith("rejected:"))
    waiting = counts.get("pending", 0)  # visits still waiting for their card: counted once they move or fail
    assert counts["accepted"] + counts.get("duplicate", 0) + rejected + waiting == counts["consumed"]


async def test_a_key_registered_just_before_its_first_visit_is_known(clinics, db, settings):
    person = new_citizen()
    newcomer = Signer.generate("2026-a")
    await register(settings, certified(settings, "48003", newcomer))
    event = visit(person=person, sequence=next_sequence(), facility="48003")
    async with clinics.publisher("48003", newcomer) as pub:
        await pub.publish_all([event])
    await clinics.barrier(person)
    assert await visible(db, "48003", event["visit_code"]) is not None


async def _counts(db) -> dict[str, int]:
    return {r["outcome"]: r["count"] for r in await db.fetch("select outcome, count from pipeline_counts")}
