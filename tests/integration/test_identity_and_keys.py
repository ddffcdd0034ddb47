"""Identity resolution from BHYT cards, and the clinic key lifecycle, on the real stack."""


import pytest

from producers.clinic_keys import new_key_entry, publish_keys, revocation, rotation
from producers.identity_cards import publish_identity_cards
from schemas.envelope import Signer, now_millis, seal_visit
from tests.factories import visit, with_patient
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


async def _pending(db, facility, visit_code):
    return await db.fetchrow("select * from pending_visits where facility_code = $1 and visit_code = $2",
                             facility, visit_code)


async def test_a_visit_without_personal_id_waits_for_its_card_then_joins_the_citizens_book(clinics, db, settings):
    child = new_citizen()
    card = f"TE1{next_sequence():012d}"
    event = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                         insurance_card_numbers=[card])
    await clinics.publish(event)
    waiting = await wait_until(lambda: _pending(db, "79001", event["visit_code"]), "the visit to wait as pending",
                               process=clinics.worker)
    assert waiting["card_number"] == card
    assert await visible(db, "79001", event["visit_code"]) is None
    assert (await clinics.counts())["pending"] >= 1

    await publish_identity_cards(settings.kafka_bootstrap, settings.topics.identity_cards, [(card, child.personal_id)])
    row = await wait_until(lambda: visible(db, "79001", event["visit_code"]), "the pending visit to be projected",
                           process=clinics.worker)
    assert row["personal_id"] == child.personal_id
    assert await _pending(db, "79001", event["visit_code"]) is None

    later = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                         insurance_card_numbers=[card])
    await clinics.publish(later)
    row = await wait_until(lambda: visible(db, "79001", later["visit_code"]), "a visit whose card is already known")
    assert row["personal_id"] == child.personal_id


async def test_a_card_of_another_citizen_is_dead_lettered(clinics, db, settings):
    owner, other = new_citizen(), new_citizen()
    card = f"GD4{next_sequence():012d}"
    await publish_identity_cards(settings.kafka_bootstrap, settings.topics.identity_cards, [(card, owner.personal_id)])
    event = with_patient(visit(person=other, sequence=next_sequence()), insurance_card_numbers=[card])
    await wait_until(lambda: _card_known(clinics, settings, card, owner), "the mapping to reach the worker")
    await clinics.publish(event)
    await clinics.barrier(other)
    letters = [d for d in await clinics.dead_letters() if d["event_id"] == event["event_id"]]
    assert [d["reason_code"] for d in letters] == ["identity_mismatch"]
    assert await visible(db, "79001", event["visit_code"]) is None


async def _card_known(clinics, settings, card, owner):
    probe = with_patient(visit(person=owner, sequence=next_sequence()), personal_id=None, insurance_card_numbers=[card])
    await clinics.publish(probe)
    return await wait_until(lambda: visible(clinics.pool, "79001", probe["visit_code"]), "the probe visit")


async def test_rotation_keeps_the_old_key_for_its_grace_period_only(clinics, db, settings):
    old, new = Signer.generate("2026-a"), Signer.generate("2026-b")
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [new_key_entry("56002", old)])
    rotated_at = now_millis() - 2 * MINUTE_MS  # the grace ended a minute ago: signing times stay near the broker's
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys,
                       rotation(new_key_entry("56002", old), "56002", new, rotated_at, grace_ms=MINUTE_MS))
    person = new_citizen()
    within = visit(person=person, facility="56002", sequence=next_sequence())
    after = visit(person=person, facility="56002", sequence=next_sequence())
    with_new = visit(person=person, facility="56002", sequence=next_sequence())
    async with clinics.publisher("56002", old) as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(within, "56002", old, signed_at=rotated_at + MINUTE_MS - 1)))
        await (await pub.publish_raw(key, seal_visit(after, "56002", old, signed_at=rotated_at + MINUTE_MS)))
        await (await pub.publish_raw(key, seal_visit(with_new, "56002", new)))
    await clinics.barrier(person)
    assert await visible(db, "56002", within["visit_code"]) is not None
    assert await visible(db, "56002", with_new["visit_code"]) is not None
    assert await visible(db, "56002", after["visit_code"]) is None
    letters = {d["event_id"]: d["reason_code"] for d in await clinics.dead_letters()}
    assert letters[after["event_id"]] == "key_revoked"


async def test_revocation_rejects_what_was_signed_after_it_and_keeps_what_was_signed_before(clinics, db, settings):
    signer = Signer.generate("k1")
    entry = new_key_entry("56003", signer)
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [entry])
    revoked_at = now_millis() - 10 * MINUTE_MS
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [revocation(entry, revoked_at)])
    person = new_citizen()
    before = visit(person=person, facility="56003", sequence=next_sequence())
    since = visit(person=person, facility="56003", sequence=next_sequence())
    async with clinics.publisher("56003", signer) as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(before, "56003", signer, signed_at=revoked_at - 60_000)))
        await (await pub.publish_raw(key, seal_visit(since, "56003", signer, signed_at=revoked_at)))
    await clinics.barrier(person)
    assert await visible(db, "56003", before["visit_code"]) is not None
    assert await visible(db, "56003", since["visit_code"]) is None
    letters = {d["event_id"]: d["reason_code"] for d in await clinics.dead_letters()}
    assert letters[since["event_id"]] == "key_revoked"


async def test_a_thief_holding_a_revoked_key_cannot_backdate_past_the_broker_clock(clinics, db, settings):
    signer = Signer.generate("stolen")
    entry = new_key_entry("56004", signer)
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [entry])
    stolen_at = now_millis() - 2 * HOUR_MS
    await publish_keys(settings.kafka_bootstrap, settings.topics.clinic_keys, [revocation(entry, stolen_at)])
    person = new_citizen()
    backdated = visit(person=person, facility="56004", sequence=next_sequence())
    ahead = visit(person=person, sequence=next_sequence())  # an honest clinic whose clock runs an hour fast
    async with clinics.publisher("56004", signer) as pub:
        key = person.personal_id.encode()
        await (await pub.publish_raw(key, seal_visit(backdated, "56004", signer, signed_at=stolen_at - MINUTE_MS)))
    async with clinics.publisher() as pub:
        await (await pub.publish_raw(key, seal_visit(ahead, "79001", clinics.signers["79001"],
                                                     signed_at=now_millis() + HOUR_MS)))
    await clinics.barrier(person)
    assert await visible(db, "56004", backdated["visit_code"]) is None
    assert await visible(db, "79001", ahead["visit_code"]) is None
    letters = {d["event_id"]: d for d in await clinics.dead_letters()}
    assert letters[backdated["event_id"]]["reason_code"] == "signed_at_out_of_range"
    assert "before the broker appended" in letters[backdated["event_id"]]["reason"]
    assert letters[ahead["event_id"]]["reason_code"] == "signed_at_out_of_range"
    assert "after the broker appended" in letters[ahead["event_id"]]["reason"]
