"""The reply a citizen gets, typed and built in one place: a year's visits, one visit in full, or a refusal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from pydantic import Field, ValidationError

from domain import sentences
from domain.book_entry import BookEntry, ClinicSignature, View, result_flag
from domain.consent import Decision, Refusal, Serve
from domain.fhir_bundle import book_bundle
from domain.registry_trust import organisation_name
from domain.sensitive_visit import SensitivePolicy
from schemas import catalogue, wire
from schemas.errors import ContractError
from schemas.refusal_codes import RefusalCode, ReplyStatus


class MedicineLine(View):
    """A medicine as the citizen reads it (XML2)."""

    name: str
    strength: str | None = None
    dose: str | None = None
    instructions: str | None = None


class ResultLine(View):
    """A paraclinical result (XML4) with its reference flag."""

    name: str
    value: str | None = None
    unit: str | None = None
    conclusion: str | None = None
    flag: str | None = None
    description: str | None = None


class ServiceLine(View):
    """A technical service or supply (XML3)."""

    name: str
    quantity: float = 0.0
    result: str | None = None


class ReferralView(View):
    """Where the citizen was referred (XML13)."""

    to_facility: str | None = None
    reason: str | None = None
    direction: str | None = None
    issued_on: str | None = None


class SensitiveTable(View):
    """An XML6 or XML15 table, only in the detail of one visit, only to its citizen."""

    table: str
    records: list[dict[str, str]]


SEALED_VISIT_TYPE = 0  # MA_LOAI_KCB is 1 to 9: 0 marks a sensitive visit's list entry, which shows only dates and place


class VisitView(View):
    """One visit of the health book as the reply shows it."""

    facility_code: str
    facility_name: str | None = None  # the organisation (O) of the facility's certificate
    visit_code: str
    visit_type: int
    admitted_at: str
    discharged_at: str
    reason: str | None = None
    diagnosis_codes: list[str]
    diagnosis_names: str
    treatment_result: int | None = None
    medicines: list[MedicineLine] = Field(default_factory=list)
    results: list[ResultLine] = Field(default_factory=list)
    services: list[ServiceLine] = Field(default_factory=list)
    discharge_summary: str | None = None
    referral: ReferralView | None = None
    follow_up_date: str | None = None
    insurance_paid: Decimal | None = None
    patient_paid: Decimal | None = None
    sensitive: list[SensitiveTable] = Field(default_factory=list)
    signed: ClinicSignature | None = None

    @property
    def sealed(self) -> bool:
        """Whether this is a sensitive visit's list entry, whose content is only in the visit's detail."""
        return self.visit_type == SEALED_VISIT_TYPE


class Reply(View):
    """The answer to one integration request (integration_reply_v4.avsc)."""

    request_id: str
    status: str
    refusal_code: str | None = None
    message: str
    year: int | None = None
    visits: list[VisitView] = Field(default_factory=list)
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


def refused(request_id: str, code: RefusalCode, message: str, year: int | None = None) -> Reply:
    """A reply that serves nothing."""
    return Reply(request_id=request_id, status=ReplyStatus.REFUSED, refusal_code=code, message=message, year=year)


def refusal(decision: Decision, why: Refusal) -> Reply:
    """The refusal of a request, echoing what could be read of it."""
    return refused(decision.requester.request_id, why.code, why.message, decision.requester.year)


def served(decision: Serve, entries: list[BookEntry], sensitive: SensitivePolicy) -> Reply:
    """What a served request gets: a year or every year as a list, one visit in full, or either as FHIR."""
    request_id, year = decision.request_id, decision.requester.year
    detail = decision.visit is not None
    if decision.fhir:
        bundle = book_bundle(decision.personal_id, entries, detail=detail, sensitive=sensitive)
        message = sentences.FHIR_SERVED.said(count=len(entries)) if entries else sentences.EMPTY_HISTORY.said()
        return Reply(request_id=request_id, status=ReplyStatus.OK, message=message, year=year,
                     fhir_bundle=orjson.dumps(bundle).decode())
    if detail:
        return detail_served(request_id, year, entries[0])
    return year_served(request_id, year, entries, sensitive, every_year=decision.year is None)


def year_served(request_id: str, year: int | None, entries: list[BookEntry], sensitive: SensitivePolicy, *,
                every_year: bool = False) -> Reply:
    """The citizen's visits of a year (or every year), sensitive visits sealed, or the empty-state text."""
    visits = [listed(entry, sensitive) for entry in entries]
    if not visits:
        message = sentences.EMPTY_HISTORY.said()
    elif every_year:
        message = sentences.EVERY_YEAR_SERVED.said(count=len(visits))
    else:
        message = sentences.YEAR_SERVED.said(count=len(visits), year=year)
    return Reply(request_id=request_id, status=ReplyStatus.OK, message=message, year=year, visits=visits)


