"""Identity resolution: which citizen a visit belongs to when the record has only a BHYT card, or disagrees with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.registry_revisions import AppliedRevisions
from domain.registry_trust import INSURANCE_REGISTRY, TrustAnchors, Untrusted
from domain.validation import Rejected
from schemas import catalogue, rules, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import identity_card_signing_input, to_millis
from schemas.registry_reasons import IgnoredBecause
from schemas.visit import read_visit
from schemas.visit_record import Visit


class IdentityDirectory:
    """BHYT card number -> personal ID, applied from the compacted identity-cards topic.

    With trust anchors, only mappings signed by the insurance registry's certified key count;
    anything else raises Untrusted and changes nothing. A card only moves forward: a mapping
    updated before the one held is ignored (SUPERSEDED), one dated ahead of the clock beyond its
    tolerance is refused. Without anchors (None) records are taken as they are: for tests of other
    rules.
    """

    def __init__(self, trust: TrustAnchors | None) -> None:
        self.trust = trust
        self._by_card: dict[str, str] = {}
        self._updated: dict[str, int] = {}
        self.revisions = AppliedRevisions()  # kept by the worker across restarts

    def __len__(self) -> int:
        return len(self._by_card)

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one topic message; return the card it changed."""
        if value is None:
            if key is None:
                return None
            if self.trust is not None:
                raise Untrusted(IgnoredBecause.UNSIGNED_TOMBSTONE,
                                "a tombstone cannot be signed; the registry remaps a card instead")
            card = wire.text_key(key)
            self._by_card.pop(card, None)
            self._updated.pop(card, None)
            return card
        record = wire.decode(value, catalogue.IDENTITY_CARD)
        card, updated = record["card_number"], to_millis(record["updated_at"])
        if self.trust is not None:
            at = self.trust.record_time(updated, f"the mapping of card {card}")
            self.trust.signed_by(record.get("registry_certificate"), INSURANCE_REGISTRY,
                                 record.get("registry_signature"), identity_card_signing_input(record), at=at)
            if key is None or wire.text_key(key) != card:
                raise Untrusted(IgnoredBecause.WRONG_RECORD_KEY, "the record's topic key is not its card number")
        held = max(self._updated.get(card, -1), self.revisions.floor.get(card, -1))
        if held >= 0 and updated < held:
            raise Untrusted(IgnoredBecause.SUPERSEDED, (
                f"the mapping of card {card} was updated at {updated} ms, before the one held ({held} ms): "
                "an old mapping written again changes nothing"))
        self._by_card[card], self._updated[card] = record["personal_id"], updated
        self.revisions.applied(card, updated)
        return card

    def person_of(self, card_number: str) -> str | None:
        """The personal ID a card belongs to, if known."""
        return self._by_card.get(card_number)


@dataclass(frozen=True)
class Resolved:
    """The visit with a personal ID (its own, or the one its card maps to)."""

    event: Visit
    from_card: bool


@dataclass(frozen=True)
class WaitingForCard:
    """The visit has no personal ID and its card is not mapped yet: keep it, neither lost nor guessed."""

    card_number: str


@dataclass(frozen=True)
class Mismatch:
    """The record's personal ID and its card's mapping name different people."""

    reason: str

    def rejected(self, facility_code: str | None, event_id: str | None) -> Rejected:
        """The dead letter's verdict for the visit this mismatch concerns."""
        return Rejected(DeadLetterReason.IDENTITY_MISMATCH, self.reason, [], facility_code, event_id)


def resolve(event: Visit, directory: IdentityDirectory) -> Resolved | WaitingForCard | Mismatch:
    """Decide whose visit this is."""
    mapped = {card: directory.person_of(card) for card in event.patient["insurance_card_numbers"]}
    known = {card: person for card, person in mapped.items() if person}
    if event.personal_id is not None:
        others = {card for card, person in known.items() if person != event.personal_id}
        if others:
            return Mismatch(
                f"BHYT card {', '.join(sorted(others))} belongs to another citizen than the record's SO_CCCD; "
                "the clinic must correct the card or the personal ID"
            )
        return Resolved(event, from_card=False)
    people = set(known.values())
    if len(people) > 1:
        return Mismatch("the record's BHYT cards belong to different citizens")
    if not people:
        return WaitingForCard(event.card_number)
    (person,) = people
    contradiction = _contradicts(person, event.patient["birth_date"], event.patient["sex"])
    return contradiction or Resolved(event.with_person(person), from_card=True)


def _contradicts(person: str, birth_date: str, sex: int) -> Mismatch | None:
    """Why a card's citizen cannot be the record's patient (the ID's birth century or sex), or None."""
    try:
        rules.check_personal_id(person, int(birth_date[:4]), sex)
    except rules.RuleBroken as broken:
        return Mismatch(f"the BHYT card is mapped to a personal ID that contradicts the record's birth date or sex "
                        f"[{broken.rule}]; the insurance registry must correct the mapping or the clinic the record")
    return None


def resolve_waiting(record: dict[str, Any], person: str) -> Visit | Mismatch:
    """A waiting visit's stored record once its card is mapped to person: the visit, or why it cannot be theirs."""
    patient = record["patient"]
    contradiction = _contradicts(person, patient["birth_date"], patient["sex"])
    if contradiction:
        return contradiction
    event = read_visit({**record, "patient": {**patient, "personal_id": person}})
    if isinstance(event, list):
        return Mismatch("the BHYT card's citizen contradicts the record: "
                        + "; ".join(problem.sentence() for problem in event))
    return Visit.of_model(event)
