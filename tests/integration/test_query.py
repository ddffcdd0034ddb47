"""The consent-gated query consumer on the real broker and database."""

from datetime import UTC, datetime, timedelta

import pytest

from commands.identity_standin import confirmation
from domain import replies
from domain.replies import LIST_FIELDS, SEALED_FIELDS
from domain.sentences import EMPTY_HISTORY, SEALED_VISIT
from schemas.envelope import Signer, seal_request
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration
SIGNER = Signer.generate("vneid-redelivery-test")


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
    assert first.medicines == [] and first.results == [] and first.signed is None, "a list row, not the visit"
    detail = (await identity.ask(confirmation(alice.personal_id, 2025, detail=("79001", mine[0]["visit_code"])))
              ).visits[0]
    assert [(m.name, m.strength, m.dose, m.instructions) for m in detail.medicines] == [
        (m["name"], m["strength"], m["dose"], m["instructions"]) for m in mine[0]["medicines"]]
    assert [(r.name, r.value, r.unit, r.conclusion) for r in detail.results] == [
        (r["indicator_name"], r["value"], r["unit"], r["conclusion"]) for r in mine[0]["results"]]
    assert detail.signed is not None and detail.signed.signed_message, "the detail carries the signed envelope"
    consent = await db.fetchrow("select * from consents where personal_id = $1", alice.personal_id)
    assert consent["request_id"] == reply.request_id
    assert await db.fetchval("select count(*) from consents where personal_id = $1", bob.personal_id) == 0


async def test_a_year_without_visits_shows_the_empty_state_text(clinics, identity):
    reply = await identity.ask(confirmation(new_citizen().personal_id, 2019))
    assert reply.status == "ok"
    assert reply.visits == []
    assert reply.message == "Chưa có lịch sử khám chữa bệnh theo BHYT" == EMPTY_HISTORY.citizen()


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


async def _access(db, request_id: str, count: int) -> list[tuple[str, str | None]]:
    await wait_until(lambda: _logged(db, request_id, count), f"{count} access-log rows for {request_id}")
    rows = await db.fetch("select outcome, refusal_code from access_log where request_id = $1 order by id", request_id)
    return [(r["outcome"], r["refusal_code"]) for r in rows]


async def _logged(db, request_id: str, count: int) -> bool:
    return await db.fetchval("select count(*) from access_log where request_id = $1", request_id) >= count


async def test_the_same_signed_confirmation_sent_twice_is_served_once(clinics, db, identity):
    alice, *_ = await _two_citizens_with_visits(clinics, db)
    request = confirmation(alice.personal_id, 2025)
    captured = seal_request(request, identity.signer)
    for _ in range(2):
        await identity.send_raw(alice.personal_id.encode(), captured)
    assert await _access(db, request["request_id"], 2) == [("served", None), ("refused", "replayed_request")]


@pytest.mark.parametrize("requested_at", [datetime(1970, 1, 1, tzinfo=UTC), datetime.now(UTC) - timedelta(days=365),
                                          datetime.now(UTC) + timedelta(days=30)])
async def test_a_request_dated_outside_the_window_is_refused_as_stale(clinics, db, identity, requested_at):
    alice, *_ = await _two_citizens_with_visits(clinics, db)
    request = dict(confirmation(alice.personal_id, 2025), requested_at=requested_at)
    reply = await identity.ask(request)
    assert (reply.status, reply.refusal_code, reply.visits) == ("refused", "stale_request", [])
    assert await _access(db, request["request_id"], 1) == [("refused", "stale_request")]
    assert await db.fetchval("select count(*) from consents where personal_id = $1", alice.personal_id) == 0


async def test_a_redelivered_request_is_answered_again_not_refused(clinics, db):
    from consumers.query import QueryPolicy, answer
    from healthbook.config import Settings
    from healthbook.store import PostgresQueryStore

    alice, *_ = await _two_citizens_with_visits(clinics, db)
    raw = seal_request(confirmation(alice.personal_id, 2025), SIGNER)
    settings = Settings()
    policy = QueryPolicy(settings.request_policy({SIGNER.key_id: SIGNER.public_key}), settings.sensitive, 10**6)
    store = PostgresQueryStore(db)
    answers = [await answer(store, raw, policy, source) for source in ((0, 10**12), (0, 10**12), (1, 10**12))]
    assert [(a.reply.status, a.reply.refusal_code, len(a.reply.visits)) for a in answers] == [
        ("ok", None, 2), ("ok", None, 2), ("refused", "replayed_request", 0)]


