"""Each hole found by a hostile or unlucky sender, closed at its root: one test per hole, named for what it proves."""

import json
import unicodedata

import pytest

from domain.identity import IdentityDirectory, Mismatch, Resolved, resolve
from domain.keyring import ClinicKey, Keyring
from domain.rows import visit_row
from domain.validation import Accepted, Rejected, validate
from schemas import catalogue, envelope, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import Signer
from schemas.errors import MalformedMessage
from schemas.visit import VisitEvent, read_visit
from schemas.visit_record import Visit
from tests.factories import citizen, visit, with_patient

SIGNER = Signer.generate("k1")
KEYRING = Keyring(None)
KEYRING.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))


def signed(event) -> tuple[bytes, bytes]:
    return event["patient"]["personal_id"].encode(), envelope.seal_visit(event, "79001", SIGNER)


def test_an_out_of_range_avro_timestamp_is_a_malformed_message_not_a_crash():
    with pytest.raises(MalformedMessage, match="OverflowError"):
        wire.decode(bytes.fromhex(_corpus("integration_request")), catalogue.INTEGRATION_REQUEST)
    with pytest.raises(MalformedMessage, match="OverflowError"):
        wire.decode(bytes.fromhex(_corpus("visit_envelope")), catalogue.SIGNED_VISIT)
    assert isinstance(validate(b"079186001234", bytes.fromhex(_corpus("visit_envelope")), KEYRING), Rejected)


def test_a_signed_nul_character_in_any_text_field_is_a_named_rule_violation():
    event = with_patient(visit(discharge_diagnosis="Viêm họng\x00cấp"), full_name="Nguyễn\x00Lan")
    result = validate(*signed(event), KEYRING)
    assert isinstance(result, Rejected) and result.code is DeadLetterReason.INVALID_EVENT
    assert {(p.field, p.rule) for p in result.problems} == {
        ("discharge_diagnosis", "control_character"), ("patient.full_name", "control_character")}
    assert "U+0000" in result.reason


def test_tab_and_line_breaks_stay_allowed_in_free_text():
    assert isinstance(read_visit(visit(discharge_diagnosis="Viêm họng cấp;\n\ttheo dõi\r\n")), VisitEvent)


def test_text_sent_in_nfd_is_stored_and_sent_on_in_nfc():
    nfc = "Viêm họng cấp"
    event = with_patient(visit(discharge_diagnosis=unicodedata.normalize("NFD", nfc)),
                         full_name=unicodedata.normalize("NFD", "Nguyễn Thị Lan"))
    result = validate(*signed(event), KEYRING)
    assert isinstance(result, Accepted), result
    assert result.event.record["discharge_diagnosis"] == nfc and result.event.patient["full_name"] == "Nguyễn Thị Lan"
    record = json.loads(visit_row(result, 0, 0).record)
    assert record["discharge_diagnosis"] == nfc


def test_a_card_mapped_to_a_personal_id_contradicting_birth_year_or_sex_is_a_mismatch_without_personal_data():
    child = citizen(11)
    other = citizen(12, province="001")
    event = Visit.of_model(VisitEvent.model_validate(with_patient(visit(person=child), personal_id=None,
                                                                  insurance_card_numbers=["TE1000000000001"])))
    directory = IdentityDirectory(None)
    directory.apply(b"TE1000000000001", wire.encode(catalogue.IDENTITY_CARD, {
        "card_number": "TE1000000000001", "personal_id": _contradicting(other.personal_id, event), "updated_at": 0}))
    whose = resolve(event, directory)
    assert isinstance(whose, Mismatch)
    assert "personal_id_" in whose.reason and not any(ch.isdigit() for ch in whose.reason.split("[")[0])
    directory.apply(b"TE1000000000001", wire.encode(catalogue.IDENTITY_CARD, {
        "card_number": "TE1000000000001", "personal_id": child.personal_id, "updated_at": 0}))
    assert isinstance(resolve(event, directory), Resolved)


def test_a_waiting_visit_is_resolved_or_mismatched_by_the_same_decision_as_a_fresh_one():
    from domain.identity import resolve_waiting

    child = citizen(13)
    waiting = with_patient(visit(person=child), personal_id=None, insurance_card_numbers=["TE1000000000002"])
    stored = Visit.of_model(VisitEvent.model_validate(waiting)).record
    joined = resolve_waiting(stored, child.personal_id)
    assert isinstance(joined, Visit) and joined.personal_id == child.personal_id
    assert stored["patient"]["personal_id"] is None, "the stored record is not changed"
    contradicted = resolve_waiting(stored, _contradicting(child.personal_id, joined))
    assert isinstance(contradicted, Mismatch) and "[personal_id_" in contradicted.reason
    rejected = contradicted.rejected(stored["facility_code"], stored["event_id"])
    assert rejected.code is DeadLetterReason.IDENTITY_MISMATCH and rejected.reason == contradicted.reason


