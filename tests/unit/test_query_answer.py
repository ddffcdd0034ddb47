"""The query consumer's answer against a fake store: one decision performed, one access logged, the right reply."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import orjson
import pytest

from commands.identity_standin import confirmation
from consumers.query import QueryPolicy, answer, answer_each_safely, answer_safely
from domain.book_entry import BookEntry
from domain.replies import Reply
from healthbook.config import Settings
from schemas.envelope import Signer, seal_request
from schemas.outcomes import AccessOutcome
from schemas.refusal_codes import RefusalCode, ReplyStatus
from schemas.visit import read_visit
from schemas.visit_record import Visit
from tests.factories import citizen, visit
from tests.fakes import FakeQueryStore

PLATFORM = Signer.generate("vneid-1")
SETTINGS = Settings()
POLICY = QueryPolicy(SETTINGS.request_policy({PLATFORM.key_id: PLATFORM.public_key}), SETTINGS.sensitive, 1_000_000)
ALICE, BOB = citizen(3), citizen(5)


def _entry(year: int, sequence: int, **changes) -> BookEntry:
    event = visit(person=ALICE, sequence=sequence, admitted=datetime(year, 3, 15, 8, 30), **changes)
    return BookEntry(orjson.loads(Visit.of_model(read_visit(event)).book_json()))  # type: ignore[arg-type]


def _store() -> FakeQueryStore:
    return FakeQueryStore(book={ALICE.personal_id: [_entry(2025, 1), _entry(2025, 2), _entry(2026, 3)]})


def _ask(**changes) -> bytes:
    year = changes.pop("year", 2025)
    return seal_request(confirmation(ALICE.personal_id, year, **changes), PLATFORM)


async def _answered(store: FakeQueryStore, raw: bytes, source=(0, 1), policy=POLICY) -> Reply:
    answered = await answer(store, raw, policy, source)
    assert Reply.decode(answered.encoded) == answered.reply, "the bytes sent are the reply built"
    return answered.reply


def _visit_of(store: FakeQueryStore, year: int) -> tuple[str, str]:
    entry = next(e for e in store.book[ALICE.personal_id] if e.record["admitted_at"].startswith(str(year)))
    return entry.record["facility_code"], entry.record["visit_code"]


@pytest.mark.parametrize(("ask", "status", "code", "outcome", "visits"), [
    (lambda s: _ask(), ReplyStatus.OK, None, AccessOutcome.SERVED, 2),
    (lambda s: _ask(every_year=True), ReplyStatus.OK, None, AccessOutcome.SERVED, 3),
    (lambda s: _ask(year=2024), ReplyStatus.OK, None, AccessOutcome.SERVED, 0),
    (lambda s: _ask(detail=_visit_of(s, 2026)), ReplyStatus.OK, None, AccessOutcome.SERVED_DETAIL, 1),
    (lambda s: _ask(answer_format="fhir", every_year=True), ReplyStatus.OK, None, AccessOutcome.SERVED, 3),
    (lambda s: _ask(detail=("79001", "no-such-visit")), ReplyStatus.REFUSED, RefusalCode.NOT_FOUND,
     AccessOutcome.REFUSED, 0),
    (lambda s: _ask(identity_level=1), ReplyStatus.REFUSED, RefusalCode.IDENTITY_LEVEL, AccessOutcome.REFUSED, 0),
    (lambda s: _ask(consent_confirmed=False), ReplyStatus.REFUSED, RefusalCode.NO_CONSENT, AccessOutcome.REFUSED, 0),
    (lambda s: seal_request(confirmation(ALICE.personal_id, 2025), Signer.generate("vneid-1")), ReplyStatus.REFUSED,
     RefusalCode.BAD_SIGNATURE, AccessOutcome.REFUSED, 0),
    (lambda s: b"\x00\x00\x00\x00\x0fnot avro", ReplyStatus.REFUSED, RefusalCode.MALFORMED, AccessOutcome.REFUSED, 0),
    (lambda s: _ask(answer_format="pdf"), ReplyStatus.REFUSED, RefusalCode.MALFORMED, AccessOutcome.REFUSED, 0),
])
async def test_each_decision_is_performed_and_its_access_logged_exactly_once(ask, status, code, outcome, visits):
    store = _store()
    reply = await _answered(store, ask(store))
    assert (reply.status, reply.refusal_code) == (status, code)
    (logged,) = store.access
    assert (logged.outcome, logged.refusal_code, logged.visits) == (outcome, code, visits)
    servable = code in (None, RefusalCode.NOT_FOUND)  # decided servable; the book then had no such visit
    assert len(store.consents) == (1 if servable else 0), "consent is recorded only for a request it may serve"
    shown = len(orjson.loads(reply.fhir_bundle)["entry"]) > 0 if reply.fhir_bundle else len(reply.visits)
    assert bool(shown) == bool(visits)


async def test_a_request_served_again_from_another_record_is_refused_as_replayed_and_logged_once_more():
    store = _store()
    raw = _ask()
    first, again, elsewhere = [await _answered(store, raw, source) for source in ((0, 5), (0, 5), (1, 9))]
    assert [r.refusal_code for r in (first, again, elsewhere)] == [None, None, RefusalCode.REPLAYED_REQUEST]
    assert [a.outcome for a in store.access] == [AccessOutcome.SERVED, AccessOutcome.SERVED, AccessOutcome.REFUSED]


async def test_a_malformed_request_whose_id_can_be_read_is_answered_with_that_id_and_stores_no_personal_id():
    request = dict(confirmation(ALICE.personal_id, 2025), personal_id="0791860012")
    store = _store()
    reply = await _answered(store, seal_request(request, PLATFORM))
    assert (reply.request_id, reply.year, reply.refusal_code) == (request["request_id"], 2025, RefusalCode.MALFORMED)
    assert store.access[0].request_id == request["request_id"] and store.access[0].personal_id is None


async def test_every_years_list_does_not_claim_one_year():
    reply = await _answered(_store(), _ask(every_year=True))
    assert "2025" not in reply.message and len(reply.visits) == 3


async def test_a_reply_too_large_to_send_is_refused_as_too_large_and_logged_so():
    store = _store()
    small = QueryPolicy(POLICY.requests, POLICY.sensitive, 300)
    reply = await _answered(store, _ask(every_year=True), policy=small)
    assert reply.refusal_code == RefusalCode.TOO_LARGE
    (logged,) = store.access
    assert (logged.outcome, logged.refusal_code) == (AccessOutcome.REFUSED, RefusalCode.TOO_LARGE)


async def test_a_request_the_service_fails_on_is_answered_internal_error_with_its_id():
    store = _store()
    store.fail_reads_with = ZeroDivisionError()
    raw = _ask()
    message = SimpleNamespace(topic="integration.requests", partition=0, offset=3, value=raw)
    answered = await answer_safely(store, message, POLICY)
    assert answered.reply.refusal_code == RefusalCode.INTERNAL_ERROR and answered.reply.request_id
    assert store.claims == {} and store.consents == [], "nothing of the failed transaction is kept"
    (logged,) = store.access
    assert (logged.request_id, logged.outcome, logged.refusal_code) == (
        answered.reply.request_id, AccessOutcome.REFUSED, RefusalCode.INTERNAL_ERROR)


def _messages(raws: list[bytes]) -> list[SimpleNamespace]:
    return [SimpleNamespace(topic="integration.requests", partition=0, offset=n, value=raw)
            for n, raw in enumerate(raws)]


async def test_a_batch_is_answered_in_order_with_each_decision_logged_once_and_a_repeat_in_it_refused():
    store = _store()
    repeated = _ask()
    batch = [repeated, _ask(year=2026), _ask(identity_level=1), repeated, _ask(detail=_visit_of(store, 2026))]
    answers = await answer_each_safely(store, _messages(batch), POLICY)
    assert [(a.reply.status, a.reply.refusal_code, len(a.reply.visits)) for a in answers] == [
        (ReplyStatus.OK, None, 2), (ReplyStatus.OK, None, 1), (ReplyStatus.REFUSED, RefusalCode.IDENTITY_LEVEL, 0),
        (ReplyStatus.REFUSED, RefusalCode.REPLAYED_REQUEST, 0), (ReplyStatus.OK, None, 1)]
    assert [a.request_id for a in store.access] == [a.reply.request_id for a in answers]
    assert len(store.consents) == 3, "a consent for each request served, none for the refused or the repeat"
    assert all(Reply.decode(a.encoded) == a.reply for a in answers)


async def test_one_request_the_service_fails_on_fails_alone_and_the_rest_of_its_batch_is_served():
    store = _store()
    store.book[BOB.personal_id] = []
    store.fail_reads_with, store.fail_reads_of = ZeroDivisionError(), BOB.personal_id
    batch = [_ask(), seal_request(confirmation(BOB.personal_id, 2025), PLATFORM), _ask(year=2026)]
    answers = await answer_each_safely(store, _messages(batch), POLICY)
    assert [a.reply.refusal_code for a in answers] == [None, RefusalCode.INTERNAL_ERROR, None]
    assert [len(a.reply.visits) for a in answers] == [2, 0, 1]
    assert [(a.outcome, a.refusal_code) for a in store.access] == [
        (AccessOutcome.SERVED, None), (AccessOutcome.REFUSED, RefusalCode.INTERNAL_ERROR), (AccessOutcome.SERVED, None)]
