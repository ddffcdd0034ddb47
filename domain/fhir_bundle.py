"""A health book as a FHIR R4 Bundle, built from the stored visit records so every part of a visit reaches it.

One Bundle (type `collection`) holds the citizen (Patient, CCCD as identifier), each facility
(Organization, MA_CSKCB) and, per visit: an Encounter, its Conditions (ICD-10), MedicationRequests
(XML2), Observations (XML4 results, blood group, weight), Procedures (XML3 services, ICD-9 CM
procedure codes), a ClinicalImpression (discharge paper, record summary, progress notes), the
referral as a ServiceRequest (XML13), the follow-up Appointment (XML14), certificates as
DocumentReferences, what insurance and the patient paid as an ExplanationOfBenefit, and a
Provenance carrying the clinic's signature with the signed message and key as Binary resources.

A year's or a whole book's Bundle is what the list shows: a sensitive visit (domain/sensitive_visit.py)
is there only as a sealed Encounter, labelled MASKED, with its dates, its facility and a neutral
sentence; everything else of it, sensitive tables (XML6, XML15) included, is only in the Bundle of that
visit's detail, labelled restricted (R). Codes without a published FHIR system use healthbook's own
systems under `SYSTEM_BASE`, named in docs/contract.md.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from decimal import Decimal
from typing import Any

from domain.book_entry import BookEntry, result_flag
from domain.registry_trust import organisation_name
from domain.sensitive_diagnoses import SensitiveDiagnoses
from domain.sensitive_visit import SensitivePolicy
from domain.sentences import SEALED_VISIT, TREATMENT_RESULTS, VISIT_TYPES, facility_label

SYSTEM_BASE = "https://fhir.healthbook.vn"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
CCCD = f"{SYSTEM_BASE}/sid/so-dinh-danh-ca-nhan"  # the 12-digit personal ID (số định danh cá nhân, CCCD)
BHYT_CARD = f"{SYSTEM_BASE}/sid/ma-the-bhyt"
FACILITY = f"{SYSTEM_BASE}/sid/ma-cskcb"
VIETNAM_TZ = "+07:00"  # clinic times in QĐ 4750 are Vietnam local time, which has no daylight saving
_NAMESPACE = uuid.UUID("5b0f7c8e-3d1a-4e59-9b7e-4f2b8c1d6a90")
_SEX = {1: "male", 2: "female", 3: "other"}
_VISIT_CLASS = {1: ("AMB", "ambulatory"), 2: ("AMB", "ambulatory"), 3: ("IMP", "inpatient encounter")}
_FLAG_CODES = {"high": ("H", "High"), "low": ("L", "Low"), "normal": ("N", "Normal")}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _local(kind: str) -> str:
    return f"{SYSTEM_BASE}/CodeSystem/{kind}"


def _minute(value: str | None) -> str | None:
    """yyyyMMddHHmm (clinic local time) as a FHIR dateTime."""
    if not value:
        return None
    if len(value) == 8:
        return _day(value)
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}T{value[8:10]}:{value[10:12]}:00{VIETNAM_TZ}"


def _day(value: str | None) -> str | None:
    """yyyyMMdd (or the date of yyyyMMddHHmm) as a FHIR date."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if value else None


def _fhir_money(value: Any) -> dict[str, Any]:
    return {"value": float(Decimal(str(value))), "currency": "VND"}


def _drop_empty(value: Any) -> Any:
    """FHIR forbids empty elements: remove None, empty strings, lists and objects, recursively."""
    if isinstance(value, dict):
        kept = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        kept_items = [_drop_empty(v) for v in value]
        return [v for v in kept_items if v not in (None, "", [], {})]
    return value


