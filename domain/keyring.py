"""The clinic-key registry: its entries, and the keyring every reader builds from the compacted topic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas import catalogue, wire
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


class KeyLookupFailed(Exception):
    """The envelope's clinic or key cannot vouch for it; code is the dead-letter reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Keyring:
    """Clinic keys by (clinic code, key id), applied from registry records in topic order."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], ClinicKey] = {}
        self._clinics: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one registry message: a key record, or a tombstone that removes it."""
        if value is None:
            if key is None:
                return
            clinic_code, _, key_id = wire.text_key(key).partition("/")
            self._remove(clinic_code, key_id)
            return
        self.put(ClinicKey.from_record(wire.decode(value, catalogue.CLINIC_KEY)))

    def put(self, entry: ClinicKey) -> None:
        """Add or replace a key."""
        ident = (entry.clinic_code, entry.key_id)
        if ident not in self._keys:
            self._clinics[entry.clinic_code] = self._clinics.get(entry.clinic_code, 0) + 1
        self._keys[ident] = entry

    def _remove(self, clinic_code: str, key_id: str) -> None:
        if self._keys.pop((clinic_code, key_id), None) is not None:
            self._clinics[clinic_code] -= 1
            if not self._clinics[clinic_code]:
                del self._clinics[clinic_code]

    def get(self, clinic_code: str, key_id: str) -> ClinicKey | None:
        """The registered key, whatever its state."""
        return self._keys.get((clinic_code, key_id))

    def entries(self) -> list[ClinicKey]:
        """Every registered key, by clinic and key id."""
        return [self._keys[ident] for ident in sorted(self._keys)]

    def key_for(self, clinic_code: str, key_id: str, signed_at_ms: int) -> ClinicKey:
        """Return the key that may verify a signature made at signed_at_ms, or raise KeyLookupFailed."""
        if clinic_code not in self._clinics:
            raise KeyLookupFailed(
                "unknown_clinic",
                f"clinic {clinic_code} has no registered signing key; register it with "
                "'healthbook clinic register', then re-drive with 'healthbook dlq retry --reason unknown_clinic'",
            )
        entry = self._keys.get((clinic_code, key_id))
        if entry is None:
            raise KeyLookupFailed(
                "unknown_key",
                f"clinic {clinic_code} has no registered key '{key_id}'",
            )
        if entry.revoked_at_ms is not None and signed_at_ms >= entry.revoked_at_ms:
            revoked = datetime.fromtimestamp(entry.revoked_at_ms / 1000).isoformat(timespec="seconds")
            raise KeyLookupFailed(
                "key_revoked",
                f"key '{key_id}' of clinic {clinic_code} was revoked at {revoked}, before this signature",
            )
        return entry
