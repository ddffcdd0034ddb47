"""The decision for one integration request: refuse it with a code, or serve a year, every year or one visit.

Decided once from the bytes, before any I/O: who signed it, at what identity level, with what consent,
and what it asks for. The query consumer then performs what the decision names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain import sentences
from schemas import catalogue, envelope, rules, wire
from schemas.errors import ContractError
from schemas.outcomes import AccessOutcome
from schemas.refusal_codes import RefusalCode
from schemas.text import clean_text

MIN_IDENTITY_LEVEL = 2
FORMATS = ("book", "fhir")


@dataclass(frozen=True)
class Refusal:
    """Why a request gets no health-book data."""

    code: RefusalCode
    message: str


REPLAYED = Refusal(RefusalCode.REPLAYED_REQUEST, sentences.REPLAYED_REQUEST.said())
NOT_FOUND = Refusal(RefusalCode.NOT_FOUND, sentences.NOT_FOUND.said())
INTERNAL_ERROR = Refusal(RefusalCode.INTERNAL_ERROR, sentences.INTERNAL_ERROR.said())
TOO_LARGE = Refusal(RefusalCode.TOO_LARGE, sentences.TOO_LARGE.said())


@dataclass(frozen=True)
class Requester:
    """What could be read of a request, echoed in its reply so the identity platform can match it."""

    request_id: str = ""
    year: int | None = None
    personal_id: str | None = None  # only once the request is well formed: nothing malformed is stored


@dataclass(frozen=True)
class Refuse:
    """The request is answered with a refusal; nothing of the book is read."""

    requester: Requester
    refusal: Refusal


@dataclass(frozen=True)
class Serve:
    """The request may be served: a year's visits, every year's (year None), or one visit, as a list or FHIR."""

    requester: Requester
    personal_id: str
    requested_at: datetime
    year: int | None
    visit: tuple[str, str] | None = None  # (facility code, MA_LK) for one visit's detail
    fhir: bool = False
    source: tuple[int, int] = (0, 0)  # the request's partition and offset on the requests topic

    @property
    def request_id(self) -> str:
        """The request's id."""
        return self.requester.request_id


Decision = Refuse | Serve


@dataclass(frozen=True)
class RequestPolicy:
    """What a request is judged against: the trusted identity-platform keys and how fresh it must be."""

    trusted: dict[str, bytes]
    window: timedelta
    legacy_until: datetime | None = None  # version 1-3 requests (the retired signing form) count until then


def decide(raw: bytes | None, policy: RequestPolicy, now: datetime | None = None,
           source: tuple[int, int] = (0, 0)) -> Decision:
    """Decide one request from the wire at now (default: the clock), read at source (partition, offset)."""
    try:
        request = wire.decode(raw, catalogue.INTEGRATION_REQUEST)  # type: ignore[arg-type]
    except ContractError as exc:
        return Refuse(Requester(), Refusal(RefusalCode.MALFORMED, sentences.UNREADABLE_REQUEST.said(problem=exc)))
    problem = _malformed(request)
    if problem:
        return Refuse(_readable(request), Refusal(RefusalCode.MALFORMED,
                                                  sentences.MALFORMED_REQUEST.said(problem=problem)))
    requester = Requester(request["request_id"], request["year"], request["personal_id"])
    refusal = check_request(request, policy, now, wire.schema_id_of(raw))  # type: ignore[arg-type]
    if refusal:
        return Refuse(requester, refusal)
    detail = request.get("detail")
    return Serve(requester, request["personal_id"], request["requested_at"],
                 None if request["every_year"] and not detail else request["year"],
                 (detail["facility_code"], detail["visit_code"]) if detail else None,
                 request["format"] == "fhir", source)