class _Builder:
    """Collects a Bundle's entries, each with a stable urn:uuid made from what it stands for."""

    def __init__(self, facility_names: dict[str, str]) -> None:
        self.facility_names = facility_names  # MA_CSKCB -> the organisation its certificate names
        self.entries: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add(self, key: str, resource: dict[str, Any]) -> dict[str, str]:
        """Add a resource once under key; return a reference to it."""
        url = f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}"
        if url not in self._seen:
            self._seen.add(url)
            self.entries.append({"fullUrl": url, "resource": _drop_empty(resource)})
        return {"reference": url}

    def fill(self, key: str, resource: dict[str, Any]) -> None:
        """Give the entry added under key its resource, once what it refers to is known."""
        url = f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}"
        next(e for e in self.entries if e["fullUrl"] == url)["resource"] = _drop_empty(resource)


def book_bundle(personal_id: str, entries: list[BookEntry], *, detail: bool = False,
                sensitive: SensitivePolicy) -> dict[str, Any]:
    """The Bundle of a citizen's visits: a list's (sensitive visits sealed) or, with detail, one visit in full."""
    builder = _Builder({e.record["facility_code"]: name for e in entries
                        if e.signed and (name := organisation_name(e.signed.certificate))})
    sealed = [not detail and e.sealed_in_a_list(sensitive) for e in entries]
    patient = builder.add(f"patient/{personal_id}", _patient(
        personal_id, entries, [e for e, hidden in zip(entries, sealed, strict=True) if not hidden]))
    for entry, hidden in zip(entries, sealed, strict=True):
        if hidden:
            _sealed_visit(builder, patient, entry)
        else:
            _visit(builder, patient, entry, detail, sensitive.diagnoses)
    return {"resourceType": "Bundle", "type": "collection",
            "meta": {"tag": [{"system": _local("healthbook-view"), "code": "detail" if detail else "list"}]},
            "entry": builder.entries}


def _patient(personal_id: str, entries: list[BookEntry], shown: list[BookEntry]) -> dict[str, Any]:
    """The citizen, with the patient codes (MA_BN) of the visits shown: a sealed visit's stays in its detail."""
    person = entries[-1].record["patient"] if entries else {}
    identifiers = [{"use": "official", "system": CCCD, "value": personal_id}]
    identifiers += [{"system": BHYT_CARD, "value": card} for card in person.get("insurance_card_numbers", [])]
    for entry in shown:
        code = entry.record["patient"].get("patient_code")
        identifiers.append({"system": f"{SYSTEM_BASE}/sid/ma-bn/{entry.record['facility_code']}", "value": code})
    unique = list({(i["system"], i["value"]): i for i in identifiers}.values())
    return {
        "resourceType": "Patient", "identifier": unique,
        "name": [{"text": person.get("full_name")}] if person else [],
        "gender": _SEX.get(person.get("sex", 0), "unknown") if person else None,
        "birthDate": _day(person.get("birth_date")),
        "address": [{"text": person.get("address"), "state": person.get("province_code"), "country": "VN"}]
        if person.get("address") else [],
        "telecom": [{"system": "phone", "value": person["phone"]}] if person.get("phone") else [],
        "extension": [{"url": f"{SYSTEM_BASE}/StructureDefinition/ma-dkbd",
                       "valueIdentifier": {"system": FACILITY, "value": person["registered_facility"]}}]
        if person.get("registered_facility") else [],
    }


def _organization(builder: _Builder, code: str | None) -> dict[str, str] | None:
    if not code:
        return None
    return builder.add(f"organization/{code}", {
        "resourceType": "Organization", "identifier": [{"system": FACILITY, "value": code}],
        "name": builder.facility_names.get(code) or facility_label(code)})


def _sealed_visit(builder: _Builder, patient: dict[str, str], entry: BookEntry) -> None:
    """A sensitive visit in a list: its dates, its facility and a neutral sentence, nothing else of it."""
    record = entry.record
    builder.add(f"visit/{record['facility_code']}/{record['visit_code']}", {
        "resourceType": "Encounter", "status": "finished",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                               "code": "MASKED"}]},
        "text": {"status": "generated",
                 "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{SEALED_VISIT.citizen()}</div>'},
        "identifier": [{"system": f"{SYSTEM_BASE}/sid/ma-lk/{record['facility_code']}", "value": record["visit_code"]}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": patient, "serviceProvider": _organization(builder, record["facility_code"]),
        "period": {"start": _minute(record["admitted_at"]), "end": _minute(record["discharged_at"])},
    })