async def test_one_batch_writes_its_ledger_at_once_and_a_repeat_within_it_or_held_elsewhere_is_a_replay(clinics, db):
    from consumers.query import QueryPolicy, answer, answer_all
    from healthbook.config import Settings
    from healthbook.store import PostgresQueryStore

    alice, bob, *_ = await _two_citizens_with_visits(clinics, db)
    settings = Settings()
    policy = QueryPolicy(settings.request_policy({SIGNER.key_id: SIGNER.public_key}), settings.sensitive, 10**6)
    store = PostgresQueryStore(db)
    held_elsewhere = seal_request(confirmation(bob.personal_id, 2025), SIGNER)
    await answer(store, held_elsewhere, policy, (1, 10**12 + 7))
    twice = seal_request(confirmation(alice.personal_id, 2025), SIGNER)
    refused = seal_request(confirmation(alice.personal_id, 2025, identity_level=1), SIGNER)
    batch = [(twice, (0, 10**12 + 1)), (refused, (0, 10**12 + 2)), (twice, (0, 10**12 + 3)),
             (held_elsewhere, (0, 10**12 + 4))]
    answers = await answer_all(store, batch, policy)
    assert [(a.reply.status, a.reply.refusal_code, len(a.reply.visits)) for a in answers] == [
        ("ok", None, 2), ("refused", "identity_level", 0), ("refused", "replayed_request", 0),
        ("refused", "replayed_request", 0)]
    ids = [a.reply.request_id for a in answers]
    logged = await db.fetch("select request_id, outcome, refusal_code, visits from access_log "
                            "where request_id = any($1) order by id", ids)
    assert [(r["request_id"], r["outcome"], r["refusal_code"], r["visits"]) for r in logged] == [
        (ids[3], "served", None, 1), (ids[0], "served", None, 2), (ids[1], "refused", "identity_level", 0),
        (ids[2], "refused", "replayed_request", 0), (ids[3], "refused", "replayed_request", 0)]
    held = await db.fetch("select request_id, source_partition, source_offset from served_requests "
                          "where request_id = any($1)", ids)
    assert {(r["request_id"], r["source_partition"], r["source_offset"]) for r in held} == {
        (ids[0], 0, 10**12 + 1), (ids[3], 1, 10**12 + 7)}
    assert await db.fetchval("select request_id from consents where personal_id = $1", alice.personal_id) == ids[0]


async def test_a_sensitive_visit_is_sealed_in_the_year_list_and_shown_in_the_citizens_detail(clinics, db, identity):
    alice = new_citizen()
    hiv = visit(person=alice, sequence=next_sequence(), admitted=datetime(2025, 4, 2, 9),
                main_diagnosis_code="B20.1", secondary_diagnosis_codes=["J06.9"])
    await clinics.publish(hiv)
    await wait_until(lambda: visible(db, "79001", hiv["visit_code"]), "the visit", process=clinics.worker)
    (listed,) = (await identity.ask(confirmation(alice.personal_id, 2025))).visits
    assert listed.sealed and listed.diagnosis_codes == [] and listed.diagnosis_names == SEALED_VISIT.citizen()
    shown = listed.model_dump_json()
    assert "B20" not in shown and "J06.9" not in shown and hiv["discharge_diagnosis"] not in shown
    assert listed.signed is None, "the signed envelope would name B20"
    detail = await identity.ask(confirmation(alice.personal_id, 2025, detail=("79001", hiv["visit_code"])))
    assert detail.visits[0].diagnosis_codes == ["B20.1", "J06.9"]
    assert detail.visits[0].diagnosis_names == hiv["discharge_diagnosis"]


async def test_a_year_is_read_as_only_what_its_list_shows_when_judged_under_the_lists_in_force(clinics, db):
    from healthbook.config import Settings
    from healthbook.store import BookReader

    alice = new_citizen()
    plain = visit(person=alice, sequence=next_sequence(), admitted=datetime(2025, 3, 2, 9))
    hiv = visit(person=alice, sequence=next_sequence(), admitted=datetime(2025, 4, 2, 9), main_diagnosis_code="B20.1")
    await clinics.publish(plain, hiv)
    for event in (plain, hiv):
        await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the visits", process=clinics.worker)
    in_force = Settings().sensitive.fingerprint
    async with db.acquire() as conn:
        (judged,) = await BookReader().books_of(conn, [(alice.personal_id, 2025, False)], in_force)
        (other_lists,) = await BookReader().books_of(conn, [(alice.personal_id, 2025, False)], "other lists")
        (whole,) = await BookReader().books_of(conn, [(alice.personal_id, 2025, True)], in_force)
    assert [e.sensitivity.sensitive for e in judged] == [False, True]
    assert set(judged[0].record) <= set(LIST_FIELDS) and judged[0].record["reason"] == plain["reason"]
    assert set(judged[1].record) == set(SEALED_FIELDS), "a sealed visit's diagnosis is not even read"
    assert "medicines" in other_lists[0].record and "B20.1" in str(other_lists[1].record), "judged again: read whole"
    assert whole[1].record["main_diagnosis_code"] == "B20.1" and whole[1].signed.signed_message, "for a Bundle"
    assert [e.signed.signed_message for e in judged] == [None, None]

    # An insider holding the book's login marks the HIV visit not sensitive: what its list row shows is
    # still judged, and the row stays sealed.
    await db.execute("update health_book_visits set sealed = false where facility_code = '79001' and "
                     "visit_code = $1", hiv["visit_code"])
    async with db.acquire() as conn:
        (forged,) = await BookReader().books_of(conn, [(alice.personal_id, 2025, False)], in_force)
    assert forged[1].record["main_diagnosis_code"] == "B20.1", "read as a list row, as the flag says"
    listed = replies.year_served("r-1", 2025, forged, Settings().sensitive).visits
    assert [v.sealed for v in listed] == [False, True] and "B20" not in listed[1].model_dump_json()
