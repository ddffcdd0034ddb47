"""Entries of the clinic-key registry topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.envelope import to_millis


@dataclass(frozen=True)
class ClinicKey:
    """A clinic's registered public key and its revocation time, if any."""

    clinic_code: str
    key_id: str
    public_key: bytes
    registered_at_ms: int
    revoked_at_ms: int | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClinicKey:
        """Build from a decoded ClinicKey Avro record."""
        return cls(
            clinic_code=record["clinic_code"],
            key_id=record["key_id"],
            public_key=record["public_key"],
            registered_at_ms=to_millis(record["registered_at"]),
            revoked_at_ms=None if record["revoked_at"] is None else to_millis(record["revoked_at"]),
        )

    def to_record(self) -> dict[str, Any]:
        """The Avro record for the registry topic."""
        return {
            "clinic_code": self.clinic_code,
            "key_id": self.key_id,
            "algorithm": "ed25519",
            "public_key": self.public_key,
            "registered_at": self.registered_at_ms,
            "revoked_at": self.revoked_at_ms,
        }

    @property
    def registry_key(self) -> bytes:
        """The compacted topic's key for this entry."""
        return registry_key(self.clinic_code, self.key_id)


def registry_key(clinic_code: str, key_id: str) -> bytes:
    """Key of a clinic key on the compacted registry topic."""
    return f"{clinic_code}/{key_id}".encode()
