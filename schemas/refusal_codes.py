"""Why an integration request was served nothing, and a reply's status: the reply contract's codes."""

from __future__ import annotations

from enum import StrEnum


class ReplyStatus(StrEnum):
    """integration_reply_v4.avsc status."""

    OK = "ok"
    REFUSED = "refused"


class RefusalCode(StrEnum):
    """integration_reply_v4.avsc refusal_code: why a request got no health-book data."""

    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    STALE_REQUEST = "stale_request"
    IDENTITY_LEVEL = "identity_level"
    NO_CONSENT = "no_consent"
    REPLAYED_REQUEST = "replayed_request"
    NOT_FOUND = "not_found"
    INTERNAL_ERROR = "internal_error"
    TOO_LARGE = "too_large"
    NO_REPLY = "no_reply"  # an identity platform's own, when no reply came in time; healthbook never sends it


# What the query consumer itself may answer; the rest are an identity platform's own.
ANSWERED_BY_HEALTHBOOK = frozenset(RefusalCode) - {RefusalCode.NO_REPLY}