def _visit(builder: _Builder, patient: dict[str, str], entry: BookEntry, detail: bool,
           sensitive: SensitiveDiagnoses) -> None:
    record = entry.record
    key = f"visit/{record['facility_code']}/{record['visit_code']}"
    facility = _organization(builder, record["facility_code"])
    codes = [record["main_diagnosis_code"], *record.get("secondary_diagnosis_codes", [])]
    encounter = builder.add(key, {"resourceType": "Encounter"})  # placed before its parts, filled after them
    made: list[dict[str, str]] = [encounter]
    conditions = _conditions(builder, key, patient, encounter, record, codes, sensitive)
    made += conditions
    made += _medicines(builder, key, patient, encounter, record)
    made += _observations(builder, key, patient, encounter, record)
    made += _procedures(builder, key, patient, encounter, record)
    made += _papers(builder, key, patient, encounter, record, facility)
    made += _documents(builder, key, patient, encounter, record.get("certificates", []), restricted=False)
    if detail:
        made += _documents(builder, key, patient, encounter, entry.sensitive, restricted=True)
    made.append(_payments(builder, key, patient, facility, record))
    builder.fill(key, _encounter(record, patient, facility, conditions, labelled=detail and entry.has_sensitive))
    if entry.signed is not None:
        _provenance(builder, key, made, facility, entry)


def _encounter(record: dict[str, Any], patient: dict[str, str], facility: dict[str, str] | None,
               conditions: list[dict[str, str]], labelled: bool) -> dict[str, Any]:
    act, display = _VISIT_CLASS.get(record["visit_type"], ("AMB", "ambulatory"))
    result = record.get("treatment_result")
    security = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}] if labelled else []
    return {
        "resourceType": "Encounter", "status": "finished", "meta": {"security": security},
        "identifier": [{"system": f"{SYSTEM_BASE}/sid/ma-lk/{record['facility_code']}", "value": record["visit_code"]}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": act, "display": display},
        "type": [{"coding": [{"system": _local("ma-loai-kcb"), "code": str(record["visit_type"]),
                              "display": VISIT_TYPES.get(record["visit_type"])}]}],
        "subject": patient, "serviceProvider": facility,
        "period": {"start": _minute(record["admitted_at"]), "end": _minute(record["discharged_at"])},
        "length": {"value": record["treatment_days"], "unit": "d", "system": "http://unitsofmeasure.org",
                   "code": "d"} if record.get("treatment_days") is not None else None,
        "reasonCode": [{"text": record.get("reason")}, {"text": record.get("admission_diagnosis")}],
        "diagnosis": [{"condition": ref, "rank": rank} for rank, ref in enumerate(conditions, 1)],
        "hospitalization": {
            "admitOrigin": None,
            "dischargeDisposition": {"coding": [{"system": _local("ma-loai-rv"),
                                                 "code": str(record["discharge_type"])}]}
            if record.get("discharge_type") is not None else None,
        },
        "extension": [
            {"url": f"{SYSTEM_BASE}/StructureDefinition/ket-qua-dieu-tri",
             "valueCodeableConcept": {"coding": [{"system": _local("ket-qua-dtri"), "code": str(result),
                                                  "display": TREATMENT_RESULTS.get(result)}]}}
            if result is not None else None,
            {"url": f"{SYSTEM_BASE}/StructureDefinition/ngay-vao-noi-tru",
             "valueDateTime": _minute(record.get("inpatient_at"))} if record.get("inpatient_at") else None,
            {"url": f"{SYSTEM_BASE}/StructureDefinition/ma-khoa",
             "valueString": record.get("department_code")} if record.get("department_code") else None,
        ],
    }


def _conditions(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
                record: dict[str, Any], codes: list[str], sensitive: SensitiveDiagnoses) -> list[dict[str, str]]:
    names = [n.strip() for n in record.get("discharge_diagnosis", "").split(";")]
    named = len(names) == len(codes)
    made = []
    for index, code in enumerate(codes):
        made.append(builder.add(f"{key}/condition/{code}", {
            "resourceType": "Condition", "subject": patient, "encounter": encounter,
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
            if code in sensitive else None,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": ICD10, "code": code, "display": names[index] if named else None}],
                     "text": names[index] if named else None},
            "recordedDate": _minute(record["discharged_at"]),
            "note": [{"text": record["discharge_diagnosis"]}] if index == 0 and not named else [],
        }))
    for code in record.get("traditional_diagnosis_codes", []):
        made.append(builder.add(f"{key}/condition/yhct/{code}", {
            "resourceType": "Condition", "subject": patient, "encounter": encounter,
            "code": {"coding": [{"system": _local("ma-benh-yhct"), "code": code}]}}))
    return made


