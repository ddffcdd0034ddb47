"""pydantic models of a visit event with every domain rule, mirroring visit_event.avsc field for field."""

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

from schemas import rules

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
    personal_id: Text
    patient_code: Text
    full_name: Text
    address: str | None = None
    province_code: str | None = None
    phone: str | None = None
    insurance_card_numbers: list[Text] = Field(min_length=1)

    @field_validator("personal_id")
    @classmethod
    def _personal_id(cls, value: str, info: ValidationInfo) -> str:
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
    treatment_result: int | None = Field(default=None, ge=1, le=9)
    discharge_type: int | None = None
    follow_up_date: Day | None = None
    department_code: str | None = None
    total_cost: Money
    insurance_paid: Money
    patient_paid: Money
    medicines: list[Medicine] = []
    results: list[LabResult] = []

    @field_validator("discharged_at")
    @classmethod
    def _discharged_at(cls, value: str, info: ValidationInfo) -> str:
        admitted = info.data.get("admitted_at")  # absent when admitted_at itself was invalid
        if admitted:
            _apply(rules.check_not_before, rules.parse_minute(value), rules.parse_minute(admitted),
                   "discharge_before_admission", f"admission {admitted}")
        return value

    @property
    def personal_id(self) -> str:
        """The citizen this visit belongs to."""
        return self.patient.personal_id

    @property
    def visit_key(self) -> str:
        """The visit's identity across versions: facility code and MA_LK."""
        return f"{self.facility_code}/{self.visit_code}"

    @property
    def year(self) -> int:
        """Calendar year of admission, the unit a citizen browses by."""
        return int(self.admitted_at[:4])


class Violation(BaseModel):
    """One broken rule: which field, what value, which rule, and a sentence."""

    field: str
    value: str | None
    rule: str
    message: str

    def sentence(self) -> str:
        """The violation as one line for a person."""
        return f"{self.field}={self.value!r}: {self.message} [{self.rule}]"


def violations_of(error: ValidationError) -> list[Violation]:
    """Turn a pydantic ValidationError into named violations."""
    found = []
    for item in error.errors(include_url=False):
        value = item.get("input")
        found.append(
            Violation(
                field=".".join(str(part) for part in item["loc"]) or "event",
                value=None if isinstance(value, dict | list) or value is None else str(value)[:200],
                rule=item["type"],
                message=item["msg"],
            )
        )
    return found
