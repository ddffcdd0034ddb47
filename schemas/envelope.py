"""The signed envelope: canonical signing inputs and Ed25519 signing and verification."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from schemas import catalogue, wire

VISIT_CONTEXT = b"healthbook/signed-visit/v1"
REQUEST_CONTEXT = b"healthbook/integration-request/v2"
LEGACY_REQUEST_CONTEXT = b"healthbook/integration-request/v1"  # retired: its optional tail left presence unsaid
CLINIC_KEY_CONTEXT = b"healthbook/clinic-key/v3"
LEGACY_CLINIC_KEY_CONTEXT = b"healthbook/clinic-key/v2"  # retired: an absent revoked_at signed as -1
IDENTITY_CARD_CONTEXT = b"healthbook/identity-card/v2"
SIGNATURE_BYTES = 64  # every Ed25519 signature
ABSENT, PRESENT = b"\x00", b"\x01"

Field = str | int | bytes | tuple["Field", ...] | None


def canonical(context: bytes, *fields: Field) -> bytes:
    """Length-prefix each field after a context label, so no two field lists sign the same bytes.

    None is an optional field left out (one byte 00); a tuple is an optional group that is there
    (one byte 01, then its fields): an absent value never signs the same bytes as any present one.
    """
    return context + b"".join(_field(value) for value in fields)


def _field(value: Field) -> bytes:
    if value is None:
        return ABSENT
    if isinstance(value, tuple):
        return PRESENT + b"".join(_field(member) for member in value)
    if isinstance(value, int):
        raw = struct.pack(">q", value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
    else:
        raw = value
    return struct.pack(">I", len(raw)) + raw


def optional(value: Any) -> Field:
    """An optional field: absent for None, otherwise present with its value."""
    return None if value is None else (value,)


def visit_signing_input(envelope: dict[str, Any]) -> bytes:
    """The bytes a clinic signs: envelope identity fields and the exact payload bytes."""
    return canonical(
        VISIT_CONTEXT,
        envelope["clinic_code"],
        envelope["key_id"],
        envelope["event_id"],
        envelope["visit_version"],
        to_millis(envelope["signed_at"]),
        envelope["payload"],
    )


def _request_fields(request: dict[str, Any]) -> tuple[Field, ...]:
    """The fields every request form signs first, in order."""
    return (request["request_id"], request["personal_id"], request["year"], request["identity_level"],
            int(bool(request["consent_confirmed"])), to_millis(request["requested_at"]), request["key_id"])


def request_signing_input(request: dict[str, Any]) -> bytes:
    """The bytes the identity platform signs for a version 4 request: every field, detail with its presence."""
    detail = request.get("detail")
    return canonical(REQUEST_CONTEXT, *_request_fields(request),
                     (detail["facility_code"], detail["visit_code"]) if detail else None,
                     request.get("format", "book"), int(bool(request.get("every_year", False))))


def legacy_request_signing_input(request: dict[str, Any]) -> bytes:
    """The retired bytes of version 1-3 requests, accepted only until HEALTHBOOK_LEGACY_SIGNATURES_UNTIL.

    Version 1 requests sign no detail; a version 3 request signs its format and scope only when it asks for
    something else than the book's own list of one year, so version 2 signatures stay valid.
    """
    detail = request.get("detail")
    tail: tuple[Any, ...] = (detail["facility_code"], detail["visit_code"]) if detail else ()
    fmt, every_year = request.get("format", "book"), bool(request.get("every_year", False))
    if fmt != "book" or every_year:
        tail += (fmt, int(every_year))
    return canonical(LEGACY_REQUEST_CONTEXT, *_request_fields(request), *tail)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clinic_key_signing_input(record: dict[str, Any]) -> bytes:
    """The bytes the key registry signs for a version 3 clinic-key entry: every field but its own signature."""
    revoked, issued = record.get("revoked_at"), record.get("issued_at")
    return canonical(
        CLINIC_KEY_CONTEXT, record["clinic_code"], record["key_id"], record.get("algorithm", "ed25519"),
        record["public_key"], to_millis(record["registered_at"]),
        optional(None if revoked is None else to_millis(revoked)), optional(record.get("certificate")),
        optional(None if issued is None else to_millis(issued)),
    )


def legacy_clinic_key_signing_input(record: dict[str, Any]) -> bytes:
    """The retired bytes of version 2 entries, where an absent revoked_at and -1 signed alike."""
    revoked = record.get("revoked_at")
    return canonical(
        LEGACY_CLINIC_KEY_CONTEXT, record["clinic_code"], record["key_id"], record.get("algorithm", "ed25519"),
        record["public_key"], to_millis(record["registered_at"]), -1 if revoked is None else to_millis(revoked),
        record.get("certificate") or b"",
    )


def identity_card_signing_input(record: dict[str, Any]) -> bytes:
    """The bytes the insurance registry signs for a card mapping."""
    return canonical(IDENTITY_CARD_CONTEXT, record["card_number"], record["personal_id"],
                     to_millis(record["updated_at"]))


def to_millis(value: Any) -> int:
    """Epoch milliseconds of an Avro timestamp-millis value (fastavro decodes it to datetime)."""
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        return round(value.timestamp() * 1000)
    # Truncate below the millisecond exactly as fastavro's writer does, or a signed datetime would not verify.
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@lru_cache(maxsize=4096)
def _verify_key(raw: bytes) -> VerifyKey:
    """The key object of raw public-key bytes, parsed once per key rather than once per message."""
    return VerifyKey(raw)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Return whether signature is a valid Ed25519 signature of message by public_key.

    libsodium verifies in about half the time OpenSSL takes here, and is the stricter of the two: it also
    refuses non-canonical signatures and small-order keys, which no honest signer makes.
    """
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _verify_key(bytes(public_key)).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key with the id it is registered under."""

    key_id: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, key_id: str) -> Signer:
        """Create a fresh key; healthbook never ships private keys."""
        return cls(key_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key to register."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """Sign message with this key."""
        return self.private_key.sign(message)


def now_millis() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def encode_visit(event: dict[str, Any]) -> bytes:
    """The framed VisitEvent a clinic signs and carries as the envelope's payload."""
    return wire.encode(catalogue.VISIT_EVENT, event)


