"""Fuzz targets: every entry point that reads bytes from outside, with valid seeds and the invariant it must keep.

The invariant is the same for all: no exception escapes the rejection path. Each `check` returns
the outcome's name ("accepted", "rejected", ...) and raises only when that invariant breaks.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from rich.console import Console

from commands import render
from commands.local_ca import LocalCA
from consumers.analytics_sink import DuckDBSink, row_of
from consumers.dead_letters import DeadLetterEntry
from domain import deidentify, replies
from domain.analytics_policy import PolicyError, load_policies, parse_policy
from domain.batch import Delivery, RejectedDelivery
from domain.book_entry import BookEntry, ClinicSignature
from domain.consent import Refuse, RequestPolicy, decide
from domain.identity import IdentityDirectory, resolve
from domain.keyring import ClinicKey, Keyring
from domain.registry_trust import Untrusted
from domain.release_input import UnreadableVisit, ready_visit
from domain.replies import read_reply
from domain.rows import visit_row
from domain.signature_check import check_visit_signature
from domain.validation import Rejected, validate
from healthbook.config import Settings
from producers.xml_ingest.dossier_mapping import MappingFailed, map_hoso
from producers.xml_ingest.dossier_signature import SignatureStatus, check_signature
from producers.xml_ingest.giamdinhhs import DossierReader
from schemas import catalogue, envelope, wire
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.envelope import Signer
from schemas.errors import ContractError
from schemas.refusal_codes import RefusalCode
from schemas.visit import read_visit
from schemas.visit_record import Visit
from streams.dead_letters import dead_letter
from synthetic.analytics_population import analytics_population
from synthetic.dossiers import write_dossier
from tests.dossier_signing import facility_certificate, sign_dossier
from tests.factories import citizen, visit, with_patient

SIGNER = Signer.generate("k1")
IDENTITY_SIGNER = Signer.generate("vneid-1")
TOMBSTONE = b"\x7f"  # an input starting with it is a tombstone whose key is the rest
SAMPLE_DOSSIER = Path(__file__).parents[1] / "fixtures" / "giamdinhhs-sample.xml"
_SCRATCH = Path(tempfile.mkdtemp(prefix="healthbook-fuzz-"))


@dataclass(frozen=True)
class Target:
    """One entry point: valid inputs to start from, and the check of one input."""

    name: str
    seeds: Callable[[], list[bytes]]
    check: Callable[[bytes], str]


def _keyring() -> Keyring:
    ring = Keyring(None)
    ring.put(ClinicKey("79001", "k1", SIGNER.public_key, 0))
    return ring


CA = LocalCA.open(_SCRATCH / "pki")
TRUST = CA.trust_anchors(legacy_signatures_until=datetime.now(UTC) + timedelta(days=1))  # both forms fuzzed
_CLINIC_CERTIFICATE = CA.entry("79001", SIGNER, not_before=datetime.now(UTC) - timedelta(days=1)).certificate


KEYRING = _keyring()
PSEUDONYM_KEY = b"k" * 32


def _visit_seeds() -> list[bytes]:
    card_only = with_patient(visit(person=citizen(3), sequence=3), personal_id=None,
                             insurance_card_numbers=["TE1790000000003"])
    events = (visit(), visit(person=citizen(2), sequence=2), card_only)
    return [keyed(read_visit(e).partition_key.encode(), envelope.seal_visit(e, "79001", SIGNER))  # type: ignore[union-attr]
            for e in events]


def keyed(key: bytes, value: bytes) -> bytes:
    """A fuzz input holding a message key and value: one length byte, the key, the value."""
    return bytes([len(key)]) + key + value


def unkeyed(data: bytes) -> tuple[bytes, bytes]:
    """The message key and value of a fuzz input made by keyed()."""
    length = data[0] if data else 0
    return data[1:1 + length], data[1 + length:]


def check_visit_envelope(data: bytes) -> str:
    result = validate(*unkeyed(data), KEYRING)
    if isinstance(result, Rejected):
        return "rejected"
    visit_row(result, 0, 0)
    if result.event.personal_id:
        deidentify.encode(result.event, PSEUDONYM_KEY)
    return "accepted"


_SENSITIVE = Settings().sensitive
SEEDS_REQUESTED_AT = datetime.fromtimestamp(1_773_563_400, UTC)


def _request_seeds() -> list[bytes]:
    base = {"request_id": "r-1", "personal_id": "079186001234", "year": 2026, "identity_level": 2,
            "consent_confirmed": True, "requested_at": 1_773_563_400_000, "detail": None}
    detail = dict(base, detail={"facility_code": "79001", "visit_code": "79001-2026-0000001"})
    bundle = dict(base, format="fhir", every_year=True)
    retired = dict(detail, key_id=IDENTITY_SIGNER.key_id)  # version 3, signed in the retired form
    retired["signature"] = IDENTITY_SIGNER.sign(envelope.legacy_request_signing_input(retired))
    return [envelope.seal_request(r, IDENTITY_SIGNER) for r in (base, detail, bundle)] + [
        wire.encode(catalogue.INTEGRATION_REQUEST_V3, retired)]


def check_integration_request(data: bytes) -> str:
    policy = RequestPolicy({"vneid-1": IDENTITY_SIGNER.public_key}, timedelta(minutes=5),
                           legacy_until=SEEDS_REQUESTED_AT + timedelta(days=1))  # the retired form is fuzzed too
    decision = decide(data, policy, SEEDS_REQUESTED_AT)
    return "refused" if isinstance(decision, Refuse) else "served"


def _reply_seeds() -> list[bytes]:
    record = orjson.loads(Visit.of_model(read_visit(visit())).book_json())  # type: ignore[arg-type]
    listed = replies.year_served("r-1", 2026, [BookEntry(record, _signature(_SEALED))], _SENSITIVE)
    return [listed.encode(), replies.refused("r-2", RefusalCode.IDENTITY_LEVEL, "mức 2").encode()]


def check_integration_reply(data: bytes) -> str:
    """A reply as the identity platform (or anyone holding one) reads it, its visits' signatures checked."""
    reply = read_reply(data)
    if reply is None:
        return "unreadable"
    for shown in reply.visits:
        check_visit_signature(shown, TRUST)
    return "read"


