"""Version 2 of the visit event reads version 1 data, by rule and on real bytes."""

import copy
import json
from decimal import Decimal

from domain.keyring import ClinicKey, Keyring
from domain.rows import visit_row
from domain.validation import Accepted, validate
from schemas import catalogue, envelope, wire
from schemas.compatibility import backward_problems
from schemas.envelope import Signer
from schemas.visit import VisitEvent
from tests.factories import visit


def schema(entry):
    return json.loads(entry.path.read_text())


def test_every_version_of_a_subject_reads_the_versions_before_it():
    by_subject = {}
    for entry in sorted(catalogue.BY_ID.values(), key=lambda e: e.schema_id):
        by_subject.setdefault(entry.subject, []).append(entry)
    checked = 0
    for versions in by_subject.values():
        for i, newer in enumerate(versions):
            for older in versions[:i]:
                assert backward_problems(schema(older), schema(newer)) == [], (older.path.name, newer.path.name)
                checked += 1
    assert checked >= 1


def test_the_rule_catches_a_field_added_without_default():
    newer = copy.deepcopy(schema(catalogue.VISIT_EVENT))
    newer["fields"].append({"name": "surprise", "type": "string"})
    newer["fields"][4]["type"]["fields"].append({"name": "nickname", "type": "string"})
    assert sorted(backward_problems(schema(catalogue.VISIT_EVENT_V1), newer)) == [
        "Patient.nickname was added without a default", "VisitEvent.surprise was added without a default"]


def test_a_version_1_message_decodes_validates_and_projects():
    record = visit()
    data = wire.encode(catalogue.VISIT_EVENT_V1, record)
    assert wire.schema_id_of(data) == 1
    decoded = wire.decode(data, catalogue.VISIT_EVENT)
    assert decoded["services"] == [] and decoded["referral"] is None and decoded["sensitive"] == []
    event = VisitEvent.model_validate(decoded)
    assert event.patient.personal_id == record["patient"]["personal_id"]
    assert event.total_cost == Decimal(record["total_cost"])
    assert [m.name for m in event.medicines] == [m["name"] for m in record["medicines"]]


def test_a_signed_version_1_envelope_is_accepted_by_the_worker_rules():
    signer = Signer.generate("k1")
    keyring = Keyring(None)
    keyring.put(ClinicKey("79001", "k1", signer.public_key, 0))
    record = visit()
    env = {"clinic_code": "79001", "key_id": "k1", "event_id": record["event_id"], "visit_version": 1,
           "signed_at": 1_000, "payload": wire.encode(catalogue.VISIT_EVENT_V1, record)}
    env["signature"] = signer.sign(envelope.visit_signing_input(env))
    result = validate(record["patient"]["personal_id"].encode(), wire.encode(catalogue.SIGNED_VISIT, env), keyring)
    assert isinstance(result, Accepted)
    assert visit_row(result, 0, 0).visit_code == record["visit_code"]