def seal_payload(payload: bytes, event: dict[str, Any], clinic_code: str, signer: Signer,
                 signed_at: int | None = None) -> bytes:
    """Sign an already encoded visit payload for the clinic and return the framed envelope bytes."""
    envelope: dict[str, Any] = {
        "clinic_code": clinic_code,
        "key_id": signer.key_id,
        "event_id": event["event_id"],
        "visit_version": event["version"],
        "signed_at": now_millis() if signed_at is None else signed_at,
        "payload": payload,
    }
    envelope["signature"] = signer.sign(visit_signing_input(envelope))
    return wire.encode(catalogue.SIGNED_VISIT, envelope)


def seal_visit(event: dict[str, Any], clinic_code: str, signer: Signer, signed_at: int | None = None) -> bytes:
    """Encode a visit event, sign it for the clinic, and return the framed envelope bytes."""
    return seal_payload(encode_visit(event), event, clinic_code, signer, signed_at)


def _varint_bytes(value: int) -> int:
    """How many bytes Avro's zigzag varint of a long takes."""
    zigzag = (value << 1) ^ (value >> 63)
    return max(1, (zigzag.bit_length() + 6) // 7)


def _text_bytes(value: str) -> int:
    raw = len(value.encode("utf-8"))
    return _varint_bytes(raw) + raw


def sealed_size(payload_bytes: int, event: dict[str, Any], clinic_code: str, key_id: str) -> int:
    """How many bytes seal_payload makes around a payload of payload_bytes, counted without encoding it."""
    return (5 + _text_bytes(clinic_code) + _text_bytes(key_id) + _text_bytes(event["event_id"])
            + _varint_bytes(event["version"]) + _varint_bytes(now_millis())
            + _varint_bytes(SIGNATURE_BYTES) + SIGNATURE_BYTES + _varint_bytes(payload_bytes) + payload_bytes)


def seal_request(request: dict[str, Any], signer: Signer) -> bytes:
    """Sign an integration request as the identity platform and return its framed bytes."""
    body = dict(request, key_id=signer.key_id)
    body["signature"] = signer.sign(request_signing_input(body))
    return wire.encode(catalogue.INTEGRATION_REQUEST, body)
