"""The worker's batch step against a fake store and outlets: gaps, refused rows, isolation, redo, card-only visits."""

from __future__ import annotations

from datetime import datetime

import pytest

from domain.batch import Delivery
from domain.identity import IdentityDirectory
from domain.keyring import ClinicKey, Keyring
from healthbook.config import Settings
from schemas import catalogue, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import Signer, now_millis, seal_visit
from schemas.keys import partition_key
from schemas.outcomes import Outcome, rejected
from streams.batch_step import BatchStep, Checks, GapUnfilled
from tests.factories import citizen, visit, with_patient
from tests.fakes import FakeBatchStore, FakeOutlets

SIGNER = Signer.generate("k1")
TOPIC = "visits"


def _keyring() -> Keyring:
    keyring = Keyring(None)
    keyring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))
    return keyring


def _events(n: int, seed: int = 11) -> list[dict]:
    return [visit(person=citizen(seed + i), sequence=seed * 100 + i, admitted=datetime(2026, 3, 1 + i % 27, 9))
            for i in range(n)]


def _delivered(events: list[dict], first_offset: int = 0, partition: int = 0) -> list[Delivery]:
    return [Delivery(TOPIC, partition, first_offset + i, now_millis(),
                     partition_key(e["patient"]["personal_id"], e["patient"]["insurance_card_numbers"]).encode(),
                     seal_visit(e, "79001", SIGNER)) for i, e in enumerate(events)]


