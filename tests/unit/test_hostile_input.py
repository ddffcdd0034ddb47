"""Each hole found by a hostile or unlucky sender, closed at its root: one test per hole, named for what it proves."""

import json
import unicodedata

import pytest

from domain.identity import IdentityDirectory, Mismatch, Resolved, resolve
from domain.keyring import ClinicKey, Keyring
from domain.rows import visit_row
from domain.validation import Accepted, Rejected, RejectionCode, validate
from schemas import catalogue, envelope, wire
from schemas.envelope import Signer
from schemas.errors import MalformedMessage
from schemas.visit import VisitEvent, read_visit
from tests.factories import citizen, visit, with_patient

SIGNER = Signer.generate("k1")
KEYRING = Keyring()
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
    assert isinstance(result, Rejected) and result.code is RejectionCode.INVALID_EVENT
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
    assert result.event.discharge_diagnosis == nfc and result.event.patient.full_name == "Nguyễn Thị Lan"
    record = json.loads(visit_row(result, 0, 0).record)
    assert record["discharge_diagnosis"] == nfc


def test_a_card_mapped_to_a_personal_id_contradicting_birth_year_or_sex_is_a_mismatch_without_personal_data():
    child = citizen(11)
    other = citizen(12, province="001")
    event = VisitEvent.model_validate(with_patient(visit(person=child), personal_id=None,
                                                   insurance_card_numbers=["TE1000000000001"]))
    directory = IdentityDirectory()
    directory.apply(b"TE1000000000001", wire.encode(catalogue.IDENTITY_CARD, {
        "card_number": "TE1000000000001", "personal_id": _contradicting(other.personal_id, event), "updated_at": 0}))
    whose = resolve(event, directory)
    assert isinstance(whose, Mismatch)
    assert "personal_id_" in whose.reason and not any(ch.isdigit() for ch in whose.reason.split("[")[0])
    directory.apply(b"TE1000000000001", wire.encode(catalogue.IDENTITY_CARD, {
        "card_number": "TE1000000000001", "personal_id": child.personal_id, "updated_at": 0}))
    assert isinstance(resolve(event, directory), Resolved)


def _contradicting(personal_id: str, event: VisitEvent) -> str:
    """A well-formed personal ID whose birth-year digits differ from the visit's patient."""
    year = int(event.patient.birth_date[2:4])
    return personal_id[:4] + f"{(year + 7) % 100:02d}" + personal_id[6:]


def _corpus(target: str) -> str:
    from pathlib import Path
    cases = json.loads((Path(__file__).parents[1] / "fuzz" / "regressions.json").read_text())["cases"]
    return next(c["value"] for c in cases if c["target"] == target)
