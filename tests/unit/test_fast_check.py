"""The fast path of the visit rules against the full pydantic model, over 100,000 generated visits.

Each case is a generated visit, enriched with every optional part, then left valid, pushed to the edge of a
rule, or broken in one or two rules (every rule of schemas.visit, wrong types, unknown and missing fields,
control characters, text not in NFC). The fast path may only accept what the model accepts, and must then
carry exactly the record the model would; every visit the model accepts as it is must take the fast path.
"""

from __future__ import annotations

import json
import pickle
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

from domain import deidentify
from domain.rows import VisitRow, visit_row
from domain.validation import Accepted
from schemas import catalogue, fast_check, wire
from schemas.visit import VisitEvent, read_visit
from schemas.visit_record import Visit
from synthetic.population import CLINICS, make_population
from tests.factories import SENSITIVE

CASES = 100_000
BASES = 4_000
Record = dict[str, Any]
Change = Callable[[Record, random.Random], None]


def _set(path: str, value: Any) -> Change:
    """A change that sets the field at a dotted path (an index for list items) to value."""
    *parents, last = path.split(".")

    def change(record: Record, rng: random.Random) -> None:
        node: Any = record
        for part in [*parents, last]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                step: Any = int(part)
            elif isinstance(node, dict) and not part.isdigit():
                step = part
            else:
                return  # an earlier change removed the way there
            if part is last:
                node[step] = value
                return
            node = node.get(step) if isinstance(node, dict) else node[step]
    return change


def _drop(path: str) -> Change:
    def change(record: Record, rng: random.Random) -> None:
        record.pop(path, None)
    return change