class Topic:
    """The visits topic as read back by offset, counting each read."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.by_offset = {(d.partition, d.offset): d for d in deliveries}
        self.reads: list[tuple[int, int, int]] = []

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Delivery]:
        self.reads.append((partition, start, end))
        return [self.by_offset[(partition, o)] for o in range(start, end) if (partition, o) in self.by_offset]


def _step(store: FakeBatchStore, outlets: FakeOutlets, topic: Topic | None = None,
          identity: IdentityDirectory | None = None, **options) -> BatchStep:
    checks = Checks(_keyring(), identity or IdentityDirectory(None), Settings().signing_window)
    return BatchStep(TOPIC, store, checks, {}, outlets, (topic or Topic([])).read_range, **options)


def _only(visit_code: str):
    return lambda row: row.visit_code == visit_code


async def test_a_plain_batch_is_written_with_its_offsets_and_counts_that_add_up():
    store, outlets = FakeBatchStore(), FakeOutlets()
    events = _events(5)
    result = await _step(store, outlets).run(_delivered(events))
    assert store.applied == {0: 5} and len(store.book) == 5 and len(outlets.analytics) == 5
    assert result.counts[Outcome.CONSUMED] == result.counts[Outcome.ACCEPTED] == 5
    again = await _step(store, outlets).run(_delivered(events))
    assert again.counts == {Outcome.REPLAYED: 5} and store.writes == 1, "applied offsets are never applied twice"


async def test_a_gap_at_the_start_of_a_batch_is_read_back_from_the_topic():
    store, outlets = FakeBatchStore(), FakeOutlets()
    everything = _delivered(_events(6))
    topic = Topic(everything)
    result = await _step(store, outlets, topic).run(everything[3:])
    assert topic.reads == [(0, 0, 6)]
    assert [d.offset for d in result.applied] == list(range(6)) and store.applied == {0: 6} and len(store.book) == 6


async def test_a_gap_inside_a_batch_is_read_back_and_a_gap_that_cannot_be_read_holds_the_batch():
    store, outlets = FakeBatchStore(), FakeOutlets()
    everything = _delivered(_events(4))
    delivered = [everything[0], everything[1], everything[3]]
    result = await _step(store, outlets, Topic(everything)).run(delivered)
    assert [d.offset for d in result.applied] == [0, 1, 2, 3] and store.applied == {0: 4}

    empty = FakeBatchStore()
    with pytest.raises(GapUnfilled):
        await _step(empty, FakeOutlets(), Topic([])).run(delivered)
    assert empty.applied == {} and empty.book == {}, "nothing of a batch with a hole is applied"


async def test_a_row_postgresql_refuses_is_dead_lettered_and_forgotten_and_the_rest_written():
    events = _events(6)
    bad = events[2]["visit_code"]
    store, outlets = FakeBatchStore(refuse=lambda row: "DataError" if row.visit_code == bad else None), FakeOutlets()
    versions: dict[str, dict[str, int]] = {}
    step = _step(store, outlets)
    step.versions = versions
    result = await step.run(_delivered(events))
    assert outlets.reasons() == [(2, DeadLetterReason.REFUSED_BY_DATABASE)]
    assert len(store.book) == 5 and ("79001", bad) not in store.book
    assert result.counts[rejected(DeadLetterReason.REFUSED_BY_DATABASE)] == 1 and result.counts[Outcome.ACCEPTED] == 5
    refused_person = events[2]["patient"]["personal_id"]
    assert f"79001/{bad}" not in versions.get(refused_person, {}), "the dedup table forgets a visit not in the book"
    assert len(outlets.analytics) == 6, "analytics went out before the write; downstream keeps each record once"


async def test_a_bug_on_one_message_is_isolated_by_halving_down_to_that_message():
    events = _events(8)
    culprit = events[5]["visit_code"]
    store = FakeBatchStore(fail_on=lambda row: ZeroDivisionError() if row.visit_code == culprit else None)
    outlets = FakeOutlets()
    result = await _step(store, outlets, isolate_at_once=True).run(_delivered(events))
    assert outlets.reasons() == [(5, DeadLetterReason.INTERNAL_ERROR)]
    assert len(store.book) == 7 and store.applied == {0: 8}
    assert result.counts[Outcome.CONSUMED] == 8 and result.counts[rejected(DeadLetterReason.INTERNAL_ERROR)] == 1


async def test_a_suspect_batch_is_redone_in_isolation_after_a_restart_and_then_forgotten():
    events = _events(4)
    culprit = events[1]["visit_code"]
    store = FakeBatchStore(fail_on=lambda row: ZeroDivisionError() if row.visit_code == culprit else None)
    deliveries = _delivered(events)
    first = _step(store, FakeOutlets())
    with pytest.raises(ZeroDivisionError):
        await first.run(deliveries)
    await first.record_suspect(deliveries, ZeroDivisionError())
    assert store.suspects == [(0, 0, 3)] and store.applied == {}

    outlets = FakeOutlets()
    restarted = _step(store, outlets, suspects=list(store.suspects))
    await restarted.run(deliveries)
    assert outlets.reasons() == [(1, DeadLetterReason.INTERNAL_ERROR)]
    assert store.applied == {0: 4} and store.suspects == [] and restarted.suspects == []


async def test_a_batch_another_worker_advanced_meanwhile_is_redone_from_the_new_offset():
    store, outlets = FakeBatchStore(moved_once={0}), FakeOutlets()
    result = await _step(store, outlets).run(_delivered(_events(3)))
    assert [d.offset for d in result.applied] == [1, 2] and store.applied == {0: 3}
    assert result.counts[Outcome.CONSUMED] == 2


def _map(directory: IdentityDirectory, card: str, person: str) -> None:
    record = {"card_number": card, "personal_id": person, "updated_at": now_millis(), "registry_certificate": None,
              "registry_signature": None}
    directory.apply(card.encode(), wire.encode(catalogue.IDENTITY_CARD, record))


async def test_card_only_visits_wait_join_their_citizen_or_are_dead_lettered_when_the_card_contradicts():
    child = citizen(41)
    born_a_year_later = child.personal_id[:4] + f"{(int(child.personal_id[4:6]) + 1) % 100:02d}" + child.personal_id[6:]
    waiting_card, known_card, wrong_card = "TE1000000000001", "TE1000000000002", "TE1000000000003"
    identity = IdentityDirectory(None)
    _map(identity, known_card, child.personal_id)
    _map(identity, wrong_card, born_a_year_later)  # the ID's birth year contradicts the record
    card_only = [with_patient(visit(person=child, sequence=9000 + i), personal_id=None, insurance_card_numbers=[c])
                 for i, c in enumerate((waiting_card, known_card, wrong_card))]
    store, outlets = FakeBatchStore(), FakeOutlets()
    waited: list[set[str]] = []
    step = _step(store, outlets, identity=identity)
    step.hooks.on_waiting = waited.append
    result = await step.run(_delivered(card_only))
    (kept,) = store.pending.values()
    assert kept.visit_code == card_only[0]["visit_code"] and waited == [{waiting_card}]
    (joined,) = store.book.values()
    assert (joined.visit_code, joined.personal_id) == (card_only[1]["visit_code"], child.personal_id)
    assert outlets.reasons() == [(2, DeadLetterReason.IDENTITY_MISMATCH)]
    assert result.counts[Outcome.PENDING] == 1 and result.counts[Outcome.ACCEPTED] == 1


async def test_a_table_behind_the_book_is_trusted_only_when_it_says_duplicate_and_is_healed_from_the_book():
    store, outlets = FakeBatchStore(), FakeOutlets()
    person = citizen(5)
    versions = [visit(person=person, sequence=9, version=v) for v in (1, 2, 3)]
    step = _step(store, outlets)
    await step.run(_delivered(versions))
    visit_key = f"79001/{versions[0]['visit_code']}"
    assert step.versions[person.personal_id] == {visit_key: 3}
    step.versions[person.personal_id] = {visit_key: 1}  # the changelog lost the table's last writes
    analytics_before = len(outlets.analytics)

    again = await step.run(_delivered([versions[1]], first_offset=3))

    assert again.counts[Outcome.DUPLICATE] == 1 and again.counts[Outcome.ACCEPTED] == 0
    assert len(outlets.analytics) == analytics_before, "an old version is not sent to analytics a second time"
    assert step.versions[person.personal_id] == {visit_key: 3}, "the table holds the book's version again"


async def test_an_entry_the_card_resolver_raised_while_a_batch_ran_is_kept_when_the_batch_remembers():
    outlets, person = FakeOutlets(), citizen(8)
    resolved = "79001/79001-2026-7777777"

    class ResolverMeanwhile(FakeBatchStore):
        async def write_batch(self, *args, **kwargs):
            step.versions[person.personal_id] = {resolved: 1}  # the resolver moved a waiting visit meanwhile
            return await super().write_batch(*args, **kwargs)

    step = _step(ResolverMeanwhile(), outlets)
    event = visit(person=person, sequence=81)
    await step.run(_delivered([event]))
    assert step.versions[person.personal_id] == {resolved: 1, f"79001/{event['visit_code']}": 1}


async def test_a_worker_that_was_away_replays_with_a_stale_table_and_keeps_every_visit_the_book_holds():
    # Found by the soak (seed 29209): a paused worker came back to partitions another worker had moved on;
    # replaying, it wrote its stale entry of a citizen over the changelog's newer one, and the table lost
    # visits the book holds.
    store, outlets, person = FakeBatchStore(), FakeOutlets(), citizen(9)
    a, b, c = (visit(person=person, sequence=91 + i, admitted=datetime(2026, 5, 1 + i, 9)) for i in range(3))
    deliveries = _delivered([a, b, c])
    zombie = _step(store, outlets)
    await zombie.run(deliveries[:1])
    owner = _step(store, outlets)
    owner.versions[person.personal_id] = dict(zombie.versions[person.personal_id])  # from the changelog
    await owner.run(deliveries[1:])  # the partition moved on while the zombie was paused

    again = await zombie.run(deliveries[1:2])  # its batch of b comes again, already applied by the owner

    assert again.counts == {Outcome.REPLAYED: 1}
    assert zombie.versions[person.personal_id] == owner.versions[person.personal_id] == {
        f"79001/{e['visit_code']}": 1 for e in (a, b, c)}, "the entry it writes back keeps c"


async def test_a_batch_checked_ahead_is_applied_as_one_checked_when_applied_and_a_gap_read_back_is_checked_then():
    events = _events(6)
    everything = _delivered(events)
    ahead_store, ahead_outlets, topic = FakeBatchStore(), FakeOutlets(), Topic(everything)
    step = _step(ahead_store, ahead_outlets, topic)
    prechecked = await step.precheck(everything[2:])
    assert set(prechecked) == {(0, offset) for offset in range(2, 6)}
    ahead = await step.run(everything[2:], prechecked)
    plain_store, plain_outlets = FakeBatchStore(), FakeOutlets()
    plain = await _step(plain_store, plain_outlets, Topic(everything)).run(everything[2:])
    assert ahead.counts == plain.counts and [d.offset for d in ahead.applied] == list(range(6))
    assert ahead_store.book == plain_store.book and len(ahead_outlets.analytics) == len(plain_outlets.analytics) == 6


async def test_a_verdict_checked_ahead_is_the_one_applied_not_worked_out_again():
    everything = _delivered(_events(3))
    store, outlets = FakeBatchStore(), FakeOutlets()
    step = _step(store, outlets)
    prechecked = await step.precheck(everything)
    garbage = Delivery(TOPIC, 0, 1, now_millis(), everything[1].key, b"not a visit")
    prechecked.update(await step.precheck([garbage]))  # as if offset 1 had held these bytes when checked
    result = await step.run(everything, prechecked)
    assert result.counts[Outcome.ACCEPTED] == 2 and len(store.book) == 2 and len(outlets.dead) == 1
