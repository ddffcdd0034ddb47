"""Diagnoses sensitive by content (ICD-10 ranges such as HIV and tuberculosis), wherever they appear in a visit."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CATEGORY = re.compile(r"^([A-Z])(\d{2})")
_RANGE = re.compile(r"^([A-Z])(\d{2})(?:-([A-Z])(\d{2}))?$")


class BadSensitiveRanges(ValueError):
    """HEALTHBOOK_SENSITIVE_DIAGNOSES is not a comma-separated list of ICD-10 categories or ranges."""


@dataclass(frozen=True)
class SensitiveDiagnoses:
    """ICD-10 three-character categories, as ranges; a code is sensitive when its category falls in one."""

    ranges: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> SensitiveDiagnoses:
        """Read 'A15-A19,B20-B24,Z21'; raise BadSensitiveRanges naming the part that is not a category or range."""
        ranges = []
        for part in (p.strip().upper() for p in text.split(",") if p.strip()):
            found = _RANGE.match(part)
            if not found or (found[3] and (found[3], found[4]) < (found[1], found[2])):
                raise BadSensitiveRanges(
                    f"HEALTHBOOK_SENSITIVE_DIAGNOSES: '{part}' is not an ICD-10 category (B20) or an ascending "
                    "range of them (B20-B24)")
            first = found[1] + found[2]
            ranges.append((first, (found[3] + found[4]) if found[3] else first))
        return cls(tuple(ranges))

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, str):
            return False
        found = _CATEGORY.match(code.strip().upper())
        if not found:
            return False
        category = found[1] + found[2]
        return any(first <= category <= last for first, last in self.ranges)

    def categories(self, limit: int) -> tuple[str, ...] | None:
        """Every three-character category the ranges cover, or None when there are more than limit."""
        found: list[str] = []
        for first, last in self.ranges:
            for letter in range(ord(first[0]), ord(last[0]) + 1):
                low = int(first[1:]) if chr(letter) == first[0] else 0
                high = int(last[1:]) if chr(letter) == last[0] else 99
                found += [f"{chr(letter)}{number:02d}" for number in range(low, high + 1)]
                if len(found) > limit:
                    return None
        return tuple(found)