_SEALED = envelope.seal_visit(visit(), "79001", SIGNER)


def _signature(sealed: bytes) -> ClinicSignature:
    read = wire.decode(sealed, catalogue.SIGNED_VISIT)
    return ClinicSignature(clinic_code="79001", key_id="k1", signed_at=read["signed_at"], signature=read["signature"],
                           public_key=SIGNER.public_key, certificate=_CLINIC_CERTIFICATE,
                           signed_message=sealed)


def check_signed_message(data: bytes) -> str:
    """Checking a reply's signed message offline: hostile bytes are 'invalid', never an exception."""
    record = orjson.loads(Visit.of_model(read_visit(visit())).book_json())  # type: ignore[arg-type]
    (detail,) = replies.detail_served("r-1", 2026, BookEntry(record, _signature(_SEALED))).visits
    assert detail.signed is not None
    shown = detail.model_copy(update={"signed": detail.signed.model_copy(update={"signed_message": data})})
    status = check_visit_signature(shown, TRUST).status
    return "read" if status == "verified" else "refused"


def _record_seeds(entry: catalogue.SchemaEntry, records: list[dict]) -> list[bytes]:
    return [wire.encode(entry, r) for r in records] + [TOMBSTONE + b"79001/k1"]


def _registry_check(apply: Callable[[bytes | None, bytes | None], object], key: bytes) -> Callable[[bytes], str]:
    def check(data: bytes) -> str:
        try:
            if data.startswith(TOMBSTONE):
                try:
                    apply(data[1:], None)
                except Untrusted:
                    return "tombstone_ignored"  # a registry with trust anchors takes no unsigned deletion
                return "tombstone"
            apply(key, data)
        except ContractError:
            return "unreadable"
        except Untrusted:
            return "untrusted"
        return "applied"
    return check


def check_identity_card(data: bytes) -> str:
    directory = IdentityDirectory(TRUST)
    outcome = _registry_check(directory.apply, b"TE1790000000003")(data)
    event = read_visit(with_patient(visit(person=citizen(3), sequence=3), personal_id=None,
                                    insurance_card_numbers=["TE1790000000003"]))
    assert not isinstance(event, list)
    resolve(Visit.of_model(event), directory)
    return outcome


_NOW_MS = envelope.now_millis()


def _clinic_key_seeds() -> list[bytes]:
    """Version 3 records (registered, revoked) and a version 2 record in the retired signing form."""
    record = CA.entry("79001", SIGNER).to_record()
    retired = {k: v for k, v in record.items() if k != "issued_at"}
    registry = CA.key_registry()
    retired["registry_certificate"] = registry.certificate
    retired["registry_signature"] = registry.private_key.sign(envelope.legacy_clinic_key_signing_input(retired))
    current = [registry.clinic_key(record), registry.clinic_key(dict(record, revoked_at=1_773_563_400_000))]
    return [*_record_seeds(catalogue.CLINIC_KEY, current), wire.encode(catalogue.CLINIC_KEY_V2, retired)]


def _dead_letter_seeds() -> list[bytes]:
    source = Delivery("visits", 2, 41, 1_773_563_400_000, b"079186001234", _visit_seeds()[0], (0, 7))
    return [dead_letter(RejectedDelivery(source, Rejected(DeadLetterReason.BAD_SIGNATURE, "signature does not verify",
                                                          [], "79001", "e-1")))]


def check_dead_letter(data: bytes) -> str:
    try:
        record = wire.decode(data, catalogue.DEAD_LETTER)
    except ContractError:
        return "unreadable"
    render.dead_letter_entries(Console(file=io.StringIO(), width=200), [DeadLetterEntry(0, 0, record)])
    json.dumps(record, ensure_ascii=False, default=str)
    return "shown"


