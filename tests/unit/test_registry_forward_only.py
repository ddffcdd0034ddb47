"""Registries move forward only: an old signed record written again, or one dated ahead, changes nothing."""

from datetime import UTC, datetime, timedelta

import pytest

from commands.local_ca import LocalCA
from domain.identity import IdentityDirectory
from domain.keyring import Keyring
from domain.registry_trust import Untrusted
from schemas import catalogue, wire
from schemas.envelope import Signer, now_millis

CARD = "TE1790000000003"
CLINIC = Signer.generate("k1")
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA.open(tmp_path_factory.mktemp("pki"))


def _card(ca: LocalCA, person: str, updated_at: int) -> bytes:
    return wire.encode(catalogue.IDENTITY_CARD, ca.insurance_registry().identity_card(
        {"card_number": CARD, "personal_id": person, "updated_at": updated_at}))


def _reason(apply, key: bytes, value: bytes) -> str:
    with pytest.raises(Untrusted) as caught:
        apply(key, value)
    return caught.value.kind


def test_a_month_old_card_mapping_sent_again_does_not_move_the_card_back(ca):
    directory = IdentityDirectory(ca.trust_anchors())
    now = now_millis()
    month_old = _card(ca, "079186001234", now - 120_000)  # older, yet inside the fresh registry certificate's validity
    directory.apply(CARD.encode(), month_old)
    directory.apply(CARD.encode(), _card(ca, "001095007788", now))
    assert _reason(directory.apply, CARD.encode(), month_old) == "superseded"
    assert directory.person_of(CARD) == "001095007788"


def test_a_card_mapping_dated_ahead_of_the_clock_is_refused(ca):
    directory = IdentityDirectory(ca.trust_anchors())
    ahead = _card(ca, "001095007788", now_millis() + 3650 * DAY_MS)
    assert _reason(directory.apply, CARD.encode(), ahead) in ("dated_ahead",)
    assert directory.person_of(CARD) is None
    within = _card(ca, "001095007788", now_millis() + 60_000)
    directory.apply(CARD.encode(), within)
    assert directory.person_of(CARD) == "001095007788"


def test_an_old_key_record_sent_again_does_not_undo_a_renewal(ca):
    keyring = Keyring(ca.trust_anchors())
    old = ca.entry("79001", CLINIC, not_before=datetime.now(UTC) - timedelta(days=10), days=5)
    renewed = ca.entry("79001", CLINIC)
    first = ca.key_registry().clinic_key(dict(old.to_record(), issued_at=now_millis() - 60_000))
    second = ca.key_registry().clinic_key(renewed.to_record())
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, first))
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, second))
    assert _reason(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, first)) == "superseded"
    assert keyring.get("79001", "k1").certificate == renewed.certificate
    keyring.key_for("79001", "k1", now_millis())


def test_a_key_record_issued_ahead_of_the_clock_is_refused(ca):
    keyring = Keyring(ca.trust_anchors())
    ahead = ca.key_registry().clinic_key(dict(ca.entry("79001", CLINIC).to_record(),
                                              issued_at=now_millis() + 3650 * DAY_MS))
    assert _reason(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, ahead)) == "dated_ahead"
    assert keyring.get("79001", "k1") is None


def test_a_record_time_beyond_any_calendar_is_refused_not_raised(ca):
    trust = ca.trust_anchors()
    for millis in (2**62, -5):
        with pytest.raises(Untrusted) as caught:
            trust.record_time(millis, "the record")
        assert caught.value.kind == "dated_ahead"


def test_revisions_kept_from_before_make_an_old_record_left_alone_by_compaction_change_nothing(ca):
    """A reader starting after compaction kept only the re-sent old record still knows, from its marks, it is old."""
    now = now_millis()
    first = IdentityDirectory(ca.trust_anchors())
    first.apply(CARD.encode(), _card(ca, "079186001234", now - 120_000))
    first.apply(CARD.encode(), _card(ca, "001095007788", now))
    assert first.revisions.drain() == {CARD: now} and first.revisions.drain() == {}
    restarted = IdentityDirectory(ca.trust_anchors())
    restarted.revisions.hold({CARD: now})
    assert _reason(restarted.apply, CARD.encode(), _card(ca, "079186001234", now - 120_000)) == "superseded"
    assert restarted.person_of(CARD) is None, "unmapped (its visits wait) rather than the wrong citizen's"
    restarted.apply(CARD.encode(), _card(ca, "001095007788", now))
    assert restarted.person_of(CARD) == "001095007788"

    old = ca.key_registry().clinic_key(dict(ca.entry("79001", CLINIC).to_record(), issued_at=now - 60_000))
    keyring = Keyring(ca.trust_anchors())
    keyring.revisions.hold({"79001/k1": now})
    assert _reason(keyring.apply, b"79001/k1", wire.encode(catalogue.CLINIC_KEY, old)) == "superseded"
    assert keyring.get("79001", "k1") is None
    current = ca.key_registry().clinic_key(dict(ca.entry("79001", CLINIC).to_record(), issued_at=now))
    keyring.apply(b"79001/k1", wire.encode(catalogue.CLINIC_KEY, current))
    assert keyring.revisions.drain() == {"79001/k1": now}
