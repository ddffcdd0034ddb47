"""The consent-gated query consumer on the real broker and database."""

from datetime import datetime

import pytest

from commands.identity_standin import confirmation
from domain.replies import EMPTY_HISTORY
from schemas.envelope import Signer, seal_request
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration


async def _two_citizens_with_visits(clinics, db):
    alice, bob = new_citizen(), new_citizen()
    mine = [visit(person=alice, sequence=next_sequence(), admitted=datetime(2025, m, 10, 9)) for m in (2, 7)]
    theirs = visit(person=bob, sequence=next_sequence(), admitted=datetime(2025, 7, 10, 9))
    await clinics.publish(*mine, theirs)
    for event in (*mine, theirs):
        await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the visits", process=clinics.worker)
    return alice, bob, mine, theirs


async def test_a_confirmed_citizen_sees_their_visits_of_the_year_and_nobody_elses(clinics, db, identity):
    alice, bob, mine, theirs = await _two_citizens_with_visits(clinics, db)
    reply = await identity.ask(confirmation(alice.personal_id, 2025))
    assert reply.status == "ok" and reply.year == 2025
    assert [v.visit_code for v in reply.visits] == [e["visit_code"] for e in mine]
    assert theirs["visit_code"] not in {v.visit_code for v in reply.visits}
    first = reply.visits[0]
    assert first.facility_code == "79001"
    assert first.admitted_at == mine[0]["admitted_at"]
    assert first.diagnosis_codes[0] == mine[0]["main_diagnosis_code"]
    assert [(m.name, m.strength, m.dose, m.instructions) for m in first.medicines] == [
        (m["name"], m["strength"], m["dose"], m["instructions"]) for m in mine[0]["medicines"]]
    assert [(r.name, r.value, r.unit, r.conclusion) for r in first.results] == [
        (r["indicator_name"], r["value"], r["unit"], r["conclusion"]) for r in mine[0]["results"]]
    consent = await db.fetchrow("select * from consents where personal_id = $1", alice.personal_id)
    assert consent["request_id"] == reply.request_id
    assert await db.fetchval("select count(*) from consents where personal_id = $1", bob.personal_id) == 0


async def test_a_year_without_visits_shows_the_empty_state_text(clinics, identity):
    reply = await identity.ask(confirmation(new_citizen().personal_id, 2019))
    assert reply.status == "ok"
    assert reply.visits == []
    assert reply.message == "Chưa có lịch sử khám chữa bệnh theo BHYT" == EMPTY_HISTORY


@pytest.mark.parametrize(("changes", "sign", "refusal"), [
    ({"consent_confirmed": False}, True, "no_consent"),
    ({"identity_level": 1}, True, "identity_level"),
    ({}, False, "unsigned"),
])
async def test_no_data_without_a_valid_confirmation(clinics, db, identity, changes, sign, refusal):
    alice, *_ = await _two_citizens_with_visits(clinics, db)
    reply = await identity.ask(confirmation(alice.personal_id, 2025, **changes), sign=sign)
    assert (reply.status, reply.refusal_code, reply.visits) == ("refused", refusal, [])
    assert await db.fetchval("select count(*) from consents where personal_id = $1", alice.personal_id) == 0
    logged = await db.fetchrow("select * from access_log where request_id = $1", reply.request_id)
    assert (logged["outcome"], logged["refusal_code"]) == ("refused", refusal)


async def test_a_request_signed_by_an_untrusted_key_is_refused(clinics, db, identity):
    alice, *_ = await _two_citizens_with_visits(clinics, db)
    request = confirmation(alice.personal_id, 2025)
    await identity.send_raw(alice.personal_id.encode(), seal_request(request, Signer.generate(identity.signer.key_id)))
    reply = await identity.reply(request["request_id"])
    assert (reply.status, reply.refusal_code, reply.visits) == ("refused", "bad_signature", [])
