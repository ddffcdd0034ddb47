"""The consent decision for an integration request: who signed it, at what identity level, with what consent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import envelope

MIN_IDENTITY_LEVEL = 2


@dataclass(frozen=True)
class Refusal:
    """Why a request gets no health-book data."""

    code: str
    message: str


def check_request(request: dict[str, Any], trusted: dict[str, bytes]) -> Refusal | None:
    """Return why a decoded request must be refused, or None when it may be served."""
    if not request.get("signature"):
        return Refusal("unsigned", "Yêu cầu không có chữ ký của nền tảng định danh (request is not signed).")
    public_key = trusted.get(request["key_id"])
    if public_key is None:
        return Refusal("unknown_key", f"Khóa ký '{request['key_id']}' không được tin cậy (key not trusted).")
    if not envelope.verify(public_key, request["signature"], envelope.request_signing_input(request)):
        return Refusal("bad_signature", "Chữ ký của yêu cầu không hợp lệ (signature does not verify).")
    if request["identity_level"] < MIN_IDENTITY_LEVEL:
        return Refusal(
            "identity_level",
            f"Cần tài khoản định danh điện tử mức {MIN_IDENTITY_LEVEL} (account is level {request['identity_level']}).",
        )
    if not request["consent_confirmed"]:
        return Refusal("no_consent", "Công dân chưa xác nhận tích hợp (the citizen has not confirmed).")
    return None
