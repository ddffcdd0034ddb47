"""From one HOSO's tables to a version-2 visit event, naming the source table and element of every problem."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from producers.xml_ingest.giamdinhhs import Hoso
from schemas.problems import Problem

EVENT_NAMESPACE = uuid.UUID("6f1c3e2a-6b1d-4c55-9a57-3d3c1f0e4b21")
SENSITIVE_TABLES = ("XML6", "XML15")
# Birth (XML9), pregnancy leave (XML10), sick leave (XML11) and medical assessment (XML12): kept verbatim.
CERTIFICATE_TABLES = ("XML9", "XML10", "XML11", "XML12")

# English field -> standard element, per table. The same maps name the source of a violation.
PATIENT = {
    "personal_id": "SO_CCCD", "patient_code": "MA_BN", "full_name": "HO_TEN", "birth_date": "NGAY_SINH",
    "sex": "GIOI_TINH", "address": "DIA_CHI", "province_code": "MATINH_CU_TRU", "phone": "DIEN_THOAI",
    "insurance_card_numbers": "MA_THE_BHYT", "blood_type": "NHOM_MAU", "registered_facility": "MA_DKBD",
    "card_valid_from": "GT_THE_TU", "card_valid_to": "GT_THE_DEN",
}
SUMMARY = {
    "facility_code": "MA_CSKCB", "visit_code": "MA_LK", "visit_type": "MA_LOAI_KCB", "admitted_at": "NGAY_VAO",
    "discharged_at": "NGAY_RA", "reason": "LY_DO_VV", "admission_diagnosis": "CHAN_DOAN_VAO",
    "discharge_diagnosis": "CHAN_DOAN_RV", "main_diagnosis_code": "MA_BENH_CHINH",
    "secondary_diagnosis_codes": "MA_BENH_KT", "traditional_diagnosis_codes": "MA_BENH_YHCT",
    "procedure_codes": "MA_PTTT_QT", "treatment_result": "KET_QUA_DTRI", "discharge_type": "MA_LOAI_RV",
    "follow_up_date": "NGAY_TAI_KHAM", "department_code": "MA_KHOA", "inpatient_at": "NGAY_VAO_NOI_TRU",
    "treatment_days": "SO_NGAY_DTRI", "weight_kg": "CAN_NANG", "settlement_year": "NAM_QT",
    "settlement_month": "THANG_QT", "total_cost": "T_TONGCHI_BV", "insurance_paid": "T_BHTT",
    "patient_paid": "T_BNCCT+T_BNTT",
}
MEDICINE = {
    "line_no": "STT", "drug_code": "MA_THUOC", "name": "TEN_THUOC", "unit": "DON_VI_TINH", "strength": "HAM_LUONG",
    "route": "DUONG_DUNG", "dose": "LIEU_DUNG", "instructions": "CACH_DUNG", "quantity": "SO_LUONG",
    "prescriber_code": "MA_BAC_SI", "ordered_at": "NGAY_YL", "administered_at": "NGAY_TH_YL",
}
SERVICE = {
    "line_no": "STT", "service_code": "MA_DICH_VU", "service_name": "TEN_DICH_VU", "supply_code": "MA_VAT_TU",
    "supply_name": "TEN_VAT_TU", "quantity": "SO_LUONG", "ordered_at": "NGAY_YL", "result_at": "NGAY_KQ",
    "result": "KET_QUA", "performed_by": "NGUOI_THUC_HIEN",
}
LAB_RESULT = {
    "line_no": "STT", "service_code": "MA_DICH_VU", "indicator_code": "MA_CHI_SO", "indicator_name": "TEN_CHI_SO",
    "value": "GIA_TRI", "unit": "DON_VI_DO", "description": "MO_TA", "conclusion": "KET_LUAN",
    "result_at": "NGAY_KQ", "reader_code": "MA_BS_DOC_KQ",
}
PROGRESS_NOTE = {
    "line_no": "STT", "clinical_course": "DIEN_BIEN_LS", "stage": "GIAI_DOAN_BENH", "consultation": "HOI_CHAN",
    "surgery": "PHAU_THUAT", "noted_at": "THOI_DIEM_DBLS", "noted_by": "NGUOI_THUC_HIEN",
}
DISCHARGE_PAPER = {
    "archive_no": "SO_LUU_TRU", "discharge_department": "MA_KHOA_RV", "admitted_at": "NGAY_VAO",
    "discharged_at": "NGAY_RA", "diagnosis": "CHAN_DOAN_RV", "treatment": "PP_DIEUTRI", "note": "GHI_CHU",
    "doctor_name": "TEN_BS", "issued_on": "NGAY_CT",
}
RECORD_SUMMARY = {
    "admission_diagnosis": "CHAN_DOAN_VAO", "discharge_diagnosis": "CHAN_DOAN_RV", "clinical_course": "QT_BENHLY",
    "results_summary": "TOMTAT_KQ", "treatment": "PP_DIEUTRI", "treatment_result": "KET_QUA_DTRI", "note": "GHI_CHU",
}
REFERRAL = {
    "referral_no": "SO_CHUYENTUYEN", "from_facility": "MA_NOI_DI", "to_facility": "MA_NOI_DEN",
    "reason_code": "MA_LYDO_CT", "diagnosis": "CHAN_DOAN_RV", "clinical_course": "QT_BENHLY",
    "results_summary": "TOMTAT_KQ", "treatment": "PP_DIEUTRI", "direction": "HUONG_DIEU_TRI", "issued_on": "NGAY_CT",
}
FOLLOW_UP = {
    "appointment_no": "SO_GIAYHEN_KL", "appointment_date": "NGAY_HEN_KL", "diagnosis": "CHAN_DOAN_RV",
    "doctor_code": "MA_BAC_SI", "issued_on": "NGAY_CT",
}
LISTS = {"medicines": ("XML2", MEDICINE), "services": ("XML3", SERVICE), "results": ("XML4", LAB_RESULT),
         "progress_notes": ("XML5", PROGRESS_NOTE)}
PAPERS = {"discharge_paper": ("XML7", DISCHARGE_PAPER), "record_summary": ("XML8", RECORD_SUMMARY),
          "referral": ("XML13", REFERRAL), "follow_up": ("XML14", FOLLOW_UP)}
KNOWN_TABLES = frozenset({"XML1", *(t for t, _ in LISTS.values()), *(t for t, _ in PAPERS.values()),
                          *CERTIFICATE_TABLES, *SENSITIVE_TABLES})
INTS = {"sex", "visit_type", "treatment_result", "discharge_type", "treatment_days", "settlement_year",
        "settlement_month", "line_no"}
FLOATS = {"weight_kg", "quantity"}
SPLIT = {"insurance_card_numbers", "secondary_diagnosis_codes", "traditional_diagnosis_codes", "procedure_codes"}
# Identity, bookkeeping and the reserved column carry nothing for the book beyond what is mapped.
NOT_KEPT = {"MA_LK", "STT", "DU_PHONG", "T_BNCCT", "T_BNTT"}


class MappingFailed(ValueError):
    """The HOSO's tables cannot be mapped; problems lists each reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def _convert(name: str, text: str | None, table: str, element: str, problems: list[Problem]) -> Any:
    if text is None:
        return [] if name in SPLIT else None
    try:
        if name in INTS:
            return int(text)
        if name in FLOATS:
            return float(text.replace(",", "."))
        if name in SPLIT:
            return [part.strip() for part in re.split(r"[;,]", text) if part.strip()]
    except ValueError:
        kind = "a whole number" if name in INTS else "a number"
        problems.append(Problem(f"{table}.{element}", text, "number_format", f"{element}={text!r} is not {kind}"))
        return None
    return text


