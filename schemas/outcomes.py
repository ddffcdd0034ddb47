"""What became of a consumed message and of a served request: the outcome names, written only here."""

from __future__ import annotations

from enum import StrEnum

from schemas.dead_letter_reasons import DeadLetterReason

REJECTED_PREFIX = "rejected:"


class Outcome(StrEnum):
    """A visit message's outcome as counted: consumed = accepted + duplicate + pending + rejected."""

    CONSUMED = "consumed"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    PENDING = "pending"  # waiting for a BHYT card mapping
    REPLAYED = "replayed"  # applied before a crash or rebalance; only brings the dedup table up to date


def rejected(reason: DeadLetterReason) -> str:
    """The count name of messages dead-lettered for reason."""
    return f"{REJECTED_PREFIX}{reason}"


def rejected_reason(count_name: str) -> str | None:
    """The reason of a rejected count name, or None for any other outcome."""
    return count_name.removeprefix(REJECTED_PREFIX) if count_name.startswith(REJECTED_PREFIX) else None


class AccessOutcome(StrEnum):
    """What the access ledger records of one request: a year's list or every year, one visit, or nothing."""

    SERVED = "served"
    SERVED_DETAIL = "served_detail"
    REFUSED = "refused"
