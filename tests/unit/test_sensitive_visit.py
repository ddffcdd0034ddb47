"""Sensitive is a property of the whole visit: a marker anywhere in it seals the visit in every list and analytics.

The property test places each marker (diagnosis codes, drug and service codes, words, sensitive tables) in
every field a visit can hold, and reads the list reply, the list Bundle and the analytics outlet as their
consumers would: none carries any text of that visit beyond its dates and facility.
"""

from __future__ import annotations

import contextlib
import copy
import unicodedata
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain import deidentify, replies, sensitive_visit
from domain.book_entry import BookEntry
from domain.fhir_bundle import book_bundle
from domain.sensitive_diagnoses import SensitiveDiagnoses
from domain.sensitive_visit import SensitivePolicy, Sensitivity, _kinds_in
from domain.sentences import SEALED_VISIT, facility_label
from schemas import fast_check
from schemas.visit import VisitEvent
from schemas.visit_record import Visit
from tests.factories import SENSITIVE, citizen, full_visit

# Every marker the deployment's defaults name, as it would be written in a text or a code field.
TEXT_MARKERS = ["B20", "B24.1", "Z21", "A15.0", "A19", "HIV", "hiv", "AIDS", "ARV", "lao phổi", "Bệnh lao",
                "kháng lao", "Tải lượng HIV", "CD4", "Xpert MTB/RIF", "Tenofovir", "Dolutegravir", "Isoniazid",
                "2RHZE/4RHE", "J05AR06", "40.RHZE", "24.0117.1714", "24.0263.1000"]
TABLES = ["XML6", "XML15"]


def _plain() -> dict[str, Any]:
    event = full_visit(citizen(21), 77, datetime(2026, 5, 4, 9, 30))
    # Fixed: a random UUID may hold a listed code's letters (b20, a15), and then no shortcut is tried.
    event["event_id"] = "7e3f0c42-9d8e-4c51-8f6a-3e2d9c7f4e01"
    event["sensitive"] = []
    event["certificates"] = [{"table": "XML11", "records": [{"MA_LK": event["visit_code"], "SO_SERI": "AB-0042",
                                                             "NGUYEN_NHAN_NGHI": "Viêm họng cấp",
                                                             "TU_NGAY": "20260504", "DEN_NGAY": "20260506"}]}]
    event["progress_notes"] = [{"line_no": 1, "clinical_course": "Sốt nhẹ, họng đỏ", "noted_at": "202605040945"}]
    event["record_summary"] = {"results_summary": "Bạch cầu tăng nhẹ", "treatment": "Hạ sốt"}
    event["extra"] = {"GHI_CHU_KHAC": "Không"}
    return VisitEvent.model_validate(event).model_dump(mode="json")


PLAIN = _plain()