def _money(record: dict[str, str], elements: tuple[str, ...], problems: list[Problem]) -> Decimal | None:
    total = Decimal(0)
    for element in elements:
        text = record.get(element)
        if text is None:
            continue
        try:
            total += Decimal(text.replace(",", "."))
        except InvalidOperation:
            problems.append(Problem(f"XML1.{element}", text, "number_format", f"{element}={text!r} is not an amount"))
    return total


def _mapped(record: dict[str, str], fields: dict[str, str], table: str, problems: list[Problem],
            converters: dict[str, Callable[[], Any]] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, element in fields.items():
        if converters and name in converters:
            result[name] = converters[name]()
        else:
            result[name] = _convert(name, record.get(element), table, element, problems)
    used = set(fields.values()) | NOT_KEPT
    result["extra"] = {k: v for k, v in record.items() if k not in used}
    return result


def map_hoso(hoso: Hoso, header_facility: str | None, version: int) -> dict[str, Any]:
    """Build the visit event of one HOSO, or raise MappingFailed naming every problem."""
    problems = list(hoso.problems)
    if any(p.rule == "hoso_too_large" for p in problems):
        raise MappingFailed(problems)  # nothing of it was kept, so nothing more can be said of it
    for table in hoso.tables:
        if table not in KNOWN_TABLES:
            problems.append(Problem(f"{table}.LOAIHOSO", table, "unknown_table", (
                "is not a table of QĐ 4750/QĐ 3176 (XML1 to XML15); healthbook would lose it, so the visit is "
                "refused")))
    summaries = hoso.tables.get("XML1", [])
    if len(summaries) != 1:
        problems.append(Problem("XML1.TONG_HOP", str(len(summaries)), "summary_count",
                                f"a HOSO needs exactly one XML1 summary record, found {len(summaries)}"))
        raise MappingFailed(problems)
    summary = dict(summaries[0])
    summary.setdefault("MA_CSKCB", header_facility or "")
    patient = _mapped(summary, PATIENT, "XML1", problems)
    patient.pop("extra")
    money = {
        "total_cost": lambda: _money(summary, ("T_TONGCHI_BV",), problems),
        "insurance_paid": lambda: _money(summary, ("T_BHTT",), problems),
        "patient_paid": lambda: _money(summary, ("T_BNCCT", "T_BNTT"), problems),
    }
    event = _mapped(summary, SUMMARY, "XML1", problems, money)
    event["extra"] = {k: v for k, v in event["extra"].items() if k not in PATIENT.values()}
    event["patient"] = patient
    for name, (table, fields) in LISTS.items():
        event[name] = [_mapped(r, fields, table, problems) for r in hoso.tables.get(table, [])]
        for line, item in enumerate(event[name], 1):
            if item["line_no"] is None:
                item["line_no"] = line
            if "quantity" in item and item["quantity"] is None:
                item["quantity"] = 0.0
    for name, (table, fields) in PAPERS.items():
        records = hoso.tables.get(table, [])
        event[name] = _mapped(records[0], fields, table, problems) if records else None
    event["certificates"] = [{"table": t, "records": hoso.tables[t]} for t in CERTIFICATE_TABLES if t in hoso.tables]
    event["sensitive"] = [{"table": t, "records": hoso.tables[t]} for t in SENSITIVE_TABLES if t in hoso.tables]
    if problems:
        raise MappingFailed(problems)
    event["version"] = version
    event["event_id"] = str(uuid.uuid5(EVENT_NAMESPACE, f"{event['facility_code']}/{event['visit_code']}/{version}"))
    return event


def source_of(path: str) -> str:
    """The `table.element` a field path of the visit event came from, for reports."""
    parts = path.split(".")
    head = parts[0]
    if head == "patient" and len(parts) > 1:
        return f"XML1.{PATIENT.get(parts[1], parts[1])}"
    if head in LISTS and len(parts) > 2:
        table, fields = LISTS[head]
        return f"{table}.{fields.get(parts[2], parts[2])} (record {int(parts[1]) + 1})"
    if head in PAPERS and len(parts) > 1:
        table, fields = PAPERS[head]
        return f"{table}.{fields.get(parts[1], parts[1])}"
    if head in SUMMARY:
        return "XML1." + SUMMARY[head] + (f" (item {int(parts[1]) + 1})" if len(parts) > 1 else "")
    return f"XML1.{path}"