def _dossier_seeds() -> list[bytes]:
    out = io.StringIO()
    write_dossier(out, "79001", "20260320", [visit(), visit(person=citizen(2), sequence=2)], 2)
    return [SAMPLE_DOSSIER.read_bytes(), out.getvalue().encode()]


def check_dossier(data: bytes) -> str:
    path = _SCRATCH / "dossier.xml"
    path.write_bytes(data)
    outcome = "read"
    try:
        for hoso in DossierReader(path):
            try:
                event = map_hoso(hoso, "79001", 1)
            except MappingFailed:
                outcome = "hoso_rejected"
                continue
            read_visit(event)
    except etree.XMLSyntaxError:
        return "not_xml"
    return outcome


_DOSSIER_KEY = ec.derive_private_key(0x5EED_2026_0021, ec.SECP256R1())  # fixed: stored regressions stay signed by it
_DOSSIER_CERTIFICATE = facility_certificate("79001", key=_DOSSIER_KEY)[1]


def _signed_dossier_seeds() -> list[bytes]:
    path = _SCRATCH / "signed-seed.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260320", [visit(), visit(person=citizen(2), sequence=2)], 2)
    sign_dossier(path, _DOSSIER_KEY, _DOSSIER_CERTIFICATE)
    return [path.read_bytes()]


def check_dossier_signature(data: bytes) -> str:
    """A dossier whose facility has a registered certificate: verified and read from the verified tree, or refused."""
    path = _SCRATCH / "signed.xml"
    path.write_bytes(data)
    check = check_signature(path, _DOSSIER_CERTIFICATE, 2**20)
    if check.status is not SignatureStatus.VERIFIED:
        return "refused"
    assert check.verified is not None, "a verified dossier is read from the verified tree, never the file"
    for hoso in DossierReader(path, check.verified):
        try:
            read_visit(map_hoso(hoso, "79001", 1))
        except MappingFailed:
            continue
    return "read"


RELEASE_POLICIES = load_policies(Settings().analytics_policy_dir)
_SINK = DuckDBSink(Path(":memory:"))


def _deidentified_seeds() -> list[bytes]:
    return [value for _, value in analytics_population(5, ["202603"], crowd=1, unique=2).framed()]


def check_deidentified_visit(data: bytes) -> str:
    """What the release stage reads: made ready for every shipped policy, or set aside with a reason."""
    try:
        ready_visit(data, RELEASE_POLICIES, b"m" * 32)
    except UnreadableVisit:
        return "unreadable"
    return "read"


def _released_seeds() -> list[bytes]:
    population = analytics_population(6, ["202603"], crowd=1, unique=2)
    return [ready_visit(value, RELEASE_POLICIES, b"m" * 32).forms[RELEASE_POLICIES[0].name][1]
            for _, value in population.framed()]


@dataclass(frozen=True)
class _Landed:
    offset: int
    value: bytes


def check_released_visit(data: bytes) -> str:
    """What a subscriber's DuckDB sink reads: landed, or kept aside as unreadable."""
    if isinstance(row_of(data), str):
        return "unreadable"
    _SINK.land("fuzz", 0, [_Landed(0, data)])  # only a readable record reaches DuckDB (its own checks)
    return "read"


def _policy_seeds() -> list[bytes]:
    return [path.read_bytes() for path in sorted(Settings().analytics_policy_dir.glob("*.toml"))]


def check_subscriber_policy(data: bytes) -> str:
    """A subscriber's policy file as an operator may write it: loaded, or refused saying what to fix."""
    try:
        parse_policy(data.decode("utf-8", "replace"), "policy.toml")
    except PolicyError:
        return "refused"
    return "read"


TARGETS = {t.name: t for t in (
    Target("visit_envelope", _visit_seeds, check_visit_envelope),
    Target("integration_request", _request_seeds, check_integration_request),
    Target("clinic_key", _clinic_key_seeds, lambda data: _registry_check(Keyring(TRUST).apply, b"79001/k1")(data)),
    Target("identity_card", lambda: _record_seeds(catalogue.IDENTITY_CARD, [CA.insurance_registry().identity_card(
        {"card_number": "TE1790000000003", "personal_id": citizen(3).personal_id, "updated_at": _NOW_MS})]),
        check_identity_card),
    Target("dead_letter", _dead_letter_seeds, check_dead_letter),
    Target("dossier", _dossier_seeds, check_dossier),
    Target("dossier_signature", _signed_dossier_seeds, check_dossier_signature),
    Target("integration_reply", _reply_seeds, check_integration_reply),
    Target("signed_message", lambda: [_SEALED], check_signed_message),
    Target("deidentified_visit", _deidentified_seeds, check_deidentified_visit),
    Target("released_visit", _released_seeds, check_released_visit),
    Target("subscriber_policy", _policy_seeds, check_subscriber_policy),
)}
