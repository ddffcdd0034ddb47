"""docs/contract.md cannot drift from the code: its vectors are recomputed, its lists compared with the catalogues."""

import json
import re

import pytest

from schemas import catalogue, envelope, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.refusal_codes import ANSWERED_BY_HEALTHBOOK, RefusalCode
from schemas.topics import readme_table
from tests.contract_vectors import CONTRACT, blocks, compute, hex_of

TEXT = CONTRACT.read_text(encoding="utf-8")
COMPUTED = compute(TEXT)


@pytest.mark.parametrize("name", sorted(COMPUTED))
def test_each_output_vector_is_what_the_code_produces(name):
    kind, body = blocks(TEXT)[name]
    assert kind == "hex"
    assert hex_of(body) == COMPUTED[name], f"{name} differs: run python -m tests.contract_vectors --write"


def test_the_vector_message_verifies_and_decodes_as_the_worker_reads_it():
    message = wire.decode(bytes.fromhex(COMPUTED["visit.message"]), catalogue.SIGNED_VISIT)
    public = bytes.fromhex(COMPUTED["key.public"])
    assert envelope.verify(public, message["signature"], envelope.visit_signing_input(message))
    event = wire.decode(message["payload"], catalogue.VISIT_EVENT)
    assert event["visit_code"] == json.loads(blocks(TEXT)["visit.event"][1])["visit_code"]
    assert bytes.fromhex(COMPUTED["visit.key"]).decode() == event["patient"]["personal_id"]


def test_the_detail_request_signs_the_two_detail_fields_after_their_presence_byte():
    year, detail = (bytes.fromhex(COMPUTED[f"{n}.signing_input"]) for n in ("request", "request_detail"))
    assert detail.startswith(envelope.REQUEST_CONTEXT) and year.startswith(envelope.REQUEST_CONTEXT)
    book = b"\x00\x00\x00\x04book" + b"\x00\x00\x00\x08" + bytes(8)
    assert detail.endswith(b"\x01" + b"\x00\x00\x00\x05" + b"79001" + b"\x00\x00\x00\x11" + b"79001-2026-000123" + book)
    assert year.endswith(b"vneid-1" + b"\x00" + book)


def test_every_schema_id_is_in_the_contract_with_its_subject_and_file():
    for entry in catalogue.BY_ID.values():
        assert f"| {entry.schema_id} | `{entry.subject}` | `{entry.path.name}` |" in TEXT, entry.schema_id


def test_every_dead_letter_reason_is_explained():
    for code in DeadLetterReason:
        assert re.search(rf"^\| `{code}` \| [^|\s]", TEXT, re.M), code


def test_every_refusal_code_is_explained_in_the_contract_and_those_healthbook_answers_in_the_schema():
    reply_doc = json.loads((catalogue.INTEGRATION_REPLY.path).read_text())
    refusal_doc = next(f["doc"] for f in reply_doc["fields"] if f["name"] == "refusal_code")
    for code in RefusalCode:
        assert re.search(rf"^\| `{code}` \| [^|\s]", TEXT, re.M), code
    for code in ANSWERED_BY_HEALTHBOOK:
        assert code in refusal_doc, f"{code} missing from {catalogue.INTEGRATION_REPLY.path.name}"


def test_the_contract_names_the_current_request_and_reply_schema_ids():
    for entry in (catalogue.INTEGRATION_REQUEST, catalogue.INTEGRATION_REPLY):
        assert f"`{entry.path.stem.split('_v')[0].title().replace('_', '')}` (id {entry.schema_id})" in TEXT


def test_the_contract_topic_table_is_the_topic_catalogue():
    assert readme_table(4) in TEXT


def test_the_contract_names_the_signing_contexts_the_code_uses():
    for context in (envelope.VISIT_CONTEXT, envelope.REQUEST_CONTEXT, envelope.CLINIC_KEY_CONTEXT,
                    envelope.IDENTITY_CARD_CONTEXT):
        assert f"`{context.decode()}`" in TEXT


def test_the_piece_by_piece_reading_of_the_visit_signing_input_is_that_input():
    section = TEXT[TEXT.index("Read piece by piece:"):TEXT.index("<!-- vector visit.signature -->")]
    pieces = re.findall(r"\| `([0-9a-f …]+)` \|", section)
    assert len(pieces) == 7
    joined = "".join(p.replace(" ", "") for p in pieces)
    assert joined.endswith("…")
    assert COMPUTED["visit.signing_input"].startswith(joined.removesuffix("…"))
