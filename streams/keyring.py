"""The registry of clinic signing keys, as the worker holds it in memory, and the key decision."""

from __future__ import annotations

from datetime import datetime

from schemas import catalogue, wire
from schemas.registry import ClinicKey


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
            clinic_code, _, key_id = key.decode().partition("/")
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

    def knows(self, clinic_code: str, key_id: str) -> bool:
        """Whether this exact key is registered."""
        return (clinic_code, key_id) in self._keys

    def key_for(self, clinic_code: str, key_id: str, signed_at_ms: int) -> ClinicKey:
        """Return the key that may verify a signature made at signed_at_ms, or raise KeyLookupFailed."""
        if clinic_code not in self._clinics:
            raise KeyLookupFailed(
                "unknown_clinic",
                f"clinic {clinic_code} has no registered signing key; register it with "
                "'healthbook clinic register' and retry the message",
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
