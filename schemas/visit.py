"""pydantic models of a visit event with every domain rule, mirroring visit_event_v2.avsc field for field."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas import keys, rules
from schemas.problems import Problem, problems_of
from schemas.text import clean_text

Text = Annotated[str, StringConstraints(min_length=1)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]


def _apply(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except rules.RuleBroken as broken:
        raise PydanticCustomError(broken.rule, broken.message) from None


def _rule(check: Any) -> AfterValidator:
    """A pydantic validator that applies one rule of schemas.rules and keeps the value."""

    def run(value: str) -> str:
        _apply(check, value)
        return value

    return AfterValidator(run)


Minute = Annotated[str, _rule(rules.parse_minute)]
Day = Annotated[str, _rule(rules.parse_day)]
BirthDate = Annotated[str, _rule(rules.parse_birth_date)]
FacilityCode = Annotated[str, _rule(rules.check_facility_code)]
Icd10 = Annotated[str, _rule(rules.check_icd10)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Patient(_Model):
    """The person a visit belongs to (XML1)."""

    birth_date: BirthDate
    sex: int = Field(ge=1, le=3)
    personal_id: Text | None = None
    patient_code: Text
    full_name: Text
    address: str | None = None
    province_code: str | None = None
    phone: str | None = None
    insurance_card_numbers: list[Text] = Field(min_length=1)
    blood_type: str | None = None
    registered_facility: str | None = None
    card_valid_from: str | None = None
    card_valid_to: str | None = None

    @field_validator("personal_id")
    @classmethod
    def _personal_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        birth = info.data.get("birth_date")
        year = int(birth[:4]) if birth else None
        _apply(rules.check_personal_id, value, year, info.data.get("sex"))
        return value


class Medicine(_Model):
    """One XML2 medicine line."""

    line_no: int = Field(ge=0)
    drug_code: Text
    name: Text
    unit: str | None = None
    strength: str | None = None
    route: str | None = None
    dose: str | None = None
    instructions: str | None = None
    quantity: float = Field(ge=0)
    prescriber_code: str | None = None
    ordered_at: Minute
    administered_at: Minute | None = None
    extra: dict[str, str] = {}


class LabResult(_Model):
    """One XML4 paraclinical result."""

    line_no: int = Field(ge=0)
    service_code: Text
    indicator_code: str | None = None
    indicator_name: Text
    value: str | None = None
    unit: str | None = None
    description: str | None = None
    conclusion: str | None = None
    result_at: Minute | None = None
    reader_code: str | None = None
    extra: dict[str, str] = {}


class Service(_Model):
    """One XML3 technical service or supply."""

    line_no: int = Field(ge=0)
    service_code: str | None = None
    service_name: str | None = None
    supply_code: str | None = None
    supply_name: str | None = None
    quantity: float = Field(default=0.0, ge=0)
    ordered_at: Minute | None = None
    result_at: Minute | None = None
    result: str | None = None
    performed_by: str | None = None
    extra: dict[str, str] = {}


class ProgressNote(_Model):
    """One XML5 clinical progress note."""

    line_no: int = Field(ge=0)
    clinical_course: str | None = None
    stage: str | None = None
    consultation: str | None = None
    surgery: str | None = None
    noted_at: Minute | None = None
    noted_by: str | None = None
    extra: dict[str, str] = {}


class DischargePaper(_Model):
    """The XML7 discharge paper."""

    archive_no: str | None = None
    discharge_department: str | None = None
    admitted_at: Minute | None = None
    discharged_at: Minute | None = None
    diagnosis: str | None = None
    treatment: str | None = None
    note: str | None = None
    doctor_name: str | None = None
    issued_on: Day | None = None
    extra: dict[str, str] = {}


class RecordSummary(_Model):
    """The XML8 medical-record summary."""

    admission_diagnosis: str | None = None
    discharge_diagnosis: str | None = None
    clinical_course: str | None = None
    results_summary: str | None = None
    treatment: str | None = None
    treatment_result: str | None = None
    note: str | None = None
    extra: dict[str, str] = {}


class Referral(_Model):
    """The XML13 referral paper."""

    referral_no: str | None = None
    from_facility: str | None = None
    to_facility: str | None = None
    reason_code: str | None = None
    diagnosis: str | None = None
    clinical_course: str | None = None
    results_summary: str | None = None
    treatment: str | None = None
    direction: str | None = None
    issued_on: Day | None = None
    extra: dict[str, str] = {}


class FollowUp(_Model):
    """The XML14 follow-up appointment."""

    appointment_no: str | None = None
    appointment_date: Day | None = None
    diagnosis: str | None = None
    doctor_code: str | None = None
    issued_on: Day | None = None
    extra: dict[str, str] = {}


class Document(_Model):
    """A table kept verbatim: records as maps of standard element name to text."""

    table: Text
    records: list[dict[str, str]]


class VisitEvent(_Model):
    """One insured clinic visit: the XML1 summary, XML2 medicines and XML4 results."""

    event_id: Text
    version: int = Field(ge=0)
    facility_code: FacilityCode
    visit_code: Text
    patient: Patient
    visit_type: int = Field(ge=1, le=99)
    admitted_at: Minute
    discharged_at: Minute
    reason: str | None = None
    admission_diagnosis: str | None = None
    discharge_diagnosis: Text
    main_diagnosis_code: Icd10
    secondary_diagnosis_codes: list[Icd10] = []
    traditional_diagnosis_codes: list[str] = []
    procedure_codes: list[str] = []
    treatment_result: int | None = Field(default=None, ge=1, le=9)
    discharge_type: int | None = None
    follow_up_date: Day | None = None
    department_code: str | None = None
    inpatient_at: Minute | None = None
    treatment_days: int | None = Field(default=None, ge=0)
    weight_kg: float | None = Field(default=None, ge=0)
    settlement_year: int | None = None
    settlement_month: int | None = Field(default=None, ge=1, le=12)
    total_cost: Money
    insurance_paid: Money
    patient_paid: Money
    medicines: list[Medicine] = []
    results: list[LabResult] = []
    services: list[Service] = []
    progress_notes: list[ProgressNote] = []
    discharge_paper: DischargePaper | None = None
    record_summary: RecordSummary | None = None
    referral: Referral | None = None
    follow_up: FollowUp | None = None
    certificates: list[Document] = []
    sensitive: list[Document] = []
    extra: dict[str, str] = {}

    @field_validator("discharged_at")
    @classmethod
    def _discharged_at(cls, value: str, info: ValidationInfo) -> str:
        admitted = info.data.get("admitted_at")  # absent when admitted_at itself was invalid
        if admitted:
            _apply(rules.check_not_before, rules.parse_minute(value), rules.parse_minute(admitted),
                   "discharge_before_admission", f"admission {admitted}")
        return value

    @property
    def personal_id(self) -> str | None:
        """The citizen this visit belongs to; None until resolved from the BHYT card."""
        return self.patient.personal_id

    @property
    def partition_key(self) -> str:
        """The message key: the personal ID, or the BHYT card while the person is not yet resolved."""
        return keys.partition_key(self.personal_id, self.patient.insurance_card_numbers)

    @property
    def card_number(self) -> str:
        """The first BHYT card number, by which a visit without personal ID is resolved."""
        return self.patient.insurance_card_numbers[0]

    @property
    def visit_key(self) -> str:
        """The visit's identity across versions: facility code and MA_LK."""
        return keys.visit_key(self.facility_code, self.visit_code)

    @property
    def year(self) -> int:
        """Calendar year of admission, the unit a citizen browses by."""
        return int(self.admitted_at[:4])


def read_visit(record: dict[str, Any]) -> VisitEvent | list[Problem]:
    """A visit event from a decoded or hand-written record, text in NFC; or every problem that stops it."""
    cleaned, problems = clean_text(record)
    try:
        event = VisitEvent.model_validate(cleaned)
    except ValidationError as exc:
        return problems + problems_of(exc)
    return problems or event
