"""How a visit is keyed, written once: on the visits topic (by person), across versions (by facility, MA_LK)."""

from __future__ import annotations


def partition_key(personal_id: str | None, card_numbers: list[str]) -> str:
    """A visit's key on the visits topic: its personal ID, or `card:` and its first BHYT card number."""
    return personal_id or f"card:{card_numbers[0]}"


def visit_key(facility_code: str, visit_code: str) -> str:
    """A visit's identity across versions (facility code and MA_LK), as the deduplication table keys it."""
    return f"{facility_code}/{visit_code}"
