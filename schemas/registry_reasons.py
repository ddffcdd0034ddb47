"""Why a registry record or certificate was ignored: the labels counted and logged, written only here."""

from __future__ import annotations

from enum import StrEnum


class IgnoredBecause(StrEnum):
    """Why a clinic-key or identity-card record (or the certificate vouching for it) changed nothing."""

    BAD_CERTIFICATE = "bad_certificate"
    KEY_TYPE = "key_type"
    NO_CERTIFICATE = "no_certificate"
    WRONG_SUBJECT = "wrong_subject"
    OUTSIDE_VALIDITY = "outside_validity"
    CERTIFICATE_REVOKED = "certificate_revoked"
    UNTRUSTED_ISSUER = "untrusted_issuer"
    BAD_SIGNATURE = "bad_signature"
    KEY_NOT_CERTIFIED = "key_not_certified"
    UNSIGNED_TOMBSTONE = "unsigned_tombstone"
    WRONG_RECORD_KEY = "wrong_record_key"
    REVOCATION_UNKNOWN = "revocation_unknown"
    SUPERSEDED = "superseded"  # older than the record already held for the same card or key
    DATED_AHEAD = "dated_ahead"
    RETIRED_SIGNING_FORM = "retired_signing_form"
    UNREADABLE = "unreadable"
    FAILED = "failed"  # healthbook failed on the record: a bug, logged by place