def _text_fields(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every text a visit holds, the patient's identity and the visit's own keys and times aside."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not path and key in ("patient", "event_id", "visit_code", "facility_code", "admitted_at",
                                    "discharged_at", "inpatient_at"):
                continue
            yield from _text_fields(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _text_fields(item, (*path, index))
    elif isinstance(value, str):
        yield path


FIELDS = list(_text_fields(PLAIN))
# The texts the judgement never reads (the patient's identity, the visit's own id and code): the clean-JSON
# shortcut skips them too, and must still decide as the judgement does.
SKIPPED = [("event_id",), ("visit_code",), *(("patient", key) for key, value in PLAIN["patient"].items()
                                             if isinstance(value, str))]


def _placed(marker: str, path: tuple) -> dict[str, Any]:
    record = copy.deepcopy(PLAIN)
    holder = record
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = f"{holder[path[-1]]} {marker}"
    return record


def _with_table(table: str) -> dict[str, Any]:
    record = copy.deepcopy(PLAIN)
    record["sensitive"] = [{"table": table, "records": [{"MA_LK": record["visit_code"], "GHI_CHU": "x"}]}]
    return record


def _visit_texts(record: dict[str, Any]) -> set[str]:
    """The visit's own texts that must not reach a list: long enough to be its content, not a common word."""
    shown = {record["facility_code"], record["visit_code"], facility_label(record["facility_code"]),
             SEALED_VISIT.citizen()}
    texts = {text for path in _text_fields(record) if len(text := _at(record, path)) >= 4 and not text.isdigit()}
    return {t for t in texts if not any(t in s for s in shown)}


def _at(record: dict[str, Any], path: tuple) -> str:
    for step in path:
        record = record[step]
    return record  # type: ignore[return-value]


def _decoded(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the worker decodes it from Avro (money as Decimal with two places), for the fast path."""
    decoded = copy.deepcopy(record)
    for money in ("total_cost", "insurance_paid", "patient_paid"):
        with contextlib.suppress(InvalidOperation):  # a marker placed in the amount: no longer one
            decoded[money] = Decimal(decoded[money]).quantize(Decimal("0.01"))
    return decoded


def _surfaces(record: dict[str, Any]) -> dict[str, str]:
    """What the citizen's list, the list Bundle and analytics carry of a visit, as their readers get it.

    Each is read three ways: judged at query time; judged once on the way in, as the worker stores it (from
    the event, its tables included) and the query consumer and analytics outlet read it back; and stored
    under other sensitive lists, a judgement that must not be trusted.
    """
    book_record = {k: v for k, v in record.items() if k != "sensitive"}
    entry = BookEntry(book_record, None, bool(record.get("sensitive")), record.get("sensitive") or [])
    surfaces = {}
    for how, known in (("", None), (", judged on the way in", SENSITIVE.judge(record)),
                       (", judged under other lists", Sensitivity(False, "other lists"))):
        read = replace(entry, sensitivity=known)
        listed = replies.year_served("r-1", 2026, [read], SENSITIVE).model_dump(mode="json")
        bundle = book_bundle(record["patient"]["personal_id"], [read], sensitive=SENSITIVE)
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
        analytics = [] if deidentify.withheld(Visit(record), SENSITIVE, known) else [
            deidentify.deidentified(Visit(record), b"k" * 32)]
        surfaces |= {f"list reply{how}": orjson.dumps(listed).decode(),
                     f"list Bundle{how}": orjson.dumps(bundle).decode(),
                     f"analytics{how}": orjson.dumps(analytics, default=str).decode()}
    # As the worker takes a clean visit: the fast path's Visit, judged by its clean book JSON first.
    fast = fast_check.accepted(_decoded(record))
    if fast is not None:
        judged = SENSITIVE.judge(fast.record, clean_json=fast.clean_json)
        listed = replies.year_served("r-1", 2026, [replace(entry, sensitivity=judged)], SENSITIVE)
        analytics = [] if deidentify.withheld(fast, SENSITIVE) else [deidentify.deidentified(fast, b"k" * 32)]
        surfaces |= {"list reply, judged on the fast path": listed.model_dump_json(),
                     "analytics, judged on the fast path": orjson.dumps(analytics, default=str).decode()}
    return surfaces


def _assert_sealed(record: dict[str, Any], why: str) -> None:
    assert SENSITIVE.of_visit(record), why
    leaked = {name: sorted(t for t in _visit_texts(record) if t in text) for name, text in _surfaces(record).items()}
    assert not any(leaked.values()), f"{why}: {leaked}"


def test_a_visit_with_no_marker_is_shown_in_full_and_reaches_analytics():
    assert not SENSITIVE.of_visit(PLAIN), SENSITIVE.why(PLAIN)
    surfaces = _surfaces(PLAIN)
    assert surfaces["analytics, judged on the fast path"] != "[]", "the clean JSON shortcut passes a plain visit"
    assert PLAIN["discharge_diagnosis"] in surfaces["list reply"] and "Paracetamol" in surfaces["list Bundle"]
    assert "Paracetamol" not in surfaces["list reply"], "a list row is a history row: medicines are in the detail"
    assert surfaces["analytics"] != "[]"


@pytest.mark.parametrize("marker", TEXT_MARKERS)
def test_each_marker_in_every_field_seals_the_visit_everywhere_a_list_is_read(marker):
    for path in FIELDS:
        _assert_sealed(_placed(marker, path), f"{marker!r} in {'.'.join(map(str, path))}")


@pytest.mark.parametrize("table", TABLES)
def test_a_sensitive_table_alone_seals_the_visit(table):
    _assert_sealed(_with_table(table), table)


@settings(max_examples=200, deadline=None)
@given(marker=st.sampled_from(TEXT_MARKERS), where=st.sampled_from(FIELDS),
       case=st.sampled_from([str.upper, str.lower, lambda s: s]), padding=st.sampled_from(["", " ", ";", "\n"]))
def test_any_marker_in_any_field_in_any_case_seals_the_visit(marker, where, case, padding):
    _assert_sealed(_placed(f"{padding}{case(marker)}{padding}", where), f"{marker!r} in {where}")


def test_the_sealed_entry_has_only_dates_facility_and_the_neutral_sentence():
    record = _placed("B20", ("main_diagnosis_code",))
    record["main_diagnosis_code"] = "B20"
    (entry,) = replies.year_served("r-1", 2026, [BookEntry(record)], SENSITIVE).visits
    assert entry.sealed and entry.diagnosis_codes == [] and entry.diagnosis_names == SEALED_VISIT.citizen()
    assert (entry.facility_code, entry.admitted_at) == (record["facility_code"], record["admitted_at"])
    assert not entry.medicines and not entry.results and not entry.services and entry.signed is None
    detail = replies.detail_served("r-2", 2026, BookEntry(record)).visits[0]
    assert not detail.sealed and detail.diagnosis_codes[0] == "B20" and detail.medicines, "the detail stays whole"


def test_a_list_bundle_names_no_patient_code_of_a_sealed_visit():
    record = _placed("HIV", ("reason",))
    bundle = book_bundle(record["patient"]["personal_id"], [BookEntry(record)], sensitive=SENSITIVE)
    (patient,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert not [i for i in patient["identifier"] if "/ma-bn/" in i["system"]]
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient", "Organization", "Encounter"}


@pytest.mark.parametrize(("text", "sensitive"), [
    ("Khám sức khỏe lao động", False), ("Lào Cai", False), ("Rhesus dương tính", False), ("HIVE", False),
    ("A150123", False), ("B2", False), ("Nhiễm HIV giai đoạn 3", True), ("lao phổi AFB(+)", True),
    (unicodedata.normalize("NFD", "Lao phổi"), True),  # combining marks, as some clinics' XML spells it
    ("\nB20\n", True), ("\x01B20", True), ('"B20"', True), ("\\B20", True),  # found by hypothesis: JSON escapes
])
def test_words_and_codes_match_whole_not_inside_other_words(text, sensitive):
    record = _placed(text, ("reason",))
    assert SENSITIVE.of_visit(record) is sensitive, SENSITIVE.why(record)


def test_a_wide_configured_range_is_still_found_in_any_text():
    wide = SensitivePolicy(SensitiveDiagnoses.parse("F00-F99"), (), (), ("tâm thần",))
    assert wide.of_visit(_placed("F32.1", ("record_summary", "treatment"))), "found by the regex alone"
    assert not wide.of_visit(PLAIN)


def test_a_stored_judgement_is_used_only_under_the_lists_it_was_made_under():
    hiv = _placed("HIV", ("reason",))
    assert SENSITIVE.judge(hiv) == Sensitivity(True, SENSITIVE.fingerprint)
    other_lists = SensitivePolicy(SENSITIVE.diagnoses, SENSITIVE.medicine_codes, SENSITIVE.service_codes,
                                  (*SENSITIVE.words, "tâm thần"))
    assert other_lists.fingerprint != SENSITIVE.fingerprint
    assert SensitivePolicy(SENSITIVE.diagnoses, SENSITIVE.medicine_codes, SENSITIVE.service_codes,
                           SENSITIVE.words).fingerprint == SENSITIVE.fingerprint, "the same lists, the same print"
    # judged not sensitive under other lists: judged again here, and sealed
    assert BookEntry(hiv, sensitivity=other_lists.judge(PLAIN)).sealed_in_a_list(SENSITIVE)
    # judged under these very lists, the stored judgement is what the list shows
    assert BookEntry(PLAIN, sensitivity=Sensitivity(True, SENSITIVE.fingerprint)).sealed_in_a_list(SENSITIVE)
    assert not BookEntry(PLAIN, sensitivity=SENSITIVE.judge(PLAIN)).sealed_in_a_list(SENSITIVE)


@pytest.mark.parametrize("marker", ["B20", "HIV", "lao phổi"])
def test_a_stored_not_sensitive_edited_in_the_database_does_not_unseal_what_the_list_shows(marker):
    # An insider holding the book's login sets sealed = false under the lists in force.
    record = _placed(marker, ("reason",))
    forged = BookEntry(record, sensitivity=Sensitivity(False, SENSITIVE.fingerprint))
    listed = replies.year_served("r-1", 2026, [forged], SENSITIVE).visits
    assert [v.sealed for v in listed] == [True] and marker not in listed[0].model_dump_json()


@pytest.mark.parametrize("setting", [f.name for f in fields(SensitivePolicy)])
def test_every_setting_of_the_policy_is_in_its_fingerprint(setting):
    # A setting left out of the fingerprint would let a judgement made without it be trusted after it changed.
    changed = {"diagnoses": SensitiveDiagnoses.parse("F20-F29"), "medicine_codes": ("N05A",),
               "service_codes": ("99.0001",), "words": ("tâm thần",), "tables": ("XML6",)}
    assert set(changed) == {f.name for f in fields(SensitivePolicy)}, "a new setting: give it a changed value here"
    assert replace(SENSITIVE, **{setting: changed[setting]}).fingerprint != SENSITIVE.fingerprint


_PARTS = [part.lower() for part in (*SENSITIVE.medicine_codes, *SENSITIVE.service_codes, *SENSITIVE.words,
                                    "a15", "b20", "z21")]


@given(text=st.lists(st.one_of(st.sampled_from(_PARTS), st.sampled_from(["", " ", "_", "ổ", "lao", "b2", "hi"]),
                               st.text(max_size=6)), max_size=8).map("".join))
@settings(max_examples=3_000, deadline=None)
def test_the_bytes_prefilter_finds_a_listed_part_exactly_when_the_automaton_does(text):
    """RE2's one question over the UTF-8 bytes (any part at all?) never differs from the Aho-Corasick pass."""
    lower = text.lower()
    anywhere = SENSITIVE._any_part.search(lower.encode("utf-8", "surrogatepass")) is not None
    assert anywhere == bool(_kinds_in(SENSITIVE._parts, lower))


def test_a_plain_visit_is_passed_by_its_clean_book_json_alone():
    record = _decoded(PLAIN) | {"discharge_paper": None}
    fast = fast_check.accepted(record)
    assert fast is not None and SENSITIVE.passes_clean_json(fast.clean_json)
    assert not SENSITIVE.passes_clean_json(fast_check.accepted(_decoded(PLAIN)).clean_json), "archive_no: 'hiv'"


_CASES = [str.upper, str.lower, str.title, str.swapcase, lambda s: s,
          lambda s: s.replace("k", "\u212a").replace("K", "\u212a"),  # KELVIN SIGN, which lowers to k
          lambda s: s.replace("i", "\u0130").replace("I", "\u0130")]  # İ, which lowers to i and a dot


@settings(max_examples=1_500, deadline=None)
@given(marker=st.sampled_from([*TEXT_MARKERS, *_PARTS]), where=st.sampled_from([*FIELDS, *SKIPPED, "a key of extra"]),
       case=st.sampled_from(_CASES), joint=st.sampled_from([" ", "_", "\n", "\t", "\r", '"', "\\", "  "]),
       before=st.text(max_size=3), after=st.text(max_size=3))
def test_judging_by_the_clean_book_json_first_decides_every_visit_as_the_full_judgement(
        marker, where, case, joint, before, after):
    """The shortcut may only pass what the judgement passes: any marker, in any field or key, case or spacing."""
    text = f"{before}{case(marker).replace(' ', joint)}{after}"
    if where == "a key of extra":
        record = copy.deepcopy(PLAIN)
        record["extra"] = {**record["extra"], text: "x"}
    else:
        record = _placed(text, where)
    record["discharge_paper"] = None  # its key archive_no holds 'hiv': with it, no visit takes the shortcut
    fast = fast_check.accepted(_decoded(record))
    assume(fast is not None)  # else the full model takes it, with no shortcut: a broken rule, a control character
    assert SENSITIVE.of_visit(fast.record, clean_json=fast.clean_json) == SENSITIVE.of_visit(fast.record), text


def test_the_shortcut_skips_the_patient_block_and_the_event_id_but_no_clinical_field():
    assert sensitive_visit._CLINICAL_START == b',"visit_type":'
    record = copy.deepcopy(PLAIN) | {"discharge_paper": None, "event_id": "5b20c0de-b200-4a15-9b20-0000000000b2"}
    record["patient"]["full_name"] = "HIV Lao Phổi"
    fast = fast_check.accepted(_decoded(record))
    assert fast is not None and SENSITIVE.passes_clean_json(fast.clean_json)
    assert not SENSITIVE.of_visit(fast.record)
    fast = fast_check.accepted(_decoded(_placed("HIV", ("reason",)) | {"discharge_paper": None}))
    assert fast is not None and not SENSITIVE.passes_clean_json(fast.clean_json)


@pytest.mark.parametrize(("skipped", "start"), [
    ({"type": "record", "name": "P", "fields": [{"name": "name", "type": "string"}]}, b',"reason":'),
    ({"type": "record", "name": "P", "fields": [{"name": "reason", "type": "string"}]}, None),
    ({"type": "map", "values": "string"}, None),
    ("Patient", None),
    (["null", {"type": "array", "items": {"type": "record", "name": "Q", "fields": [{"name": "reason",
                                                                                  "type": "int"}]}}], None),
])
def test_the_clinical_start_is_a_key_no_skipped_field_can_hold(skipped, start):
    schema = {"fields": [{"name": "event_id", "type": "string"}, {"name": "patient", "type": skipped},
                         {"name": "reason", "type": "string"}]}
    assert sensitive_visit._clinical_start(schema) == start
    assert sensitive_visit._clinical_start({"fields": [{"name": "reason", "type": "string"}]}) is None


@pytest.mark.parametrize("word", ['a"b', "{b", "b}", "a\\z", "i\u0307", "sensitive", "itive", "[]"])
def test_a_listed_word_the_clean_json_could_miss_is_judged_in_full(word):
    """A word that could lie across fields in the JSON, or in the sensitive tables' empty place, turns it off."""
    policy = SensitivePolicy(SENSITIVE.diagnoses, (), (), (word,))
    assert policy._in_clean_json is None
    for record in (_decoded(PLAIN), _decoded(_placed(word, ("reason",)))):
        fast = fast_check.accepted(record)
        # a combining mark (the dot above) sends its visit past the fast rules, to the model, with no shortcut
        assert fast is not None or "\u0307" in word
        if fast is not None:
            assert policy.of_visit(record, clean_json=fast.clean_json) == policy.of_visit(record), word


def test_the_one_character_lowered_into_two_is_the_only_one_the_clean_json_shortcut_guards_against():
    """Held to this Python's Unicode tables: a new character lowered into several must be guarded too."""
    followers = {low[i] for c in map(chr, range(0x110000)) if len(low := c.lower()) > 1 for i in range(1, len(low))}
    assert followers == set(sensitive_visit._SPLIT_BY_LOWERING)