def _medicines(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
               record: dict[str, Any]) -> list[dict[str, str]]:
    made = []
    for line in record.get("medicines", []):
        made.append(builder.add(f"{key}/medicine/{line['line_no']}", {
            "resourceType": "MedicationRequest", "status": "completed", "intent": "order",
            "subject": patient, "encounter": encounter, "authoredOn": _minute(line.get("ordered_at")),
            "medicationCodeableConcept": {
                "coding": [{"system": _local("ma-thuoc"), "code": line["drug_code"], "display": line["name"]}],
                "text": " ".join(p for p in (line["name"], line.get("strength")) if p)},
            "requester": {"identifier": {"system": f"{SYSTEM_BASE}/sid/ma-bac-si",
                                         "value": line.get("prescriber_code")}}
            if line.get("prescriber_code") else None,
            "dosageInstruction": [{
                "text": "; ".join(p for p in (line.get("dose"), line.get("instructions")) if p),
                "patientInstruction": line.get("instructions"),
                "route": {"coding": [{"system": _local("duong-dung"), "code": line["route"]}]}
                if line.get("route") else None,
            }],
            "dispenseRequest": {"quantity": {"value": line["quantity"], "unit": line.get("unit")}},
            "extension": [{"url": f"{SYSTEM_BASE}/StructureDefinition/ngay-th-yl",
                           "valueDateTime": _minute(line["administered_at"])}] if line.get("administered_at") else [],
        }))
    return made


def _observations(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
                  record: dict[str, Any]) -> list[dict[str, str]]:
    made = []
    for line in record.get("results", []):
        value, flag = line.get("value"), result_flag(line.get("conclusion"))
        numeric = value is not None and _NUMBER.match(value.strip()) is not None
        interpretation = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                      "code": _FLAG_CODES[flag][0], "display": _FLAG_CODES[flag][1]}] if flag else [],
                          "text": line.get("conclusion")}
        made.append(builder.add(f"{key}/result/{line['line_no']}", {
            "resourceType": "Observation", "status": "final", "subject": patient, "encounter": encounter,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": _local("ma-chi-so"), "code": line.get("indicator_code")},
                                {"system": _local("ma-dich-vu"), "code": line["service_code"]}],
                     "text": line["indicator_name"]},
            "effectiveDateTime": _minute(line.get("result_at")),
            "valueQuantity": {"value": float(value), "unit": line.get("unit")} if numeric else None,  # type: ignore[arg-type]
            "valueString": None if numeric else value,
            "interpretation": [interpretation],
            "referenceRange": [{"text": line["description"]}] if line.get("description") else [],
            "performer": [{"identifier": {"system": f"{SYSTEM_BASE}/sid/ma-bac-si", "value": line["reader_code"]}}]
            if line.get("reader_code") else [],
        }))
    person = record["patient"]
    if person.get("blood_type"):
        made.append(builder.add(f"{key}/blood-group", {
            "resourceType": "Observation", "status": "final", "subject": patient, "encounter": encounter,
            "code": {"coding": [{"system": "http://loinc.org", "code": "883-9",
                                 "display": "ABO group [Type] in Blood"}],
                     "text": "Nhóm máu"},
            "valueString": person["blood_type"]}))
    if record.get("weight_kg") is not None:
        made.append(builder.add(f"{key}/weight", {
            "resourceType": "Observation", "status": "final", "subject": patient, "encounter": encounter,
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}],
                     "text": "Cân nặng"},
            "valueQuantity": {"value": record["weight_kg"], "unit": "kg", "system": "http://unitsofmeasure.org",
                              "code": "kg"}}))
    return made


