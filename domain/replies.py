"""The reply a citizen gets, typed and built in one place: a year's visits, one visit in full, or a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from domain.sensitive_diagnoses import DEFAULT, MASKED_NOTE, SensitiveDiagnoses
from schemas import catalogue, wire
from schemas.errors import ContractError

EMPTY_HISTORY = "Chưa có lịch sử khám chữa bệnh theo BHYT"
VISIT_TYPES = {1: "Khám ngoại trú", 2: "Điều trị ngoại trú", 3: "Điều trị nội trú"}  # MA_LOAI_KCB
TREATMENT_RESULTS = {1: "Khỏi", 2: "Đỡ", 3: "Không thay đổi", 4: "Nặng hơn", 5: "Tử vong"}  # KET_QUA_DTRI
NOT_FOUND = "Không tìm thấy lượt khám này trong sổ sức khỏe của bạn (no such visit in your health book)."


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class MedicineLine(_View):
    """A medicine as the citizen reads it (XML2)."""

    name: str
    strength: str | None = None
    dose: str | None = None
    instructions: str | None = None


class ResultLine(_View):
    """A paraclinical result (XML4) with its reference flag."""

    name: str
    value: str | None = None
    unit: str | None = None
    conclusion: str | None = None
    flag: str | None = None
    description: str | None = None


class ServiceLine(_View):
    """A technical service or supply (XML3)."""

    name: str
    quantity: float = 0.0
    result: str | None = None


class ReferralView(_View):
    """Where the citizen was referred (XML13)."""

    to_facility: str | None = None
    reason: str | None = None
    direction: str | None = None
    issued_on: str | None = None


class SensitiveTable(_View):
    """An XML6 or XML15 table, only in the detail of one visit, only to its citizen."""

    table: str
    records: list[dict[str, str]]


class ClinicSignature(_View):
    """Who signed a visit, when, and what anyone needs to verify that signature offline."""

    clinic_code: str
    key_id: str
    signed_at: datetime
    signature: bytes
    public_key: bytes
    certificate: bytes | None = None
    signed_message: bytes | None = None


class VisitView(_View):
    """One visit of the health book as the reply shows it."""

    facility_code: str
    visit_code: str
    visit_type: int
    admitted_at: str
    discharged_at: str
    reason: str | None = None
    diagnosis_codes: list[str]
    diagnosis_names: str
    treatment_result: int | None = None
    medicines: list[MedicineLine] = []
    results: list[ResultLine] = []
    services: list[ServiceLine] = []
    discharge_summary: str | None = None
    referral: ReferralView | None = None
    follow_up_date: str | None = None
    insurance_paid: Decimal | None = None
    patient_paid: Decimal | None = None
    sensitive: list[SensitiveTable] = []
    signed: ClinicSignature | None = None


class Reply(_View):
    """The answer to one integration request (integration_reply_v3.avsc)."""

    request_id: str
    status: str
    refusal_code: str | None = None
    message: str
    year: int | None = None
    visits: list[VisitView] = []
    fhir_bundle: str | None = None

    def encode(self) -> bytes:
        """The framed Avro bytes for the replies topic."""
        return wire.encode(catalogue.INTEGRATION_REPLY, self.model_dump())

    @classmethod
    def decode(cls, raw: bytes) -> Reply:
        """Read a reply from the replies topic; raise ContractError or ValidationError when it is not one."""
        return cls.model_validate(wire.decode(raw, catalogue.INTEGRATION_REPLY))


def read_reply(raw: bytes | None) -> Reply | None:
    """A reply read from the replies topic, or None when the bytes are not one (they are logged, not fatal)."""
    try:
        return Reply.decode(raw)  # type: ignore[arg-type]
    except (ContractError, ValidationError):
        return None


@dataclass(frozen=True)
class BookEntry:
    """One stored visit as the query consumer reads it: its record, signature and, for its detail, sensitive tables."""

    record: dict[str, Any]
    signed: ClinicSignature | None = None
    has_sensitive: bool = False
    sensitive: list[dict[str, Any]] = field(default_factory=list)


def refused(request_id: str, code: str, message: str, year: int | None = None) -> Reply:
    """A reply that serves nothing."""
    return Reply(request_id=request_id, status="refused", refusal_code=code, message=message, year=year)


def year_served(request_id: str, year: int, entries: list[BookEntry],
                sensitive: SensitiveDiagnoses = DEFAULT) -> Reply:
    """The citizen's visits of a year, sensitive diagnoses masked, or the empty-state text when there are none."""
    visits = [listed(entry, sensitive) for entry in entries]
    message = f"{len(visits)} lượt khám chữa bệnh BHYT năm {year}" if visits else EMPTY_HISTORY
    return Reply(request_id=request_id, status="ok", message=message, year=year, visits=visits)