def _into_some_text(edit: Callable[[str], str]) -> Change:
    """A change that rewrites one string somewhere in the record."""
    def change(record: Record, rng: random.Random) -> None:
        spots: list[tuple[Any, Any]] = []

        def walk(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(value, str):
                    spots.append((node, key))
                elif isinstance(value, dict | list):
                    walk(value)
        walk(record)
        node, key = rng.choice(spots)
        node[key] = edit(node[key])
    return change


def _shift_discharge_before_admission(record: Record, rng: random.Random) -> None:
    record["discharged_at"] = str(int(record["admitted_at"]) - 1)[:8] + "0000"


def _other_century_digit(record: Record, rng: random.Random) -> None:
    pid = record["patient"]["personal_id"]
    if pid:
        record["patient"]["personal_id"] = pid[:3] + str((int(pid[3]) + 2) % 10) + pid[4:]


def _other_birth_year_digits(record: Record, rng: random.Random) -> None:
    pid = record["patient"]["personal_id"]
    if pid:
        record["patient"]["personal_id"] = pid[:4] + f"{(int(pid[4:6]) + 1) % 100:02d}" + pid[6:]


def _key_in_extra(value: Any) -> Change:
    def change(record: Record, rng: random.Random) -> None:
        record["extra"] = {"GHI_CHU": "x", "K": value}
    return change


BROKEN: dict[str, list[Change]] = {
    "text": [_set("event_id", ""), _set("visit_code", ""), _set("discharge_diagnosis", ""),
             _set("patient.patient_code", ""), _set("patient.full_name", ""),
             _set("patient.insurance_card_numbers", []), _set("patient.insurance_card_numbers", [""]),
             _set("medicines.0.drug_code", ""), _set("medicines.0.name", ""), _set("results.0.service_code", ""),
             _set("results.0.indicator_name", ""), _set("certificates.0.table", "")],
    "ranges": [_set("version", -1), _set("patient.sex", 0), _set("patient.sex", 4), _set("visit_type", 0),
               _set("visit_type", 100), _set("treatment_result", 0), _set("treatment_result", 10),
               _set("treatment_days", -1), _set("weight_kg", -0.5), _set("weight_kg", float("nan")),
               _set("settlement_month", 0), _set("settlement_month", 13), _set("medicines.0.line_no", -1),
               _set("medicines.0.quantity", -1.0), _set("medicines.0.quantity", float("nan")),
               _set("services.0.quantity", -2.0), _set("results.0.line_no", -3)],
    "money": [_set("total_cost", Decimal("-1.00")), _set("insurance_paid", Decimal("1.005")),
              _set("patient_paid", Decimal("12345678901234567.00")), _set("total_cost", Decimal("NaN")),
              _set("total_cost", Decimal("Infinity")), _set("insurance_paid", Decimal("1E+20"))],
    "times": [_set("admitted_at", "202513011200"), _set("admitted_at", "20251124150"),
              _set("admitted_at", "2025112415600"), _set("discharged_at", "202502301200"),
              _set("discharged_at", "2025-11-24 15:00"), _shift_discharge_before_admission,
              _set("inpatient_at", "202511241575"), _set("follow_up_date", "20250230"),
              _set("follow_up_date", "2025011"), _set("medicines.0.ordered_at", "202511"),
              _set("medicines.0.administered_at", "202511241599"), _set("results.0.result_at", "abcdefghijkl"),
              _set("services.0.ordered_at", "202500001200"), _set("progress_notes.0.noted_at", "2025112412"),
              _set("discharge_paper.issued_on", "20251399"), _set("discharge_paper.admitted_at", "1"),
              _set("referral.issued_on", "2025-1-1"), _set("follow_up.appointment_date", "20250000"),
              _set("follow_up.issued_on", "2O250101")],
    "codes": [_set("facility_code", "7900"), _set("facility_code", "00001"), _set("facility_code", "97001"),
              _set("facility_code", "7900a"), _set("main_diagnosis_code", "j20.9"),
              _set("main_diagnosis_code", "J2"), _set("main_diagnosis_code", "J20.99999"),
              _set("secondary_diagnosis_codes", ["I10", "X"])],
    "person": [_set("patient.birth_date", "19591302"), _set("patient.birth_date", "1959110"),
               _set("patient.birth_date", "195911021260"), _set("patient.birth_date", "abcdefgh"),
               _set("patient.personal_id", "12345"), _set("patient.personal_id", "000159075954"),
               _set("patient.personal_id", "00115907595a"), _set("patient.personal_id", ""),
               _set("patient.personal_id", "٠٠١١٥٩٠٧٥٩٥٤"), _other_century_digit, _other_birth_year_digits],
    "types": [_set("patient.sex", "1"), _set("version", 1.0), _set("version", True), _set("visit_type", None),
              _set("medicines.0.quantity", 2), _set("weight_kg", "60"), _set("total_cost", 1000),
              _set("total_cost", "1000.00"), _set("patient.insurance_card_numbers", "GD401"),
              _set("medicines", None), _set("medicines.0.extra", {"DON_GIA": 1200}),
              _set("certificates.0.records", [{"SO_CT": 1}]), _set("discharge_paper", "giấy ra viện"),
              _set("reason", 5), _set("procedure_codes", [1]), _key_in_extra(None)],
    "fields": [_set("surprise", "x"), _set("patient.nickname", "x"), _set("medicines.0.price", 1.0),
               _drop("discharge_diagnosis"), _drop("extra"), _drop("sensitive")],
    "text content": [_into_some_text(lambda s: s + "\x01"), _into_some_text(lambda s: "\x00" + s),
                     _into_some_text(lambda s: s + "\x1b[2J"), _into_some_text(lambda s: s + "\x0c"),
                     _into_some_text(lambda s: unicodedata.normalize("NFD", s + " Nguyễn")),
                     _into_some_text(lambda s: s + "\\u0001 \\b")],
}
EDGES: list[Change] = [
    _set("version", 0), _set("visit_type", 99), _set("patient.sex", 3), _set("treatment_result", 9),
    _set("settlement_month", 12), _set("settlement_year", -5), _set("discharge_type", 0),
    _set("total_cost", Decimal("0.00")), _set("insurance_paid", Decimal("9999999999999999.99")),
    _set("patient_paid", Decimal("-0.00")), _set("weight_kg", 0.0), _set("treatment_days", 0),
    _set("medicines.0.quantity", 0.0), _set("medicines.0.line_no", 0), _set("patient.birth_date", "195911020830"),
    lambda record, rng: record.update(discharged_at=record["admitted_at"]),
    _set("discharge_diagnosis", "Viêm họng;\n\ttheo dõi\r\n"), _set("reason", "5 \\ 6 \"trích\""),
    _set("patient.personal_id", None), _set("medicines", []), _set("results", []), _set("discharge_paper", None),
    _set("patient.insurance_card_numbers", ["GD4010922121676", "GD4010922121677"]),
    _set("secondary_diagnosis_codes", ["I10", "E11.65"]), _set("main_diagnosis_code", "Z00.0000"),
    _set("facility_code", "96001"), _set("extra", {}), _set("reason", "😷 ho"),
]


def _enriched(event: Record, rng: random.Random) -> Record:
    """A generated visit as the Avro decoder gives it, with every optional part present."""
    record = VisitEvent.model_validate(event).model_dump()
    admitted = record["admitted_at"]
    record.update(
        services=[{"line_no": 1, "service_code": "18.0001.0001", "service_name": "Chụp X-quang ngực thẳng",
                   "supply_code": None, "supply_name": None, "quantity": 1.0, "ordered_at": admitted,
                   "result_at": admitted, "result": "Bình thường", "performed_by": "BS0001", "extra": {}}],
        progress_notes=[{"line_no": 1, "clinical_course": "Tỉnh, sốt nhẹ", "stage": None, "consultation": None,
                         "surgery": None, "noted_at": admitted, "noted_by": "BS0001", "extra": {"K": "v"}}],
        discharge_paper={"archive_no": "LT-1", "discharge_department": "K01", "admitted_at": admitted,
                         "discharged_at": record["discharged_at"], "diagnosis": "Viêm họng", "treatment": "Kháng sinh",
                         "note": None, "doctor_name": "Lê Văn An", "issued_on": admitted[:8], "extra": {}},
        record_summary={"admission_diagnosis": "Sốt", "discharge_diagnosis": "Viêm họng", "clinical_course": None,
                        "results_summary": None, "treatment": None, "treatment_result": "Khỏi", "note": None,
                        "extra": {}},
        referral={"referral_no": "CV-1", "from_facility": record["facility_code"], "to_facility": "79010",
                  "reason_code": "1", "diagnosis": None, "clinical_course": None, "results_summary": None,
                  "treatment": None, "direction": "Điều trị tiếp", "issued_on": admitted[:8], "extra": {}},
        follow_up={"appointment_no": "HK-1", "appointment_date": admitted[:8], "diagnosis": None,
                   "doctor_code": "BS0001", "issued_on": admitted[:8], "extra": {}},
        certificates=[{"table": "XML10", "records": [{"SO_CT": "12", "MA_LK": record["visit_code"]}]}],
        sensitive=[{"table": "XML6", "records": [{"MA_THE_ARV": "123"}]}] if rng.random() < 0.2 else [],
        weight_kg=round(rng.uniform(3, 90), 1), treatment_days=rng.randint(0, 9), settlement_year=2026,
        settlement_month=rng.randint(1, 12), follow_up_date=admitted[:8], inpatient_at=admitted,
    )
    return wire.decode(wire.encode(catalogue.VISIT_EVENT, record), catalogue.VISIT_EVENT)


def _copy(record: Record) -> Record:
    return pickle.loads(pickle.dumps(record))  # several times faster than copy.deepcopy here


def _cases(seed: int) -> Iterator[tuple[str, Record]]:
    rng = random.Random(seed)
    _, events = make_population(seed, 1_000, BASES, list(CLINICS), (1990, 2025, 2026))
    bases = [_enriched(event, rng) for event in events]
    kinds = list(BROKEN)
    for index in range(CASES):
        record = _copy(bases[index % BASES])
        roll = rng.random()
        if roll < 0.15:
            kind = "valid"
        elif roll < 0.35:
            kind = "edge"
            rng.choice(EDGES)(record, rng)
        else:
            kind = rng.choice(kinds)
            for _ in range(rng.choice((1, 1, 2))):
                rng.choice(BROKEN[rng.choice((kind, rng.choice(kinds)))])(record, rng)
        yield kind, record


def _as_stored(row: VisitRow) -> VisitRow:
    """A row as PostgreSQL keeps it: the JSON columns as jsonb values, whatever their key order."""
    return replace(row, record=json.loads(row.record), sensitive=json.loads(row.sensitive))


def _dumped(event: VisitEvent) -> Record:
    return json.loads(event.model_dump_json())


def test_the_fast_path_accepts_only_what_the_model_accepts_and_carries_the_same_visit():
    seen: Counter[str] = Counter()
    from_the_wire: Counter[str] = Counter()
    for kind, record in _cases(20_261_128):
        snapshot = pickle.dumps(record)
        before = pickle.loads(snapshot)
        fast = fast_check.accepted(record)
        full = read_visit(before)
        assert pickle.dumps(record) == snapshot, "the fast path must not change the record"
        _decoded_the_same(record, from_the_wire)
        if fast is None:
            seen[f"{kind}: model decides"] += 1
            if kind in ("valid", "edge") and isinstance(full, VisitEvent) and full.model_dump() == before:
                raise AssertionError(f"a visit the model accepts as it is missed the fast path: {before}")
            continue
        assert isinstance(full, VisitEvent), (kind, full)
        model = Visit.of_model(full)
        assert fast.record == model.record
        assert json.loads(fast.book_json()) == json.loads(full.model_dump_json(exclude={"sensitive"}))
        assert json.loads(fast.sensitive_json()) == _dumped(full)["sensitive"]
        accepted = Accepted(fast, "k1", b"s", 0)
        assert _as_stored(visit_row(accepted, 0, 1)) == _as_stored(visit_row(Accepted(model, "k1", b"s", 0), 0, 1))
        if fast.personal_id and not deidentify.withheld(fast, SENSITIVE):
            assert deidentify.encode(fast, b"k" * 32) == deidentify.encode(model, b"k" * 32)
        seen[f"{kind}: fast"] += 1
    assert sum(seen.values()) == CASES
    for kind in BROKEN:
        assert seen[f"{kind}: model decides"] > 1_000, seen  # every kind of breakage was tried, many times
    assert seen["edge: fast"] > 10_000 and seen["valid: fast"] > 10_000, seen
    assert from_the_wire["fast"] > 10_000 and from_the_wire["model decides"] > 10_000, from_the_wire


def _decoded_the_same(record: Record, seen: Counter[str]) -> None:
    """A case that could come off the wire, as fastavro decodes it: the check that trusts the schema's types
    decides it as the check of any record does (which the model holds to, above)."""
    try:
        decoded = wire.decode(wire.encode(catalogue.VISIT_EVENT, record), catalogue.VISIT_EVENT)
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):  # fastavro refused to write it
        return
    trusting, checking = fast_check.accepted(decoded, decoded=True), fast_check.accepted(decoded)
    assert (trusting is None) == (checking is None), decoded
    assert trusting is None or (trusting.record == checking.record and trusting.clean_json == checking.clean_json)
    seen["model decides" if trusting is None else "fast"] += 1


def test_a_visit_the_model_accepts_only_after_normalising_its_text_goes_the_model_s_way():
    _, events = make_population(3, 1, 1, ["79001"], (2026,))
    record = _enriched(events[0], random.Random(3))
    record["patient"]["full_name"] = unicodedata.normalize("NFD", "Nguyễn Thị Lan")
    assert fast_check.accepted(record) is None
    assert isinstance(read_visit(record), VisitEvent)