def _procedures(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
                record: dict[str, Any]) -> list[dict[str, str]]:
    made = []
    for line in record.get("services", []):
        coding = [{"system": _local("ma-dich-vu"), "code": line.get("service_code"),
                   "display": line.get("service_name")}
                  ] if line.get("service_code") else []
        made.append(builder.add(f"{key}/service/{line['line_no']}", {
            "resourceType": "Procedure", "status": "completed", "subject": patient, "encounter": encounter,
            "code": {"coding": coding, "text": line.get("service_name") or line.get("supply_name")},
            "usedCode": [{"coding": [{"system": _local("ma-vat-tu"), "code": line["supply_code"]}],
                          "text": line.get("supply_name")}] if line.get("supply_code") else [],
            "performedPeriod": {"start": _minute(line.get("ordered_at")), "end": _minute(line.get("result_at"))},
            "outcome": {"text": line.get("result")} if line.get("result") else None,
            "performer": [{"actor": {"identifier": {"system": f"{SYSTEM_BASE}/sid/nguoi-thuc-hien",
                                                    "value": line["performed_by"]}}}]
            if line.get("performed_by") else [],
            "note": [{"text": f"Số lượng: {line['quantity']:g}"}],
        }))
    for code in record.get("procedure_codes", []):
        made.append(builder.add(f"{key}/procedure/{code}", {
            "resourceType": "Procedure", "status": "completed", "subject": patient, "encounter": encounter,
            "code": {"coding": [{"system": ICD9CM, "code": code}]}}))
    return made


def _papers(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str], record: dict[str, Any],
            facility: dict[str, str] | None) -> list[dict[str, str]]:
    """The discharge paper and record summary (XML7, XML8, XML5), the referral (XML13), the follow-up (XML14)."""
    made = _impression(builder, key, patient, encounter, record)
    made += _referral(builder, key, patient, encounter, record, facility)
    made += _follow_up(builder, key, patient, encounter, record)
    return made


def _impression(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
                record: dict[str, Any]) -> list[dict[str, str]]:
    made = []
    paper, summary = record.get("discharge_paper") or {}, record.get("record_summary") or {}
    notes = record.get("progress_notes", [])
    if paper or summary or notes:
        parts = [("Chẩn đoán vào viện", summary.get("admission_diagnosis")),
                 ("Chẩn đoán ra viện", paper.get("diagnosis")),
                 ("Chẩn đoán ra viện", summary.get("discharge_diagnosis")),
                 ("Quá trình bệnh lý", summary.get("clinical_course")),
                 ("Tóm tắt kết quả", summary.get("results_summary")),
                 ("Phương pháp điều trị", paper.get("treatment")), ("Phương pháp điều trị", summary.get("treatment")),
                 ("Kết quả điều trị", summary.get("treatment_result")), ("Ghi chú", paper.get("note")),
                 ("Ghi chú", summary.get("note")), ("Bác sĩ", paper.get("doctor_name")),
                 ("Số lưu trữ", paper.get("archive_no")), ("Khoa ra viện", paper.get("discharge_department")),
                 ("Ngày chứng từ", _day(paper.get("issued_on")))]
        made.append(builder.add(f"{key}/impression", {
            "resourceType": "ClinicalImpression", "status": "completed", "subject": patient, "encounter": encounter,
            "effectivePeriod": {"start": _minute(paper.get("admitted_at")), "end": _minute(paper.get("discharged_at"))},
            "summary": "; ".join(f"{label}: {value}" for label, value in parts if value) or None,
            "note": [{"time": _minute(n.get("noted_at")), "authorString": n.get("noted_by"),
                      "text": "; ".join(f"{label}: {n[field]}" for label, field in (
                          ("Diễn biến", "clinical_course"), ("Giai đoạn", "stage"), ("Hội chẩn", "consultation"),
                          ("Phẫu thuật", "surgery")) if n.get(field)) or "-"} for n in notes],
        }))
    return made


