"""The validation decision for one message of the visits topic: accepted visit or rejection with reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from domain.keyring import ClinicKey, KeyLookupFailed, Keyring
from domain.sensitive_visit import Sensitivity
from schemas import catalogue, envelope, fast_check, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.errors import MalformedMessage, UnsupportedSchema, without_content
from schemas.problems import Problem
from schemas.visit import read_visit
from schemas.visit_record import Visit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SigningWindow:
    """How far a visit's signed_at may lie from the broker's append time: behind by max_delay, ahead by max_ahead."""

    max_delay_ms: int
    max_ahead_ms: int

    def refusal(self, signed_at_ms: int, appended_at_ms: int) -> str | None:
        """Why this signing time cannot be believed for a message the broker appended then, or None."""
        if signed_at_ms > appended_at_ms + self.max_ahead_ms:
            return (f"signed_at is {(signed_at_ms - appended_at_ms) / 1000:.0f} s after the broker appended the "
                    f"message (at most {self.max_ahead_ms / 1000:.0f} s allowed): check the clinic's clock, re-sign "
                    "and publish again")
        if signed_at_ms < appended_at_ms - self.max_delay_ms:
            return (f"signed_at is {(appended_at_ms - signed_at_ms) / 1000:.0f} s before the broker appended the "
                    f"message (at most {self.max_delay_ms / 1000:.0f} s allowed): a signature is judged by when "
                    "it reached the broker, so a backdated signature cannot escape a revocation; re-sign and "
                    "publish again")
        return None


@dataclass(slots=True)  # not frozen, as VisitRow: built for every visit; nothing changes it afterwards
class Accepted:
    """A verified, rule-abiding visit with the signature that vouches for it."""

    event: Visit
    key_id: str
    signature: bytes
    signed_at_ms: int
    signed_message: bytes = b""  # the envelope exactly as published, so anyone can verify it again offline
    public_key: bytes = b""  # the registered key it verified with
    certificate: bytes | None = None  # that key's DER certificate, when the clinic registered one
    sensitivity: Sensitivity | None = None  # judged once, where the worker checks it, for the book and analytics


@dataclass(frozen=True)
class Rejected:
    """A message refused with a machine code, a sentence and, for rule failures, each problem."""

    code: DeadLetterReason
    reason: str
    problems: list[Problem] = field(default_factory=list)
    clinic_code: str | None = None
    event_id: str | None = None


def validate(key: bytes | None, value: bytes | None, keyring: Keyring, appended_at_ms: int | None = None,
             window: SigningWindow | None = None) -> Accepted | Rejected:
    """Decode, verify and check one visits-topic message; its signing time too, given appended_at_ms and window."""
    try:
        env = wire.decode(value, catalogue.SIGNED_VISIT)
    except MalformedMessage as exc:
        return Rejected(DeadLetterReason.MALFORMED, f"not a signed visit envelope: {exc}")
    except UnsupportedSchema as exc:
        return Rejected(DeadLetterReason.UNSUPPORTED_SCHEMA, str(exc))
    clinic, event_id, signed_at_ms = env["clinic_code"], env["event_id"], envelope.to_millis(env["signed_at"])
    clinic_key = _signature_refusal(env, keyring, signed_at_ms)
    if isinstance(clinic_key, tuple):
        return Rejected(clinic_key[0], clinic_key[1], clinic_code=clinic, event_id=event_id)
    late = None if appended_at_ms is None or window is None else window.refusal(signed_at_ms, appended_at_ms)
    if late:
        return Rejected(DeadLetterReason.SIGNED_AT_OUT_OF_RANGE, late, clinic_code=clinic, event_id=event_id)
    checked = _signed_event(env)
    if isinstance(checked, tuple):
        code, reason, problems = checked
        return Rejected(code, reason, problems, clinic, event_id)
    if key is None or key.decode("utf-8", "replace") != checked.partition_key:
        return Rejected(
            DeadLetterReason.WRONG_KEY,
            "message key must be the patient's personal ID (or 'card:' and the BHYT card number when the "
            "record has none) so one citizen's visits share a partition",
            [], clinic, event_id,
        )
    return Accepted(checked, env["key_id"], env["signature"], signed_at_ms, bytes(value),
                    clinic_key.public_key, clinic_key.certificate)


def _signature_refusal(env: dict[str, Any], keyring: Keyring, signed_at_ms: int
                       ) -> tuple[DeadLetterReason, str] | ClinicKey:
    """Why the envelope's signature cannot vouch for it, or the registered key that verifies it."""
    clinic = env["clinic_code"]
    try:
        clinic_key = keyring.key_for(clinic, env["key_id"], signed_at_ms)
    except KeyLookupFailed as exc:
        return exc.code, exc.message
    if not envelope.verify(clinic_key.public_key, env["signature"], envelope.visit_signing_input(env)):
        return DeadLetterReason.BAD_SIGNATURE, (
            f"signature does not verify with key '{env['key_id']}' of clinic {clinic}: "
            "the message was altered or signed with another key")
    return clinic_key


def _signed_event(env: dict[str, Any]) -> Visit | tuple[DeadLetterReason, str, list[Problem]]:
    """The visit event inside a verified envelope, or why it cannot be one."""
    try:
        record = wire.decode(env["payload"], catalogue.VISIT_EVENT)
    except MalformedMessage as exc:
        return DeadLetterReason.MALFORMED, f"signed payload is not a visit event: {exc}", []
    except UnsupportedSchema as exc:
        return DeadLetterReason.UNSUPPORTED_SCHEMA, str(exc), []
    mismatch = _envelope_mismatch(env, record)
    if mismatch:
        return DeadLetterReason.CLINIC_MISMATCH, mismatch, []
    fast = fast_check.accepted(record, decoded=True)
    if fast is not None:
        return fast
    event = read_visit(record)  # the full model decides, and names every broken rule
    if isinstance(event, list):
        return DeadLetterReason.INVALID_EVENT, f"{len(event)} rule(s) broken: " + "; ".join(
            p.sentence() for p in event), event
    return Visit.of_model(event)


def _envelope_mismatch(env: dict[str, Any], record: dict[str, Any]) -> str | None:
    if env["clinic_code"] != record["facility_code"]:
        return (
            f"clinic {env['clinic_code']} signed a visit of facility {record['facility_code']}; "
            "a clinic may only sign its own visits"
        )
    if env["event_id"] != record["event_id"] or env["visit_version"] != record["version"]:
        return "envelope event_id/visit_version differ from the signed event's"
    return None


def validate_safely(key: bytes | None, value: bytes | None, keyring: Keyring, appended_at_ms: int | None = None,
                    window: SigningWindow | None = None) -> Accepted | Rejected:
    """validate(), turning a bug met on one message into a rejection so the message is kept, not lost."""
    try:
        return validate(key, value, keyring, appended_at_ms, window)
    except Exception as exc:
        log.error("validation failed unexpectedly: %s", without_content(exc))
        return Rejected(DeadLetterReason.INTERNAL_ERROR,
                        f"healthbook failed on this message ({type(exc).__name__}: {exc}); retry it once fixed")
