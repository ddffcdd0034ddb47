"""A visit as a subscriber's policy releases it: quasi-identifiers in bands, costs rounded, pseudonyms its own."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from domain.analytics_policy import SubscriberPolicy
from domain.deidentify import pseudonym

COARSE_BAND_YEARS = 20  # the width an age band is widened to when its cell stays under k at window close
TOP_BAND = 90  # 90 and over share one band
COARSE_TOP_BAND = 80

# ICD-10 chapters as their code ranges (WHO 2019), compared on the first three characters of a code.
ICD10_CHAPTERS = (
    ("A00", "B99"), ("C00", "D48"), ("D50", "D89"), ("E00", "E90"), ("F00", "F99"), ("G00", "G99"),
    ("H00", "H59"), ("H60", "H95"), ("I00", "I99"), ("J00", "J99"), ("K00", "K93"), ("L00", "L99"),
    ("M00", "M99"), ("N00", "N99"), ("O00", "O99"), ("P00", "P96"), ("Q00", "Q99"), ("R00", "R99"),
    ("S00", "T98"), ("V01", "Y98"), ("Z00", "Z99"), ("U00", "U85"),
)
# The released record's field of each quasi-identifier a policy can name.
CELL_FIELDS = {"age_band": "age_band", "sex": "sex", "province": "province_code",
               "facility_province": "facility_province", "facility_code": "facility_code",
               "admitted_month": "admitted_month"}


@dataclass(frozen=True)
class Generalised:
    """A visit for one subscriber: as its policy gives it, widened for window close, and both cells."""

    fine: dict[str, Any]
    coarse: dict[str, Any]
    fine_cell: str
    coarse_cell: str


@lru_cache(maxsize=4096)
def subscriber_key(master: bytes, subscriber: str, purpose: str) -> bytes:
    """The key of one subscriber for one purpose ('visit', 'lifetime' or a year): none opens another's pseudonyms."""
    return hmac.digest(master, f"healthbook/analytics/{subscriber}/{purpose}".encode(), hashlib.sha256)


def age_band(age: int, width: int, top: int = TOP_BAND) -> str:
    """The band of an age: 40-44 for width 5, and one band for top and over."""
    age = max(age, 0)
    low = age // width * width
    return f"{top}+" if low >= top else f"{low}-{low + width - 1}"


def diagnosis_chapter(code: str) -> str | None:
    """The ICD-10 chapter of a code, as its range (J00-J99), or None for a code in no chapter."""
    head = code[:3].upper()
    for first, last in ICD10_CHAPTERS:
        if first <= head <= last:
            return f"{first}-{last}"
    return None


def rounded(amount: Decimal, step: int) -> int:
    """An amount in dong, rounded to the nearest multiple of step."""
    return int((amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP)) * step


def generalise(visit: dict[str, Any], policy: SubscriberPolicy, master: bytes) -> Generalised:
    """A de-identified visit (DeidentifiedVisit) as this subscriber receives it."""
    gets = policy.receives
    month = visit["admitted_month"]
    age = int(month[:4]) - visit["birth_year"]
    period = policy.pseudonym_period
    pseudonym_key = subscriber_key(master, policy.name, "lifetime" if period == "lifetime" else month[:4])
    code = visit["main_diagnosis_code"]
    fine: dict[str, Any] = {
        "visit_ref": pseudonym(subscriber_key(master, policy.name, "visit"), visit["visit_ref"]),
        "version": visit["version"],
        "generalised": 0,
        "pseudonym": pseudonym(pseudonym_key, visit["pseudonym"]) if period else None,
        "pseudonym_period": ("lifetime" if period == "lifetime" else month[:4]) if period else None,
        "age_band": age_band(age, policy.age_band_years) if "age_band" in gets else None,
        "sex": visit["sex"] if "sex" in gets else None,
        "province_code": visit["province_code"] if "province" in gets else None,
        "facility_province": visit["facility_code"][:2] if "facility_province" in gets else None,
        "facility_code": visit["facility_code"] if "facility_code" in gets else None,
        "admitted_month": month,
        "visit_type": visit["visit_type"] if "visit_type" in gets else None,
        "treatment_days": visit["treatment_days"] if "treatment_days" in gets else None,
        "main_diagnosis_code": code if "main_diagnosis" in gets else None,
        "diagnosis_chapter": diagnosis_chapter(code) if "diagnosis_chapter" in gets else None,
        "secondary_diagnosis_codes": list(visit["secondary_diagnosis_codes"]) if "secondary_diagnoses" in gets else [],
        "treatment_result": visit["treatment_result"] if "treatment_result" in gets else None,
        "drug_codes": list(visit["drug_codes"]) if "drugs" in gets else [],
        "total_cost_vnd": rounded(visit["total_cost"], policy.cost_rounding_vnd) if "costs" in gets else None,
        "insurance_paid_vnd": rounded(visit["insurance_paid"], policy.cost_rounding_vnd) if "costs" in gets else None,
    }
    coarse = {**fine, "generalised": 1}
    if "age_band" in gets:
        coarse["age_band"] = age_band(age, COARSE_BAND_YEARS, COARSE_TOP_BAND)
    if "facility_code" in gets:  # the code gives way to its province, which it already revealed
        coarse["facility_code"], coarse["facility_province"] = None, visit["facility_code"][:2]
    return Generalised(fine, coarse, cell_of(fine), cell_of(coarse))


def cell_of(record: dict[str, Any]) -> str:
    """The cell a released record falls in: its generalisation and every quasi-identifier (null where not given)."""
    return "|".join([str(record["generalised"]), *(str(record[f]) for f in CELL_FIELDS.values())])