def check_request(request: dict[str, Any], policy: RequestPolicy, now: datetime | None = None,
                  schema_id: int = catalogue.INTEGRATION_REQUEST.schema_id) -> Refusal | None:
    """Return why a decoded request must be refused, or None when it may be served at now (default: the clock).

    schema_id is the writer's: version 4 requests are signed in the current form, older ones in the
    retired form, counted only until policy.legacy_until.
    """
    now = now or datetime.now(UTC)
    if not request.get("signature"):
        return Refusal(RefusalCode.UNSIGNED, sentences.UNSIGNED_REQUEST.said())
    public_key = policy.trusted.get(request["key_id"])
    if public_key is None:
        return Refusal(RefusalCode.UNKNOWN_KEY, sentences.UNKNOWN_REQUEST_KEY.said(key_id=request["key_id"]))
    if schema_id == catalogue.INTEGRATION_REQUEST.schema_id:
        message = envelope.request_signing_input(request)
    elif policy.legacy_until is not None and now < policy.legacy_until:
        message = envelope.legacy_request_signing_input(request)
    else:
        return Refusal(RefusalCode.BAD_SIGNATURE, sentences.RETIRED_REQUEST_FORM.said(
            schema_id=schema_id, until=f"{policy.legacy_until:%Y-%m-%d}" if policy.legacy_until else "always"))
    if not envelope.verify(public_key, request["signature"], message):
        return Refusal(RefusalCode.BAD_SIGNATURE, sentences.BAD_REQUEST_SIGNATURE.said())
    stale = check_freshness(request["requested_at"], now, policy.window)
    if stale:
        return stale
    if request["identity_level"] < MIN_IDENTITY_LEVEL:
        return Refusal(RefusalCode.IDENTITY_LEVEL,
                       sentences.IDENTITY_LEVEL.said(needed=MIN_IDENTITY_LEVEL, level=request["identity_level"]))
    if not request["consent_confirmed"]:
        return Refusal(RefusalCode.NO_CONSENT, sentences.NO_CONSENT.said())
    return None


def check_freshness(requested_at: datetime, now: datetime, window: timedelta) -> Refusal | None:
    """Refuse a request dated outside now ± window: a captured confirmation cannot be sent again later."""
    drift = requested_at - now
    if abs(drift) <= window:
        return None
    return Refusal(RefusalCode.STALE_REQUEST, sentences.stale_request(requested_at, drift, window))


def _text_problem(name: str, value: str) -> str | None:
    if not 0 < len(value) <= 128 or clean_text(value)[1]:
        return f"{name} must be 1 to 128 characters without control characters"
    return None


def _malformed(request: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a decoded request's fields, before any of them is stored."""
    detail = request.get("detail") or {}
    texts = {"request_id": request["request_id"], **{f"detail.{k}": v for k, v in detail.items()}}
    for name, value in texts.items():
        problem = _text_problem(name, value)
        if problem:
            return problem
    try:
        rules.check_personal_id(request["personal_id"], None, None)
    except rules.RuleBroken as broken:
        return f"personal_id {broken.message}"
    if not _year_ok(request["year"]):
        return "year must be between 1900 and 2100"
    if request["format"] not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}"
    return None


def _year_ok(year: int) -> bool:
    return 1900 <= year <= 2100


def _readable(request: dict[str, Any]) -> Requester:
    """The fields of a malformed request that are themselves well formed, to echo in its refusal."""
    request_id = request["request_id"] if _text_problem("request_id", request["request_id"]) is None else ""
    return Requester(request_id, request["year"] if _year_ok(request["year"]) else None)


def requester_of(raw: bytes | None) -> Requester:
    """What can be read of a request's bytes to address a reply, whatever else is wrong with it."""
    try:
        request = wire.decode(raw, catalogue.INTEGRATION_REQUEST)  # type: ignore[arg-type]
    except ContractError:
        return Requester()
    return _readable(request)


@dataclass(frozen=True)
class AccessEntry:
    """One line of the access log (Decree 13/2023): who asked, for which year, what they got."""

    request_id: str
    personal_id: str | None
    year: int | None
    outcome: AccessOutcome
    refusal_code: RefusalCode | None = None
    visits: int = 0


def access_entry(decision: Decision, served: Refusal | int) -> AccessEntry:
    """The access log's line for a decision once performed: refused, or served with so many visits."""
    who = decision.requester
    if isinstance(served, Refusal):
        return AccessEntry(who.request_id, who.personal_id, who.year, AccessOutcome.REFUSED, served.code)
    assert isinstance(decision, Serve)
    if decision.visit is not None:
        return AccessEntry(who.request_id, who.personal_id, who.year, AccessOutcome.SERVED_DETAIL, None, served)
    return AccessEntry(who.request_id, who.personal_id, decision.year, AccessOutcome.SERVED, None, served)


@dataclass(frozen=True)
class LedgerLine:
    """What answering one request writes: its access line and, for a servable request, its claim and consent.

    The access line is the one for the request served (or refused) as decided; should another record
    hold its request id already, the store logs it refused as replayed instead and records no consent.
    """

    access: AccessEntry
    claim: Serve | None = None