def detail_served(request_id: str, year: int | None, entry: BookEntry) -> Reply:
    """One visit in full, its sensitive tables and its whole signed message included."""
    view = visit_view(entry.record, facility_name_of(entry)).model_copy(update={
        "sensitive": [SensitiveTable(**s) for s in entry.sensitive], "signed": entry.signed})
    return Reply(request_id=request_id, status=ReplyStatus.OK, year=year, visits=[view],
                 message=sentences.DETAIL_SERVED.said(visit_code=entry.record["visit_code"],
                                                     facility_code=entry.record["facility_code"]))


def fitted(reply: Reply, limit: int) -> tuple[Reply, bytes]:
    """The reply and its bytes, or a too_large refusal's when they would not fit a record of the replies topic.

    A whole book with its signed envelopes can outgrow the topic's limit; sending it would fail every
    time, so the citizen is told to ask for less instead.
    """
    encoded = reply.encode()
    if len(encoded) <= limit:
        return reply, encoded
    too_large = refused(reply.request_id, RefusalCode.TOO_LARGE, sentences.TOO_LARGE.said(), reply.year)
    return too_large, too_large.encode()


# What of a stored record a list row reads: all a store needs to fetch for a visit judged under the list's policy.
SEALED_FIELDS = ("facility_code", "visit_code", "admitted_at", "discharged_at")
LIST_FIELDS = (*SEALED_FIELDS, "visit_type", "reason", "main_diagnosis_code", "secondary_diagnosis_codes",
               "discharge_diagnosis", "treatment_result")


def listed(entry: BookEntry, sensitive: SensitivePolicy) -> VisitView:
    """A visit as a year's list shows it: a history row (when, where, why, what was found), or sealed when sensitive.

    Medicines, results, papers and the signed envelope are in the visit's detail, where the envelope is
    checked and the visit shown from it; a list carries none of them, as the insurance gateway's own
    history rows do not.
    """
    record = entry.record
    if entry.sealed_in_a_list(sensitive):
        return sealed(record, facility_name_of(entry))
    return VisitView(
        facility_code=record["facility_code"], facility_name=facility_name_of(entry), visit_code=record["visit_code"],
        visit_type=record["visit_type"], admitted_at=record["admitted_at"], discharged_at=record["discharged_at"],
        reason=record.get("reason"), diagnosis_codes=_diagnosis_codes(record),
        diagnosis_names=record["discharge_diagnosis"], treatment_result=record.get("treatment_result"))


def facility_name_of(entry: BookEntry) -> str | None:
    """The facility's name as its certificate (stored with the visit) gives it."""
    return organisation_name(entry.signed.certificate) if entry.signed else None


def sealed(record: dict[str, Any], facility_name: str | None = None) -> VisitView:
    """A sensitive visit's list entry: its dates, its facility and a neutral sentence; its detail holds the rest."""
    return VisitView(facility_code=record["facility_code"], facility_name=facility_name,
                     visit_code=record["visit_code"],
                     visit_type=SEALED_VISIT_TYPE, admitted_at=record["admitted_at"],
                     discharged_at=record["discharged_at"], diagnosis_codes=[],
                     diagnosis_names=sentences.SEALED_VISIT.citizen())


def visit_view(record: dict[str, Any], facility_name: str | None = None) -> VisitView:
    """The reply's view of a stored visit record (never its sensitive tables, which are stored apart)."""
    referral = record.get("referral")
    follow_up = record.get("follow_up") or {}
    return VisitView(
        facility_code=record["facility_code"], facility_name=facility_name, visit_code=record["visit_code"],
        visit_type=record["visit_type"],
        admitted_at=record["admitted_at"], discharged_at=record["discharged_at"], reason=record.get("reason"),
        diagnosis_codes=_diagnosis_codes(record),
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
        insurance_paid=_amount(record.get("insurance_paid")), patient_paid=_amount(record.get("patient_paid")),
    )


def _diagnosis_codes(record: dict[str, Any]) -> list[str]:
    return [record["main_diagnosis_code"], *record.get("secondary_diagnosis_codes", [])]


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


def _amount(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))