def _contradicting(personal_id: str, event: Visit) -> str:
    """A well-formed personal ID whose birth-year digits differ from the visit's patient."""
    year = int(event.patient["birth_date"][2:4])
    return personal_id[:4] + f"{(year + 7) % 100:02d}" + personal_id[6:]


def _corpus(target: str) -> str:
    from pathlib import Path
    cases = json.loads((Path(__file__).parents[1] / "fuzz" / "regressions.json").read_text())["cases"]
    return next(c["value"] for c in cases if c["target"] == target)


def test_lag_is_skipped_not_fatal_for_a_partition_revoked_by_a_rebalance():
    from collections import Counter

    from domain.batch import Delivery
    from streams.pipeline import VisitPipeline

    def highwater(partition: int) -> int:
        if partition == 1:
            raise AssertionError("Partition is not assigned")
        return 10

    pipeline = VisitPipeline.__new__(VisitPipeline)  # metrics only: no connections
    pipeline.highwater, pipeline.last_offsets, pipeline.last_batch_at = highwater, {1: 3}, None
    pipeline._observe([Delivery("visits", 0, 4, 0, b"k", b"v")], Counter(consumed=1), 0.01)
    assert pipeline.last_offsets == {1: 3, 0: 4}


def test_a_request_with_a_nul_in_its_personal_id_is_refused_before_anything_is_stored():
    from datetime import timedelta

    from domain.consent import Refuse, RequestPolicy, Serve, decide
    from schemas.envelope import now_millis, seal_request

    policy = RequestPolicy({"k1": SIGNER.public_key}, timedelta(minutes=5))
    request = {"request_id": "r-1", "personal_id": "0791860\x0001234", "year": 2026, "identity_level": 2,
               "consent_confirmed": True, "requested_at": 0, "detail": None}
    decision = decide(seal_request(request, SIGNER), policy)
    assert isinstance(decision, Refuse) and decision.refusal.code == "malformed"
    assert "personal_id" in decision.refusal.message and decision.requester.personal_id is None
    decision = decide(bytes.fromhex(_corpus("integration_request")), RequestPolicy({}, timedelta(minutes=5)))
    assert isinstance(decision, Refuse) and decision.refusal.code == "malformed"
    good = dict(request, personal_id="079186001234", requested_at=now_millis())
    decision = decide(seal_request(good, SIGNER), policy)
    assert isinstance(decision, Serve) and decision.personal_id == "079186001234"


def test_operator_tables_show_what_senders_wrote_and_never_read_it_as_markup():
    import io

    from rich.console import Console

    from commands import render
    from consumers.dead_letters import DeadLetterEntry

    record = {"failed_at": "2026-11-27 10:00:00", "reason_code": "unknown_key", "clinic_code": "[/x]",
              "source_topic": "visits", "source_partition": 0, "source_offset": 7,
              "reason": "clinic 79001 has no registered key '[link=https://example.invalid]click[/link]'"}
    out = io.StringIO()
    render.dead_letter_entries(Console(file=out, width=300, force_terminal=True), [DeadLetterEntry(0, 7, record)])
    shown = out.getvalue()
    assert "[/x]" in shown and "[link=https://example.invalid]click[/link]" in shown
    assert "\x1b]8;" not in shown, "no clickable link escape sequence"


def test_a_bug_met_in_validation_is_logged_without_the_data_it_failed_on(caplog):
    from domain.validation import validate_safely

    quoted = ["the record of", "079186001234,", "Nguyễn Thị Lan,", "broke it"]  # a message quoting personal data

    class ExplodingKeyring(Keyring):
        def key_for(self, clinic_code, key_id, signed_at_ms):
            raise ValueError(" ".join(quoted))

    result = validate_safely(*signed(visit()), ExplodingKeyring(None))
    assert isinstance(result, Rejected) and result.code is DeadLetterReason.INTERNAL_ERROR
    assert "ValueError" in caplog.text and "key_for" in caplog.text
    assert "079186001234" not in caplog.text and "Nguyễn" not in caplog.text


def test_operators_see_one_dead_letter_per_refused_message_though_the_topic_is_at_least_once():
    from consumers.dead_letters import DeadLetterEntry, first_per_source

    def letter(offset: int, source_offset: int) -> DeadLetterEntry:
        return DeadLetterEntry(0, offset, {"source_topic": "visits", "source_partition": 1,
                                           "source_offset": source_offset})

    kept = first_per_source([letter(0, 7), letter(1, 8), letter(2, 7)])  # 7 sent again after a restart
    assert [(e.offset, e.record["source_offset"]) for e in kept] == [(0, 7), (1, 8)]
