"""Checking a reply's visit signature offline: what anyone holding the reply can do without healthbook."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from domain.registry_trust import Untrusted, raw_ed25519
from domain.replies import VisitView
from schemas import catalogue, envelope, wire
from schemas.errors import ContractError


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one visit's clinic signature: valid, invalid, in_detail or unsigned, with a sentence."""

    status: str
    sentence: str


def check_visit_signature(view: VisitView) -> SignatureCheck:
    """Verify the visit's signed message with the key the reply names, and that the message is this visit."""
    signed = view.signed
    if signed is None:
        return SignatureCheck("unsigned", "Lượt khám này được ghi trước khi sổ lưu chữ ký số kèm theo.")
    if signed.signed_message is None:
        return SignatureCheck("in_detail", "Chữ ký số được kiểm tra khi mở chi tiết lượt khám.")
    try:
        sealed = wire.decode(signed.signed_message, catalogue.SIGNED_VISIT)
        payload = wire.decode(sealed["payload"], catalogue.VISIT_EVENT)
    except ContractError as exc:
        return SignatureCheck("invalid", f"Thông điệp đã ký không đọc được ({exc}).")
    if signed.certificate is not None and _certificate_key(signed.certificate) != bytes(signed.public_key):
        return SignatureCheck("invalid", "Khóa công khai không khớp với chứng thư số của cơ sở.")
    claims = ((sealed["clinic_code"], signed.clinic_code), (sealed["key_id"], signed.key_id),
              (sealed["signature"], signed.signature), (payload["facility_code"], view.facility_code),
              (payload["visit_code"], view.visit_code))
    if any(a != b for a, b in claims):
        return SignatureCheck("invalid", "Thông điệp đã ký không phải của lượt khám này.")
    if not envelope.verify(signed.public_key, sealed["signature"], envelope.visit_signing_input(sealed)):
        return SignatureCheck("invalid", "Chữ ký số KHÔNG hợp lệ: nội dung đã bị thay đổi sau khi ký.")
    return SignatureCheck("valid", f"Chữ ký số hợp lệ (khóa {signed.key_id} của cơ sở {signed.clinic_code}).")


def _certificate_key(der: bytes) -> bytes | None:
    """The raw Ed25519 key a DER certificate certifies, or None when it is not one."""
    try:
        return raw_ed25519(x509.load_der_x509_certificate(der))
    except (ValueError, Untrusted):
        return None
