"""Checking a reply's visit signature offline: what anyone holding the reply can do without healthbook."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from domain import sentences
from domain.registry_trust import Untrusted, raw_ed25519
from domain.replies import VisitView
from schemas import catalogue, envelope, wire
from schemas.errors import ContractError


class SignatureState(StrEnum):
    """What checking one visit's clinic signature found (the page styles each differently)."""

    VALID = "valid"
    INVALID = "invalid"
    IN_DETAIL = "in_detail"  # a list entry that withholds its signed message: checked in the visit's detail
    NOT_KEPT = "unsigned"  # written before the book kept signed messages


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one visit's clinic signature, with the sentence the citizen reads."""

    status: SignatureState
    sentence: str


def check_visit_signature(view: VisitView) -> SignatureCheck:
    """Verify the visit's signed message with the key the reply names, and that the message is this visit."""
    signed = view.signed
    if signed is None:
        return SignatureCheck(SignatureState.NOT_KEPT, sentences.SIGNATURE_NOT_KEPT.citizen())
    if signed.signed_message is None:
        return SignatureCheck(SignatureState.IN_DETAIL, sentences.SIGNATURE_IN_DETAIL.citizen())
    try:
        sealed = wire.decode(signed.signed_message, catalogue.SIGNED_VISIT)
        payload = wire.decode(sealed["payload"], catalogue.VISIT_EVENT)
    except ContractError as exc:
        return SignatureCheck(SignatureState.INVALID, sentences.SIGNED_MESSAGE_UNREADABLE.citizen(problem=exc))
    if signed.certificate is not None and _certificate_key(signed.certificate) != bytes(signed.public_key):
        return SignatureCheck(SignatureState.INVALID, sentences.KEY_NOT_CERTIFIED.citizen())
    claims = ((sealed["clinic_code"], signed.clinic_code), (sealed["key_id"], signed.key_id),
              (sealed["signature"], signed.signature), (payload["facility_code"], view.facility_code),
              (payload["visit_code"], view.visit_code))
    if any(a != b for a, b in claims):
        return SignatureCheck(SignatureState.INVALID, sentences.NOT_THIS_VISIT.citizen())
    if not envelope.verify(signed.public_key, sealed["signature"], envelope.visit_signing_input(sealed)):
        return SignatureCheck(SignatureState.INVALID, sentences.SIGNATURE_BROKEN.citizen())
    return SignatureCheck(SignatureState.VALID, sentences.SIGNATURE_VALID.citizen(key_id=signed.key_id,
                                                                            clinic_code=signed.clinic_code))


def _certificate_key(der: bytes) -> bytes | None:
    """The raw Ed25519 key a DER certificate certifies, or None when it is not one."""
    try:
        return raw_ed25519(x509.load_der_x509_certificate(der))
    except (ValueError, Untrusted):
        return None