def detail_served(request_id: str, year: int | None, entry: BookEntry) -> Reply:
    """One visit in full, its sensitive tables and its whole signed message included."""
    view = visit_view(entry.record).model_copy(update={
        "sensitive": [SensitiveTable(**s) for s in entry.sensitive], "signed": entry.signed})
    return Reply(request_id=request_id, status="ok", year=year, visits=[view],
                 message=f"Chi tiết lượt khám {entry.record['visit_code']} tại cơ sở {entry.record['facility_code']}")


def listed(entry: BookEntry, sensitive: SensitiveDiagnoses) -> VisitView:
    """A visit as a year's list shows it: masked where sensitive, its signed message only if the list hides nothing.

    The signed message holds the whole visit, sensitive tables included, so a list entry that withholds
    anything carries the signature without it; the visit's detail carries it.
    """
    view = visit_view(entry.record)
    withholds = entry.has_sensitive or sensitive.any_of(view.diagnosis_codes)
    view = masked(view, sensitive)
    signed = entry.signed
    if signed is not None and withholds:
        signed = signed.model_copy(update={"signed_message": None})
    return view.model_copy(update={"signed": signed})


def masked(view: VisitView, sensitive: SensitiveDiagnoses) -> VisitView:
    """A list entry with sensitive diagnoses hidden: codes masked, and the texts that could name them left out."""
    if not sensitive.any_of(view.diagnosis_codes):
        return view
    return view.model_copy(update={"diagnosis_codes": sensitive.mask(view.diagnosis_codes),
                                   "diagnosis_names": MASKED_NOTE, "reason": None, "discharge_summary": None})


def visit_view(record: dict[str, Any]) -> VisitView:
    """The reply's view of a stored visit record (never its sensitive tables, which are stored apart)."""
    referral = record.get("referral")
    follow_up = record.get("follow_up") or {}
    return VisitView(
        facility_code=record["facility_code"], visit_code=record["visit_code"], visit_type=record["visit_type"],
        admitted_at=record["admitted_at"], discharged_at=record["discharged_at"], reason=record.get("reason"),
        diagnosis_codes=[record["main_diagnosis_code"], *record.get("secondary_diagnosis_codes", [])],
        diagnosis_names=record["discharge_diagnosis"], treatment_result=record.get("treatment_result"),
        medicines=[MedicineLine(name=m["name"], strength=m.get("strength"), dose=m.get("dose"),
                                instructions=m.get("instructions")) for m in record.get("medicines", [])],
        results=[ResultLine(name=r["indicator_name"], value=r.get("value"), unit=r.get("unit"),
                            conclusion=r.get("conclusion"), flag=result_flag(r.get("conclusion")),
                            description=r.get("description")) for r in record.get("results", [])],
        services=[ServiceLine(name=s.get("service_name") or s.get("supply_name") or s.get("service_code") or "?",
                              quantity=s.get("quantity", 0.0), result=s.get("result"))
                  for s in record.get("services", [])],
        discharge_summary=_discharge_summary(record),
        referral=None if not referral else ReferralView(
            to_facility=referral.get("to_facility"), reason=referral.get("reason_code"),
            direction=referral.get("direction"), issued_on=referral.get("issued_on")),
        follow_up_date=follow_up.get("appointment_date") or record.get("follow_up_date"),
        insurance_paid=_money(record.get("insurance_paid")), patient_paid=_money(record.get("patient_paid")),
    )


_FLAG_WORDS = (("bình thường", "normal"), ("âm tính", "normal"), ("tăng", "high"), ("cao", "high"),
               ("giảm", "low"), ("thấp", "low"))


def result_flag(conclusion: str | None) -> str | None:
    """high, low or normal when the clinic's conclusion (KET_LUAN) says so in words, else None."""
    text = (conclusion or "").casefold()
    return next((flag for word, flag in _FLAG_WORDS if word in text), None)


def _discharge_summary(record: dict[str, Any]) -> str | None:
    paper = record.get("discharge_paper") or {}
    summary = record.get("record_summary") or {}
    parts = [
        ("Chẩn đoán ra viện", paper.get("diagnosis") or summary.get("discharge_diagnosis")),
        ("Tóm tắt kết quả", summary.get("results_summary")),
        ("Phương pháp điều trị", paper.get("treatment") or summary.get("treatment")),
        ("Ghi chú", paper.get("note") or summary.get("note")),
    ]
    text = "; ".join(f"{label}: {value}" for label, value in parts if value)
    return text or None


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))
