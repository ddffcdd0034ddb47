"""A visit as the book stores it for the query side: its record, its clinic signature and its sensitive tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.sensitive_visit import SensitivePolicy, Sensitivity


class View(BaseModel):
    """A frozen part of a reply, its bytes carried as base64 in JSON."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class ClinicSignature(View):
    """Who signed a visit, when, and what anyone needs to verify that signature offline."""

    clinic_code: str
    key_id: str
    signed_at: datetime
    signature: bytes
    public_key: bytes
    certificate: bytes | None = None
    signed_message: bytes | None = None


@dataclass(frozen=True)
class BookEntry:
    """One stored visit as the query consumer reads it: its record, signature and, for its detail, sensitive tables."""

    record: dict[str, Any]
    signed: ClinicSignature | None = None
    has_sensitive: bool = False
    sensitive: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: Sensitivity | None = None  # as judged when the worker checked it

    def sealed_in_a_list(self, policy: SensitivePolicy) -> bool:
        """Whether a list shows this visit sealed: its stored judgement when made under this policy, else judged now.

        A stored "not sensitive" is checked against what was read of the record all the same (for a list,
        only the fields its row shows: about 15 µs a visit): a flag edited in the database by someone
        holding its login never unseals a diagnosis the list would show.
        """
        if policy.judged(self.record, self.sensitivity, has_sensitive_tables=self.has_sensitive):
            return True
        return self.sensitivity is not None and self.sensitivity.under == policy.fingerprint and \
            policy.of_visit(self.record)


_FLAG_WORDS = (("bình thường", "normal"), ("âm tính", "normal"), ("tăng", "high"), ("cao", "high"),
               ("giảm", "low"), ("thấp", "low"))


def result_flag(conclusion: str | None) -> str | None:
    """high, low or normal when the clinic's conclusion (KET_LUAN) says so in words, else None."""
    text = (conclusion or "").casefold()
    return next((flag for word, flag in _FLAG_WORDS if word in text), None)
