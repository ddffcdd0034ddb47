"""An accepted visit as the pipeline reads it: the checked record itself, in the shape of visit_event_v2.avsc."""

from __future__ import annotations

from typing import Any

import orjson

from schemas import keys
from schemas.visit import VisitEvent


def to_json(value: Any) -> str:
    """JSON text as the book stores it: money (Decimal) as its decimal string, as pydantic writes it."""
    return to_json_bytes(value).decode()


def to_json_bytes(value: Any) -> bytes:
    """to_json's text as UTF-8."""
    return orjson.dumps(value, default=str)


class Visit:
    """A visit that passed every rule, read from its record without building a model of it."""

    __slots__ = ("_book_json", "clean_json", "record")

    def __init__(self, record: dict[str, Any], book_json: str | None = None, clean_json: bytes | None = None) -> None:
        self.record = record
        self._book_json = book_json
        # book_json as UTF-8, given only where it was checked to be all NFC with no control character
        self.clean_json = clean_json

    @classmethod
    def of_model(cls, event: VisitEvent) -> Visit:
        """The view of a visit the full pydantic model accepted (after putting its text in NFC)."""
        return cls(event.model_dump())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Visit) and self.record == other.record

    def __repr__(self) -> str:
        return f"Visit({self.visit_key} v{self.version})"

    @property
    def event_id(self) -> str:
        """The clinic's id of this version of the visit."""
        return self.record["event_id"]

    @property
    def version(self) -> int:
        """The visit's version; a higher one replaces a lower."""
        return self.record["version"]

    @property
    def facility_code(self) -> str:
        """MA_CSKCB of the clinic."""
        return self.record["facility_code"]

    @property
    def visit_code(self) -> str:
        """MA_LK, the clinic's code of the visit."""
        return self.record["visit_code"]

    @property
    def admitted_at(self) -> str:
        """NGAY_VAO as yyyyMMddHHmm."""
        return self.record["admitted_at"]

    @property
    def discharged_at(self) -> str:
        """NGAY_RA as yyyyMMddHHmm."""
        return self.record["discharged_at"]

    @property
    def patient(self) -> dict[str, Any]:
        """The XML1 person fields."""
        return self.record["patient"]

    @property
    def diagnosis_codes(self) -> list[str]:
        """The main ICD-10 code, then the secondary ones."""
        return [self.record["main_diagnosis_code"], *self.record["secondary_diagnosis_codes"]]

    @property
    def personal_id(self) -> str | None:
        """The citizen this visit belongs to; None until resolved from the BHYT card."""
        return self.record["patient"]["personal_id"]

    @property
    def card_number(self) -> str:
        """The first BHYT card number, by which a visit without personal ID is resolved."""
        return self.record["patient"]["insurance_card_numbers"][0]

    @property
    def partition_key(self) -> str:
        """The message key: the personal ID, or the BHYT card while the person is not yet resolved."""
        return keys.partition_key(self.personal_id, self.record["patient"]["insurance_card_numbers"])

    @property
    def visit_key(self) -> str:
        """The visit's identity across versions: facility code and MA_LK."""
        return keys.visit_key(self.record["facility_code"], self.record["visit_code"])

    @property
    def year(self) -> int:
        """Calendar year of admission, the unit a citizen browses by."""
        return int(self.record["admitted_at"][:4])

    def with_person(self, personal_id: str) -> Visit:
        """The same visit assigned to a citizen (resolved from its BHYT card)."""
        return Visit({**self.record, "patient": {**self.record["patient"], "personal_id": personal_id}})

    def book_json(self) -> str:
        """The record as the book keeps it: everything but the sensitive tables, which have a column of their own."""
        if self._book_json is None:
            self._book_json = to_json({k: v for k, v in self.record.items() if k != "sensitive"})
        return self._book_json

    def sensitive_json(self) -> str:
        """The sensitive tables (XML9-XML12 kind) as JSON."""
        return to_json(self.record["sensitive"]) if self.record["sensitive"] else "[]"
