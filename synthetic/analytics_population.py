"""Invented de-identified visits to test a release: crowds that may go out, pairs that must widen, people alone."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas import catalogue, wire


@dataclass
class AnalyticsPopulation:
    """De-identified visits (DeidentifiedVisit) and who is behind them, for checking a release against the truth."""

    visits: list[dict[str, Any]] = field(default_factory=list)
    unique_people: set[str] = field(default_factory=set)  # alone in their birth year x sex x facility x month

    def framed(self) -> list[tuple[bytes, bytes]]:
        """The visits as the worker writes them to visits.deidentified: (pseudonym key, framed value)."""
        return [(v["pseudonym"].encode(), wire.encode(catalogue.DEIDENTIFIED_VISIT, v)) for v in self.visits]


def _person(tag: str) -> str:
    return hashlib.sha256(f"person/{tag}".encode()).hexdigest()


def deidentified_visit(rng: random.Random, person: str, facility: str, birth_year: int, sex: int, month: str,
                       code: str, version: int = 1, visit_ref: str | None = None) -> dict[str, Any]:
    """One DeidentifiedVisit."""
    cost = Decimal(rng.randint(50_000, 9_000_000)) + Decimal(rng.randint(0, 99)) / 100
    return {"pseudonym": person, "visit_ref": visit_ref or f"{rng.getrandbits(256):064x}", "version": version,
            "facility_code": facility, "birth_year": birth_year, "sex": sex, "province_code": facility[:2],
            "visit_type": rng.choice((1, 2, 3)), "admitted_month": month, "treatment_days": rng.randint(0, 9),
            "main_diagnosis_code": code, "secondary_diagnosis_codes": rng.sample(["I10", "E11", "K29.7"], 1),
            "treatment_result": 1, "drug_codes": ["40.17"], "total_cost": cost,
            "insurance_paid": (cost * Decimal("0.8")).quantize(Decimal("0.01"))}


def analytics_population(seed: int, months: list[str], crowd: int = 7, unique: int = 30) -> AnalyticsPopulation:
    """Per month: crowds of children at one hospital (released as they are), pairs of small groups of adults whose
    cells only reach k widened, and people alone in their birth year x sex x facility x month (suppressed)."""
    rng = random.Random(seed)
    found = AnalyticsPopulation()
    for month in months:
        for sex in (1, 2):
            for n in range(crowd):  # one cell, crowd people, some of them twice
                person = _person(f"child/{sex}/{n}")
                for _ in range(1 + n % 2):
                    found.visits.append(deidentified_visit(rng, person, "79001", 2019, sex, month, "J06.9"))
            for group, birth_year in enumerate((1981, 1976)):  # 40-44 and 45-49 at admission: both 40-59 widened
                for n in range(3):
                    found.visits.append(deidentified_visit(rng, _person(f"adult/{sex}/{group}/{n}"), "79002",
                                                           birth_year, sex, month, "I10"))
        for n in range(unique):
            person = _person(f"alone/{month}/{n}")
            found.unique_people.add(person)
            found.visits.append(deidentified_visit(rng, person, rng.choice(("01001", "48003", "79003")),
                                                   1930 + n * 2, 1 + n % 2, month, rng.choice(("E11", "K29.7"))))
    return found
