"""The one record of what was wrong with a field: which field, what value, which rule, and a sentence."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One broken rule: the field (or table.element) it is about, the value found, the rule's name and why."""

    field: str
    value: str | None
    rule: str
    message: str

    def sentence(self) -> str:
        """The problem as one line for a person, e.g. `discharged_at='2026…': is before admission … [rule]`."""
        value = "" if self.value is None else f"={self.value!r}"
        return f"{self.field}{value}: {self.message} [{self.rule}]"

    def at(self, field: str) -> Problem:
        """The same problem named by another field path (a visit-event path becomes XML table.element)."""
        return replace(self, field=field)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (dead-letter `violations`)."""
        return {"field": self.field, "value": self.value, "rule": self.rule, "message": self.message}


def problems_of(error: ValidationError) -> list[Problem]:
    """Turn a pydantic ValidationError into named problems."""
    found = []
    for item in error.errors(include_url=False):
        value = item.get("input")
        found.append(Problem(
            field=".".join(str(part) for part in item["loc"]) or "event",
            value=None if isinstance(value, dict | list) or value is None else str(value)[:200],
            rule=item["type"],
            message=item["msg"],
        ))
    return found
