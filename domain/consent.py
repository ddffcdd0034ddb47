"""The consent decision for an integration request: who signed it, at what identity level, with what consent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import catalogue, envelope, rules, wire
from schemas.errors import ContractError
from schemas.text import clean_text

MIN_IDENTITY_LEVEL = 2
FORMATS = ("book", "fhir")
DEFAULT_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Refusal:
    """Why a request gets no health-book data."""

    code: str
    message: str


def check_request(request: dict[str, Any], trusted: dict[str, bytes], now: datetime | None = None,
                  window: timedelta = DEFAULT_WINDOW) -> Refusal | None:
    """Return why a decoded request must be refused, or None when it may be served at now (default: the clock)."""
    if not request.get("signature"):
        return Refusal("unsigned", "Yêu cầu không có chữ ký của nền tảng định danh (request is not signed).")
    public_key = trusted.get(request["key_id"])
    if public_key is None:
        return Refusal("unknown_key", f"Khóa ký '{request['key_id']}' không được tin cậy (key not trusted).")
    if not envelope.verify(public_key, request["signature"], envelope.request_signing_input(request)):
        return Refusal("bad_signature", "Chữ ký của yêu cầu không hợp lệ (signature does not verify).")
    stale = check_freshness(request["requested_at"], now or datetime.now(UTC), window)
    if stale:
        return stale
    if request["identity_level"] < MIN_IDENTITY_LEVEL:
        return Refusal(
            "identity_level",
            f"Cần tài khoản định danh điện tử mức {MIN_IDENTITY_LEVEL} (account is level {request['identity_level']}).",
        )
    if not request["consent_confirmed"]:
        return Refusal("no_consent", "Công dân chưa xác nhận tích hợp (the citizen has not confirmed).")
    return None


def check_freshness(requested_at: datetime, now: datetime, window: timedelta) -> Refusal | None:
    """Refuse a request dated outside now ± window: a captured confirmation cannot be sent again later."""
    drift = requested_at - now
    if abs(drift) <= window:
        return None
    side = "in the future" if drift > timedelta(0) else "ago"
    return Refusal("stale_request",
                   f"Yêu cầu đã hết hạn hoặc sai thời điểm; vui lòng xác nhận lại (requested_at "
                   f"{requested_at:%Y-%m-%dT%H:%M:%SZ} is {_span(abs(drift))} {side}; "
                   f"the window is ±{_span(window)}).")


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 86400} d" if seconds >= 86400 else f"{seconds // 60} min {seconds % 60} s"


REPLAYED = Refusal("replayed_request",
                   "Yêu cầu này đã được xử lý; vui lòng xác nhận lại (request_id was already served).")


def read_request(raw: bytes | None, trusted: dict[str, bytes], now: datetime | None = None,
                 window: timedelta = DEFAULT_WINDOW) -> tuple[dict[str, Any] | None, Refusal | None]:
    """Decode and decide a request from the wire: (request, None) to serve, (request or None, refusal) to refuse.

    The request is None when it cannot be read or its fields are malformed, so nothing of it is stored.
    """
    try:
        request = wire.decode(raw, catalogue.INTEGRATION_REQUEST)  # type: ignore[arg-type]
    except ContractError as exc:
        return None, Refusal("malformed", f"Yêu cầu không đọc được ({exc}).")
    problem = _malformed(request)
    if problem:
        return None, Refusal("malformed", f"Yêu cầu không hợp lệ ({problem}).")
    return request, check_request(request, trusted, now, window)


def _malformed(request: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a decoded request's fields, before any of them is stored."""
    detail = request.get("detail") or {}
    texts = {"request_id": request["request_id"], **{f"detail.{k}": v for k, v in detail.items()}}
    for name, value in texts.items():
        if not 0 < len(value) <= 128 or clean_text(value)[1]:
            return f"{name} must be 1 to 128 characters without control characters"
    try:
        rules.check_personal_id(request["personal_id"], None, None)
    except rules.RuleBroken as broken:
        return f"personal_id {broken.message}"
    if not 1900 <= request["year"] <= 2100:
        return "year must be between 1900 and 2100"
    if request["format"] not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}"
    return None
