"""The clinic-key registry: its entries, and the keyring every reader builds from the compacted topic."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from domain.registry_revisions import AppliedRevisions
from domain.registry_trust import (
    CLINIC_PREFIX,
    KEY_REGISTRY,
    RevocationUnknown,
    TrustAnchors,
    Untrusted,
    raw_ed25519,
)
from schemas import catalogue, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import clinic_key_signing_input, legacy_clinic_key_signing_input, to_millis
from schemas.registry_reasons import IgnoredBecause


@dataclass(frozen=True)
class ClinicKey:
    """A clinic's registered public key and its revocation time, if any."""

    clinic_code: str
    key_id: str
    public_key: bytes
    registered_at_ms: int
    revoked_at_ms: int | None = None
    certificate: bytes | None = None  # DER; its validity bounds when the key may sign
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    issued_at_ms: int | None = None  # the registry's revision of this record; None for retired version 2 records
    certificate_issuer: bytes | None = None  # DER of the issuer's name: with the serial, asked of its CRL per visit
    certificate_serial: int | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClinicKey:
        """Build from a decoded ClinicKey Avro record (not yet verified)."""
        issued = record.get("issued_at")
        return cls(
            clinic_code=record["clinic_code"],
            key_id=record["key_id"],
            public_key=record["public_key"],
            registered_at_ms=to_millis(record["registered_at"]),
            revoked_at_ms=None if record["revoked_at"] is None else to_millis(record["revoked_at"]),
            certificate=record.get("certificate"),
            issued_at_ms=None if issued is None else to_millis(issued),
        )

    def to_record(self) -> dict[str, Any]:
        """The Avro record for the registry topic, without the registry's signature."""
        return {
            "clinic_code": self.clinic_code,
            "key_id": self.key_id,
            "algorithm": "ed25519",
            "public_key": self.public_key,
            "registered_at": self.registered_at_ms,
            "revoked_at": self.revoked_at_ms,
            "certificate": self.certificate,
            "issued_at": self.issued_at_ms,
            "registry_certificate": None,
            "registry_signature": None,
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

    def __init__(self, code: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def verified_entry(record: dict[str, Any], trust: TrustAnchors, retired_form: bool = False) -> ClinicKey:
    """The entry of a registry record signed by the key registry and holding a certificate of its own key.

    The registry's certificate is judged at the record's own time; the clinic's certificate only by
    issuer, subject and key here: its validity and revocation are judged at each visit's signed_at.
    """
    entry = ClinicKey.from_record(record)
    what = f"the record of clinic {entry.clinic_code} key '{entry.key_id}'"
    if entry.revoked_at_ms is not None and entry.revoked_at_ms < 0:
        raise Untrusted(IgnoredBecause.DATED_AHEAD, f"{what} is revoked before 1970, which no registry signs")
    if retired_form:
        if not trust.legacy_allowed():
            raise Untrusted(IgnoredBecause.RETIRED_SIGNING_FORM, (
                f"{what} is a version 2 record, signed in the retired healthbook/clinic-key/v2 form; the key "
                "registry re-signs it as version 3 ('healthbook clinic register' again)"))
        message, at = legacy_clinic_key_signing_input(record), entry.registered_at_ms
    else:
        message, at = clinic_key_signing_input(record), entry.issued_at_ms or entry.registered_at_ms
    trust.signed_by(record.get("registry_certificate"), KEY_REGISTRY, record.get("registry_signature"), message,
                    at=trust.record_time(at, what))
    if not retired_form and entry.issued_at_ms is None:
        raise Untrusted(IgnoredBecause.UNREADABLE, f"{what} is a version 3 record without its issued_at")
    issued = trust.certificate(entry.certificate, CLINIC_PREFIX + entry.clinic_code, None, revocation=False)
    if raw_ed25519(issued) != entry.public_key:
        raise Untrusted(IgnoredBecause.KEY_NOT_CERTIFIED,
                        f"the certificate of clinic {entry.clinic_code} key '{entry.key_id}' "
                        "certifies another public key")
    return replace(entry, valid_from_ms=to_millis(issued.not_valid_before_utc),
                   valid_until_ms=to_millis(issued.not_valid_after_utc),
                   certificate_issuer=issued.issuer.public_bytes(), certificate_serial=issued.serial_number)


class Keyring:
    """Clinic keys by (clinic code, key id), applied from registry records in topic order.

    With trust anchors, only records signed by the key registry, holding a certificate of their key
    for their clinic, count; anything else raises Untrusted and changes nothing. The registry only
    moves forward: a record issued before the one held for its key is ignored (SUPERSEDED), and a
    revocation, once seen, stands even if an older record of the key is written again. Without
    anchors (None) records are taken as they are: for tools that only display the registry and for
    tests of other rules.
    """

    def __init__(self, trust: TrustAnchors | None) -> None:
        self.trust = trust
        self._keys: dict[tuple[str, str], ClinicKey] = {}
        self._clinics: dict[str, int] = {}
        self.revisions = AppliedRevisions()  # kept by the worker across restarts

    def __len__(self) -> int:
        return len(self._keys)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one registry message: a key record, or (without trust anchors) a tombstone that removes it."""
        if value is None:
            if key is None:
                return
            if self.trust is not None:
                raise Untrusted(IgnoredBecause.UNSIGNED_TOMBSTONE,
                                "a tombstone cannot be signed; retire a key by revoking it")
            clinic_code, _, key_id = wire.text_key(key).partition("/")
            self._remove(clinic_code, key_id)
            return
        record = wire.decode(value, catalogue.CLINIC_KEY)
        if self.trust is None:
            self.put(ClinicKey.from_record(record))
            return
        entry = verified_entry(record, self.trust, wire.schema_id_of(value) != catalogue.CLINIC_KEY.schema_id)
        if key is None or wire.text_key(key) != registry_key(entry.clinic_code, entry.key_id).decode():
            raise Untrusted(IgnoredBecause.WRONG_RECORD_KEY, "the record's topic key is not its clinic_code/key_id")
        self.put(entry)

    def put(self, entry: ClinicKey) -> None:
        """Add or replace a key with a record not older than the one held; an earlier revocation of it stands."""
        ident = (entry.clinic_code, entry.key_id)
        known = self._keys.get(ident)
        issued = -1 if entry.issued_at_ms is None else entry.issued_at_ms
        held = max(-1 if known is None or known.issued_at_ms is None else known.issued_at_ms,
                   self.revisions.floor.get(entry.registry_key.decode(), -1))
        if held >= 0 and issued < held:
            raise Untrusted(IgnoredBecause.SUPERSEDED, (
                f"the record of clinic {entry.clinic_code} key '{entry.key_id}' was issued before the one held "
                f"({_when(entry.issued_at_ms)} < {_when(held)}): an old record written again changes nothing"))
        if known is None:
            self._clinics[entry.clinic_code] = self._clinics.get(entry.clinic_code, 0) + 1
        if known and known.revoked_at_ms is not None and (
                entry.revoked_at_ms is None or entry.revoked_at_ms > known.revoked_at_ms):
            entry = replace(entry, revoked_at_ms=known.revoked_at_ms)
        self._keys[ident] = entry
        if entry.issued_at_ms is not None:
            self.revisions.applied(entry.registry_key.decode(), entry.issued_at_ms)

    def _remove(self, clinic_code: str, key_id: str) -> None:
        if self._keys.pop((clinic_code, key_id), None) is not None:
            self._clinics[clinic_code] -= 1
            if not self._clinics[clinic_code]:
                del self._clinics[clinic_code]

    def has_clinic(self, clinic_code: str) -> bool:
        """Whether the clinic has any registered key (a clinic code read from a message may be anything)."""
        return clinic_code in self._clinics

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
                DeadLetterReason.UNKNOWN_CLINIC,
                f"clinic {clinic_code} has no registered signing key: the clinic makes its key pair and certificate "
                f"request on its own machine ('healthbook clinic keygen --clinic {clinic_code}'), a trusted CA "
                "certifies it, the operator registers the certificate ('healthbook clinic register --clinic "
                f"{clinic_code} --certificate FILE'), then re-drive with "
                "'healthbook dlq retry --reason unknown_clinic'",
            )
        entry = self._keys.get((clinic_code, key_id))
        if entry is None:
            raise KeyLookupFailed(
                DeadLetterReason.UNKNOWN_KEY,
                f"clinic {clinic_code} has no registered key '{key_id}'",
            )
        if entry.revoked_at_ms is not None and signed_at_ms >= entry.revoked_at_ms:
            revoked = datetime.fromtimestamp(entry.revoked_at_ms / 1000).isoformat(timespec="seconds")
            raise KeyLookupFailed(
                DeadLetterReason.KEY_REVOKED,
                f"key '{key_id}' of clinic {clinic_code} was revoked at {revoked}, before this signature",
            )
        self._check_certificate(entry, signed_at_ms)
        return entry

    def _check_certificate(self, entry: ClinicKey, signed_at_ms: int) -> None:
        """The key's certificate was valid, and not revoked by its CA, when the visit was signed."""
        whose = f"the certificate of key '{entry.key_id}' of clinic {entry.clinic_code}"
        if entry.valid_until_ms is not None and signed_at_ms > entry.valid_until_ms:
            raise KeyLookupFailed(DeadLetterReason.CERTIFICATE_EXPIRED, (
                f"{whose} expired at {_when(entry.valid_until_ms)}, before this signature at {_when(signed_at_ms)}: "
                f"the clinic signs with a renewed certificate's key ('healthbook clinic rotate --clinic "
                f"{entry.clinic_code} --from-key {entry.key_id} --to-key NEW --certificate FILE') and re-sends"))
        if entry.valid_from_ms is not None and signed_at_ms < entry.valid_from_ms:
            raise KeyLookupFailed(DeadLetterReason.CERTIFICATE_EXPIRED, (
                f"{whose} is valid only from {_when(entry.valid_from_ms)}, after this signature at "
                f"{_when(signed_at_ms)}: check the clinic's clock"))
        if self.trust is None or entry.certificate_serial is None or entry.certificate_issuer is None:
            return
        try:
            revoked = self.trust.revoked_at(entry.certificate_issuer, entry.certificate_serial)
        except RevocationUnknown as exc:
            raise KeyLookupFailed(DeadLetterReason.REVOCATION_UNKNOWN, (
                f"{exc.message}; once it is, re-drive with 'healthbook dlq retry --reason revocation_unknown'"
            )) from None
        if revoked is not None and signed_at_ms >= to_millis(revoked):
            raise KeyLookupFailed(DeadLetterReason.CERTIFICATE_REVOKED, (
                f"{whose} was revoked by its CA at {_when(to_millis(revoked))}, before this signature at "
                f"{_when(signed_at_ms)}"))


def _when(millis: int | None) -> str:
    return "never" if millis is None else f"{datetime.fromtimestamp(millis / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC"
