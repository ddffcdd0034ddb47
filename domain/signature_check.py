"""Checking a reply's visit signature offline, as the identity app does: what anyone holding the reply can verify.

A visit counts as signed only when all of these hold: its signed message decodes; the certificate carried
with it chains to a CA the verifier itself trusts (never one the reply brings along), names the visit's
facility in its subject UID and is valid, unrevoked, at the signing time; the signature over the message
verifies with that certificate's key; the message is this visit; and every field the reply shows is the
field the clinic signed. What is then shown as signed is decoded from the signed bytes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain import sentences
from domain.registry_trust import (
    CLINIC_PREFIX,
    RevocationUnknown,
    TrustAnchors,
    Untrusted,
    organisation_name,
    raw_ed25519,
)
from domain.replies import SensitiveTable, VisitView, visit_view
from schemas import catalogue, envelope, wire
from schemas.errors import ContractError


class SignatureState(StrEnum):
    """What checking one visit's clinic signature found (the page shows each differently)."""

    VERIFIED = "verified"
    NOT_VERIFIABLE = "not_verifiable"  # nothing to check here: a list entry, or a visit kept unsigned
    FAILED = "failed"


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of checking one visit's signature, the sentence the citizen reads, and the signed visit itself."""

    status: SignatureState
    sentence: str
    signed: VisitView | None = None  # decoded from the bytes whose signature checked; set only when VERIFIED


# A year's list entry carries no envelope: its signature is checked where the envelope is, in the visit's detail.
IN_THE_LIST = SignatureCheck(SignatureState.NOT_VERIFIABLE, sentences.SIGNATURE_IN_DETAIL.citizen())


def _failed(sentence: sentences.Sentence, **values: object) -> SignatureCheck:
    return SignatureCheck(SignatureState.FAILED, sentences.SIGNATURE_FAILED.citizen(why=sentence.citizen(**values)))


def check_visit_signature(view: VisitView, anchors: TrustAnchors) -> SignatureCheck:
    """Verify one visit of a reply against the verifier's own trust anchors, and return what the clinic signed."""
    if view.sealed:
        return IN_THE_LIST
    signed = view.signed
    if signed is None or signed.signed_message is None:
        return SignatureCheck(SignatureState.NOT_VERIFIABLE, sentences.SIGNATURE_NOT_KEPT.citizen())
    try:
        sealed = wire.decode(signed.signed_message, catalogue.SIGNED_VISIT)
        payload = wire.decode(sealed["payload"], catalogue.VISIT_EVENT)
        as_signed = signed.model_copy(update={"clinic_code": sealed["clinic_code"], "key_id": sealed["key_id"],
                                              "signed_at": sealed["signed_at"], "signature": sealed["signature"]})
        shown = visit_view(payload).model_copy(update={
            "sensitive": [SensitiveTable(**table) for table in payload.get("sensitive") or []], "signed": as_signed})
    except (ContractError, KeyError, TypeError, ValueError) as exc:
        return _failed(sentences.SIGNED_MESSAGE_UNREADABLE, problem=exc)
    signed_at: datetime = sealed["signed_at"]
    try:
        certificate = anchors.certificate(signed.certificate, CLINIC_PREFIX + sealed["clinic_code"], signed_at)
        key = raw_ed25519(certificate)
    except RevocationUnknown:  # not the clinic's failing: the verifier's own list is stale, so nothing is claimed
        return SignatureCheck(SignatureState.NOT_VERIFIABLE, sentences.REVOCATION_NOT_CURRENT.citizen())
    except Untrusted as why:
        return _failed(sentences.KEY_NOT_CERTIFIED, problem=why.message)
    if (sealed["clinic_code"], payload["facility_code"], payload["visit_code"]) != \
            (view.facility_code, view.facility_code, view.visit_code):
        return _failed(sentences.NOT_THIS_VISIT)
    if not envelope.verify(key, sealed["signature"], envelope.visit_signing_input(sealed)):
        return _failed(sentences.SIGNATURE_BROKEN)
    shown = shown.model_copy(update={"facility_name": organisation_name(signed.certificate)})
    changed = _changed_fields(view, shown)
    if changed:
        return _failed(sentences.CONTENT_NOT_SIGNED, fields=", ".join(changed))
    return SignatureCheck(SignatureState.VERIFIED, sentences.SIGNATURE_VALID.citizen(
        key_id=sealed["key_id"], clinic_code=sealed["clinic_code"]), shown)


def _changed_fields(reply: VisitView, signed: VisitView) -> list[str]:
    """The fields the reply shows otherwise than the clinic signed them, its claims of who signed and when included."""
    theirs, ours = reply.model_dump(exclude={"signed"}), signed.model_dump(exclude={"signed"})
    changed = [name for name in theirs if theirs[name] != ours[name]]
    claims = ("clinic_code", "key_id", "signed_at", "signature")
    assert reply.signed is not None and signed.signed is not None
    return changed + [f"signed.{name}" for name in claims
                      if getattr(reply.signed, name) != getattr(signed.signed, name)]
