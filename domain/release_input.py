"""A record of visits.deidentified made ready for every subscriber, or refused with why: the release stage's reader."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from domain.analytics_policy import SubscriberPolicy
from domain.generalise import Generalised, age_band, generalise
from schemas import catalogue, wire
from schemas.errors import ContractError
from schemas.straight_writer import straight_writer

COUNT_BAND_YEARS = 5  # the aggregate feed's age bands
_MONTH = re.compile(r"\d{4}(0[1-9]|1[0-2])")
_FACILITY = re.compile(r"\d{5}")


_write_released = straight_writer(catalogue.RELEASED_VISIT)  # bytes as fastavro's, at a fifth of the cost


class UnreadableVisit(ValueError):
    """A record the release stage cannot use; it is set aside with this reason, never released."""


@dataclass(frozen=True)
class ReadyVisit:
    """A de-identified visit, its age band for the counts, and per subscriber its two forms and their bytes."""

    visit: dict[str, Any]
    count_band: str
    forms: dict[str, tuple[Generalised, bytes, bytes]]


def ready_visit(value: bytes, policies: list[SubscriberPolicy], master: bytes) -> ReadyVisit:
    """Decode a de-identified visit and make each subscriber's records of it; UnreadableVisit says what is wrong."""
    try:
        visit = wire.decode(value, catalogue.DEIDENTIFIED_VISIT)
    except ContractError as exc:
        raise UnreadableVisit(str(exc)) from None
    if not _MONTH.fullmatch(visit["admitted_month"]):
        raise UnreadableVisit(f"admitted_month {visit['admitted_month'][:20]!r} is not yyyyMM")
    if not _FACILITY.fullmatch(visit["facility_code"]):
        raise UnreadableVisit(f"facility_code {visit['facility_code'][:20]!r} is not five digits")
    try:
        forms = {}
        for policy in policies:
            g = generalise(visit, policy, master)
            forms[policy.name] = (g, _write_released(g.fine), _write_released(g.coarse))
    except Exception as exc:
        raise UnreadableVisit(f"cannot be released: {type(exc).__name__}: {exc}"[:500]) from None
    return ReadyVisit(visit, age_band(int(visit["admitted_month"][:4]) - visit["birth_year"], COUNT_BAND_YEARS), forms)