def _referral(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
              record: dict[str, Any], facility: dict[str, str] | None) -> list[dict[str, str]]:
    made = []
    referral = record.get("referral")
    if referral:
        made.append(builder.add(f"{key}/referral", {
            "resourceType": "ServiceRequest", "status": "completed", "intent": "order", "subject": patient,
            "encounter": encounter, "authoredOn": _minute(referral.get("issued_on")),
            "identifier": [{"system": f"{SYSTEM_BASE}/sid/so-chuyen-tuyen", "value": referral.get("referral_no")}],
            "category": [{"text": "Chuyển tuyến"}],
            "code": {"text": referral.get("direction") or "Chuyển tuyến"},
            "requester": {"identifier": {"system": FACILITY, "value": referral.get("from_facility")}}
            if referral.get("from_facility") else facility,
            "performer": [{"identifier": {"system": FACILITY, "value": referral["to_facility"]}}]
            if referral.get("to_facility") else [],
            "reasonCode": [{"coding": [{"system": _local("ma-lydo-ct"), "code": referral.get("reason_code")}]}]
            if referral.get("reason_code") else [],
            "note": [{"text": f"{label}: {referral[field]}"} for label, field in (
                ("Chẩn đoán", "diagnosis"), ("Quá trình bệnh lý", "clinical_course"),
                ("Tóm tắt kết quả", "results_summary"), ("Phương pháp điều trị", "treatment")) if referral.get(field)],
        }))
    return made


def _follow_up(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
               record: dict[str, Any]) -> list[dict[str, str]]:
    made = []
    follow_up = record.get("follow_up") or {}
    day = follow_up.get("appointment_date") or record.get("follow_up_date")
    if day:
        made.append(builder.add(f"{key}/follow-up", {
            "resourceType": "Appointment", "status": "proposed",
            "identifier": [{"system": f"{SYSTEM_BASE}/sid/so-giay-hen", "value": follow_up.get("appointment_no")}],
            "description": "Hẹn khám lại" + (f": {follow_up['diagnosis']}" if follow_up.get("diagnosis") else ""),
            "requestedPeriod": [{"start": _day(day), "end": _day(day)}],
            "created": _day(follow_up.get("issued_on")),
            "supportingInformation": [encounter],
            "participant": [{"actor": patient, "status": "needs-action"},
                            {"actor": {"identifier": {"system": f"{SYSTEM_BASE}/sid/ma-bac-si",
                                                      "value": follow_up["doctor_code"]}}, "status": "accepted"}
                            if follow_up.get("doctor_code") else None],
        }))
    return made


def _documents(builder: _Builder, key: str, patient: dict[str, str], encounter: dict[str, str],
               tables: list[dict[str, Any]], restricted: bool) -> list[dict[str, str]]:
    """Certificates (XML9 to XML12) and, in a detail, the sensitive tables (XML6, XML15), as DocumentReferences."""
    made = []
    for table in tables:
        data = json.dumps(table["records"], ensure_ascii=False).encode()
        made.append(builder.add(f"{key}/document/{table['table']}", {
            "resourceType": "DocumentReference", "status": "current", "subject": patient,
            "type": {"coding": [{"system": _local("loai-ho-so"), "code": table["table"]}]},
            "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                           "code": "R"}]}] if restricted else [],
            "content": [{"attachment": {"contentType": "application/json; charset=utf-8",
                                        "data": base64.b64encode(data).decode(), "title": table["table"]}}],
            "context": {"encounter": [encounter]},
        }))
    return made


