"""Why a visit message went to the dead-letter topic: the reason codes of the contract, written only here."""

from __future__ import annotations

from enum import StrEnum


class DeadLetterReason(StrEnum):
    """The machine-readable reason of a dead letter (dead_letter_v1.avsc reason_code)."""

    MALFORMED = "malformed"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    UNKNOWN_CLINIC = "unknown_clinic"
    UNKNOWN_KEY = "unknown_key"
    KEY_REVOKED = "key_revoked"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_REVOKED = "certificate_revoked"
    REVOCATION_UNKNOWN = "revocation_unknown"
    SIGNED_AT_OUT_OF_RANGE = "signed_at_out_of_range"
    BAD_SIGNATURE = "bad_signature"
    CLINIC_MISMATCH = "clinic_mismatch"
    WRONG_KEY = "wrong_key"
    INVALID_EVENT = "invalid_event"
    IDENTITY_MISMATCH = "identity_mismatch"
    REFUSED_BY_DATABASE = "refused_by_database"
    INTERNAL_ERROR = "internal_error"


# Rejections that a registry record published a moment ago may turn into acceptance.
RETRY_AFTER_REGISTRY_CATCH_UP = frozenset({DeadLetterReason.UNKNOWN_CLINIC, DeadLetterReason.UNKNOWN_KEY})
