"""Identity resolution from BHYT cards, and the clinic key lifecycle, on the real stack."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from healthbook.kafka import Broker
from healthbook.topic_follower import TopicFollower
from producers.clinic_keys import revocation, rotation
from schemas.envelope import Signer, now_millis, seal_visit
from tests.factories import visit, with_patient
from tests.integration.conftest import certified, map_cards, new_citizen, next_sequence, register, visible, wait_until

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


async def _pending(db, facility, visit_code):
    return await db.fetchrow("select * from pending_visits where facility_code = $1 and visit_code = $2",
                             facility, visit_code)


async def _remembered(settings, personal_id: str, visit_key: str) -> int | None:
    """The version of a visit the dedup table's changelog holds for a citizen, as a restarted worker would read it."""
    latest: dict[str, int] = {}

    def apply(key: bytes | None, value: bytes | None) -> None:
        if key == personal_id.encode():
            latest.clear()
            latest.update(json.loads(value) if value else {})

    await TopicFollower(Broker.of(settings), settings.dedup_changelog, apply).snapshot()
    return latest.get(visit_key)


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

    await map_cards(settings, [(card, child.personal_id)])
    row = await wait_until(lambda: visible(db, "79001", event["visit_code"]), "the pending visit to be projected",
                           process=clinics.worker)
    assert row["personal_id"] == child.personal_id
    assert await _pending(db, "79001", event["visit_code"]) is None
    assert await wait_until(lambda: _remembered(settings, child.personal_id, f"79001/{event['visit_code']}"),
                            "the dedup table to hold the visit the card resolved") == event["version"]

    later = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                         insurance_card_numbers=[card])
    await clinics.publish(later)
    row = await wait_until(lambda: visible(db, "79001", later["visit_code"]), "a visit whose card is already known")
    assert row["personal_id"] == child.personal_id


async def test_a_card_of_another_citizen_is_dead_lettered(clinics, db, settings):
    owner, other = new_citizen(), new_citizen()
    card = f"GD4{next_sequence():012d}"
    await map_cards(settings, [(card, owner.personal_id)])
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
    first = certified(settings, "56002", old)
    await register(settings, first)
    rotated_at = now_millis() - 2 * MINUTE_MS  # the grace ended a minute ago: signing times stay near the broker's
    await register(settings, *rotation(first, "56002", certified(settings, "56002", new), rotated_at,
                                       grace_ms=MINUTE_MS))
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
    entry = certified(settings, "56003", signer)
    await register(settings, entry)
    revoked_at = now_millis() - 2 * MINUTE_MS  # its certificate, issued just now, dates from 5 min ago
    await register(settings, revocation(entry, revoked_at))
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
    entry = certified(settings, "56004", signer, not_before=datetime.now(UTC) - timedelta(days=30))
    await register(settings, entry)
    stolen_at = now_millis() - 2 * HOUR_MS
    await register(settings, revocation(entry, stolen_at))
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


async def test_unsigned_or_wrongly_signed_registry_records_change_nothing_and_status_shows_them(
        clinics, db, settings, ca):
    from consumers.status import status
    from domain.keyring import ClinicKey
    from healthbook import kafka
    from schemas import catalogue, wire

    intruder = Signer.generate("k1")
    unsigned_key = ClinicKey("56030", "k1", intruder.public_key, now_millis()).to_record()
    foreign_ca_key = ca.key_registry().clinic_key(dict(unsigned_key, certificate=None))
    child, attacker = new_citizen(), new_citizen()
    card = f"TE1{next_sequence():012d}"
    rerouted = ca.key_registry().identity_card({"card_number": card, "personal_id": attacker.personal_id,
                                                "updated_at": now_millis()})  # signed, but not by insurance
    await kafka.send_all(Broker.of(settings), "intruder", settings.topics.clinic_keys, [
        (b"56030/k1", wire.encode(catalogue.CLINIC_KEY_V1, {k: unsigned_key[k] for k in (
            "clinic_code", "key_id", "algorithm", "public_key", "registered_at", "revoked_at")})),
        (b"56030/k1", wire.encode(catalogue.CLINIC_KEY, foreign_ca_key)),
        (b"79001/k1", None)])
    await kafka.send_all(Broker.of(settings), "intruder", settings.topics.identity_cards,
                         [(card.encode(), wire.encode(catalogue.IDENTITY_CARD, rerouted))])
    planted = visit(person=attacker, facility="56030", sequence=next_sequence())
    waiting = with_patient(visit(person=child, sequence=next_sequence()), personal_id=None,
                           insurance_card_numbers=[card])
    honest = visit(person=attacker, sequence=next_sequence())
    async with clinics.publisher("56030", intruder) as pub:
        await (await pub.publish(planted))
    await clinics.publish(waiting, honest)
    await wait_until(lambda: visible(db, "79001", honest["visit_code"]), "79001's visit, its key untouched",
                     process=clinics.worker)
    await clinics.barrier(attacker)
    assert await visible(db, "56030", planted["visit_code"]) is None
    letters = {d["event_id"]: d["reason_code"] for d in await clinics.dead_letters()}
    assert letters[planted["event_id"]] == "unknown_clinic"
    assert await db.fetchval("select count(*) from pending_visits where visit_code = $1", waiting["visit_code"]) == 1
    assert await visible(db, "79001", waiting["visit_code"]) is None, "the card is not routed to the attacker"
    ignored = (await status(settings, Broker.of(settings))).ignored
    keys, cards = ignored[settings.topics.clinic_keys], ignored[settings.topics.identity_cards]
    assert keys["no_certificate"] >= 2 and keys["unsigned_tombstone"] >= 1 and cards["wrong_subject"] >= 1


async def test_a_certificate_revoked_while_the_worker_runs_refuses_what_its_key_signs_from_then_on(
        clinics, db, settings, ca, tmp_path):
    """`healthbook ca revoke` rewrites the list; the running worker re-reads it, with no restart."""
    from cryptography import x509

    from tests.integration.test_cli import healthbook

    signer = Signer.generate("k1")
    entry = certified(settings, "56021", signer, not_before=datetime.now(UTC) - timedelta(days=1))
    await register(settings, entry)
    person = new_citizen()
    before = visit(person=person, facility="56021", sequence=next_sequence())
    after = visit(person=person, facility="56021", sequence=next_sequence())
    async with clinics.publisher("56021", signer) as pub:
        await (await pub.publish_raw(person.personal_id.encode(), seal_visit(before, "56021", signer)))
    await wait_until(lambda: visible(db, "56021", before["visit_code"]), "the visit signed before the revocation",
                     process=clinics.worker)
    pem = tmp_path / "56021.crt"
    pem.write_bytes(x509.load_der_x509_certificate(entry.certificate).public_bytes(serialization.Encoding.PEM))
    revoked = healthbook(settings, "ca", "revoke", str(pem))
    assert revoked.returncode == 0 and "re-read the list within seconds" in revoked.stdout, revoked.stderr
    await asyncio.sleep(2)  # the signature below is made after the revocation's time, as a thief's would be
    async with clinics.publisher("56021", signer) as pub:
        await (await pub.publish_raw(person.personal_id.encode(), seal_visit(after, "56021", signer)))
    await clinics.barrier(person)
    assert await visible(db, "56021", after["visit_code"]) is None
    assert await visible(db, "56021", before["visit_code"]) is not None, "what it signed before stays"
    letter = {d["event_id"]: d for d in await clinics.dead_letters()}[after["event_id"]]
    assert letter["reason_code"] == "certificate_revoked" and "revoked by its CA" in letter["reason"]