def _payments(builder: _Builder, key: str, patient: dict[str, str], facility: dict[str, str] | None,
              record: dict[str, Any]) -> dict[str, str]:
    insurer = builder.add("organization/bhxh", {"resourceType": "Organization", "name": "Bảo hiểm xã hội Việt Nam"})
    cards = record["patient"].get("insurance_card_numbers", [])
    totals = [("submitted", "http://terminology.hl7.org/CodeSystem/adjudication", "Tổng chi phí",
               record.get("total_cost")),
              ("benefit", "http://terminology.hl7.org/CodeSystem/adjudication", "Quỹ BHYT thanh toán",
               record.get("insurance_paid")),
              ("patient-paid", _local("adjudication"), "Người bệnh trả", record.get("patient_paid"))]
    return builder.add(f"{key}/payment", {
        "resourceType": "ExplanationOfBenefit", "status": "active", "use": "claim", "outcome": "complete",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "institutional" if record["visit_type"] == 3 else "professional"}]},
        "patient": patient, "created": _minute(record["discharged_at"]), "insurer": insurer, "provider": facility,
        "insurance": [{"focal": True, "coverage": {"identifier": {"system": BHYT_CARD, "value": cards[0]}}}]
        if cards else [{"focal": True, "coverage": {"display": "BHYT"}}],
        "extension": [{"url": f"{SYSTEM_BASE}/StructureDefinition/the-bhyt-hieu-luc",
                       "valuePeriod": {"start": _day(record["patient"].get("card_valid_from", "")[:8] or None),
                                       "end": _day(record["patient"].get("card_valid_to", "")[:8] or None)}}]
        if record["patient"].get("card_valid_from") or record["patient"].get("card_valid_to") else [],
        "total": [{"category": {"coding": [{"system": system, "code": code}], "text": text},
                   "amount": _fhir_money(value)}
                  for code, system, text, value in totals if value is not None],
    })


def _provenance(builder: _Builder, key: str, targets: list[dict[str, str]], facility: dict[str, str] | None,
                entry: BookEntry) -> None:
    """The clinic's signature of the visit, with the signed message and the key (or certificate) that verifies it."""
    signed = entry.signed
    assert signed is not None
    when = signed.signed_at.isoformat().replace("+00:00", "Z")
    material = signed.certificate or signed.public_key
    key_ref = builder.add(f"{key}/signing-key", {
        "resourceType": "Binary", "data": base64.b64encode(material).decode(),
        "contentType": "application/pkix-cert" if signed.certificate else "application/octet-stream"})
    entities = []
    if signed.signed_message:
        message = builder.add(f"{key}/signed-message", {
            "resourceType": "Binary", "contentType": "application/vnd.healthbook.signed-visit+avro",
            "data": base64.b64encode(signed.signed_message).decode()})
        entities.append({"role": "source", "what": message})
    builder.add(f"{key}/provenance", {
        "resourceType": "Provenance", "target": targets, "recorded": when,
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "author"}]}, "who": facility}],
        "entity": entities,
        "signature": [{
            "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                      "display": "Author's Signature"}],
            "when": when, "who": facility, "sigFormat": "application/vnd.healthbook.ed25519",
            "data": base64.b64encode(signed.signature).decode(),
            "extension": [{"url": f"{SYSTEM_BASE}/StructureDefinition/signing-key", "valueReference": key_ref},
                          {"url": f"{SYSTEM_BASE}/StructureDefinition/key-id", "valueString": signed.key_id}],
        }],
    })

