"""The Java reference publisher (clients/java), built from docs/contract.md alone, against the local stack."""

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commands.identity_standin import confirmation
from commands.local_ca import LocalCA
from domain.book_entry import BookEntry
from domain.fhir_bundle import book_bundle
from healthbook.config import PROJECT_ROOT
from schemas.envelope import Signer
from tests.contract_vectors import CONTRACT, blocks, compute, hex_of
from tests.factories import SENSITIVE, citizen, signed_entry, visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until
from tests.integration.test_cli import healthbook

pytestmark = pytest.mark.integration
CLIENT = PROJECT_ROOT / "clients" / "java"
JAR = CLIENT / "target" / "healthbook-publisher.jar"
CLINIC, KEY_ID = "79004", "his-java"


@pytest.fixture(scope="module")
def publisher_jar() -> Path:
    """Build the publisher with Maven (its libraries into target/lib), as an integrator would."""
    for tool in ("mvn", "java"):
        assert shutil.which(tool), f"{tool} is needed to build the Java reference publisher; 'make test' checks it"
    built = subprocess.run(["mvn", "-q", "-B", "package"], cwd=CLIENT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    return JAR


def java(jar: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["java", "-jar", str(jar), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def java_clinic(settings, publisher_jar) -> dict[str, str]:
    """Clinic 79004 joined as the contract says: key made at home, certified, registered, its own broker login."""
    steps = [("clinic", "keygen", "--clinic", CLINIC, "--key-id", KEY_ID),
             ("ca", "issue", "--clinic", CLINIC, str(settings.key_dir / CLINIC / f"{KEY_ID}.csr")),
             ("clinic", "register", "--clinic", CLINIC, "--key-id", KEY_ID, "--certificate",
              str(settings.key_dir / CLINIC / f"{KEY_ID}.crt")),
             ("broker", "add-clinic", "--clinic", CLINIC)]
    for step in steps:
        done = healthbook(settings, *step)
        assert done.returncode == 0, f"{step}: {done.stderr}"
    return {"--clinic": CLINIC, "--key-id": KEY_ID, "--private-key": str(settings.key_dir / CLINIC / f"{KEY_ID}.pem")}


def test_the_java_publisher_reproduces_every_test_vector_of_the_contract(publisher_jar):
    result = java(publisher_jar, "vectors", str(CONTRACT))
    assert result.returncode == 0, result.stderr
    produced = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    expected = compute(CONTRACT.read_text(encoding="utf-8"))
    assert set(produced) == set(expected)
    document = blocks(CONTRACT.read_text(encoding="utf-8"))
    for name, value in produced.items():
        assert value == hex_of(document[name][1]), name


def _jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(e, default=str, ensure_ascii=False) for e in events) + "\n",
                    encoding="utf-8")
    return path


async def test_visits_the_java_publisher_sends_reach_the_citizens_reply(settings, clinics, db, identity, java_clinic,
                                                                       publisher_jar, tmp_path):
    person = new_citizen()
    events = [visit(person=person, facility=CLINIC, sequence=next_sequence(), admitted=datetime(2025, month, 3, 9))
              for month in (2, 6, 11)]
    login = ["--bootstrap", settings.bootstrap, "--topic", settings.topics.visits,
             "--user", f"clinic-{CLINIC}", "--password-file", str(settings.kafka_credentials_dir / f"clinic-{CLINIC}"),
             "--ca-file", str(settings.kafka_ca_file)]
    options = [item for pair in java_clinic.items() for item in pair]
    published = java(publisher_jar, "publish", *options, *login, str(_jsonl(tmp_path / "visits.jsonl", events)))
    assert published.returncode == 0, published.stderr
    assert f"published 3 visit(s) for clinic {CLINIC}" in published.stdout
    for event in events:
        await wait_until(lambda e=event: visible(db, CLINIC, e["visit_code"]), "the Java publisher's visits",
                         process=clinics.worker)
    reply = await identity.ask(confirmation(person.personal_id, 2025))
    assert sorted(v.visit_code for v in reply.visits) == sorted(e["visit_code"] for e in events)

    too_big = visit(person=person, facility=CLINIC, sequence=next_sequence(), admitted=datetime(2025, 12, 1, 9))
    too_big["extra"] = {"GHI_CHU": "x" * 4096}
    refused = java(publisher_jar, "publish", *options, *login, "--max-visit-bytes", "2048",
                   str(_jsonl(tmp_path / "big.jsonl", [too_big])))
    assert refused.returncode == 1 and "[visit_too_large]" in refused.stderr and "2,048 bytes" in refused.stderr
    assert too_big["visit_code"] in refused.stderr


async def test_a_java_signed_visit_altered_in_transit_is_dead_lettered_bad_signature(clinics, java_clinic,
                                                                                    publisher_jar, tmp_path):
    person = new_citizen()
    event = visit(person=person, facility=CLINIC, sequence=next_sequence())
    options = [item for pair in java_clinic.items() for item in pair]
    signed = java(publisher_jar, "sign", *options, str(_jsonl(tmp_path / "one.jsonl", [event])))
    assert signed.returncode == 0, signed.stderr
    key_hex, value_hex = signed.stdout.split()
    value = bytes.fromhex(value_hex)
    original = event["visit_code"].encode()
    assert value.count(original) == 1  # MA_LK is only in the signed payload
    tampered = value.replace(original, original[:-1] + (b"9" if original[-1:] != b"9" else b"8"))
    async with clinics.publisher(CLINIC, clinics.signers["79001"]) as pub:
        await (await pub.publish_raw(bytes.fromhex(key_hex), tampered))
    await clinics.barrier(person)  # the same key, so the same partition: the altered visit was judged first
    letters = [d for d in await clinics.dead_letters() if d["event_id"] == event["event_id"]]
    assert [d["reason_code"] for d in letters] == ["bad_signature"]


def _bundle_file(path: Path, entries: list[BookEntry], detail: bool = False) -> Path:
    """A FHIR Bundle as `healthbook export` writes it (the same builder), for the Java verifier to read."""
    path.write_text(json.dumps(book_bundle(entries[0].record["patient"]["personal_id"], entries, detail=detail,
                                           sensitive=SENSITIVE)), encoding="utf-8")
    return path


def _verdicts(jar: Path, ca: LocalCA, bundle: Path) -> tuple[int, dict[str, str]]:
    result = java(jar, "verify", "--ca", str(ca.directory / "ca.crt"), str(bundle))
    lines = [line.split(" ", 2) for line in result.stdout.splitlines()]
    return result.returncode, {visit.rstrip(":"): f"{status} {rest[0] if rest else ''}" for status, visit, *rest
                               in lines}


def test_the_java_verifier_checks_an_exported_bundle_from_the_bundle_alone_and_the_ca(publisher_jar, tmp_path):
    ca, relay_ca = LocalCA.open(tmp_path / "pki"), LocalCA.open(tmp_path / "relay-pki")
    since = datetime.now(UTC) - timedelta(days=1)
    clinic, relay, other = Signer.generate("k1"), Signer.generate("k1"), Signer.generate("k4")
    person = citizen(71)
    honest = signed_entry(visit(person=person, sequence=1), clinic, ca.entry("79001", clinic, since).certificate)
    code, verdicts = _verdicts(publisher_jar, ca, _bundle_file(tmp_path / "honest.json", [honest]))
    assert code == 0 and verdicts == {f"79001/{honest.record['visit_code']}": verdicts[
        f"79001/{honest.record['visit_code']}"]} and next(iter(verdicts.values())).startswith("VERIFIED")

    changed = json.loads((tmp_path / "honest.json").read_text())
    for entry in changed["entry"]:
        if entry["resource"]["resourceType"] == "Condition":
            entry["resource"]["code"]["coding"][0]["code"] = "Z00.0"
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    resigned = signed_entry(visit(person=person, sequence=2), relay, relay_ca.entry("79001", relay, since).certificate)
    foreign = signed_entry(visit(person=person, sequence=3), other, ca.entry("79004", other, since).certificate)
    sealed = signed_entry(visit(person=person, sequence=4, main_diagnosis_code="B20"), clinic,
                          ca.entry("79001", clinic, since).certificate)
    cases = {"changed.json": "the Bundle's diagnoses [Z00.0] are not the signed",
             _bundle_file(tmp_path / "resigned.json", [resigned]).name: "not issued by the trusted CA",
             _bundle_file(tmp_path / "foreign.json", [foreign]).name: "names MA_CSKCB:79004, not MA_CSKCB:79001"}
    for name, why in cases.items():
        code, verdicts = _verdicts(publisher_jar, ca, tmp_path / name)
        (verdict,) = verdicts.values()
        assert code == 1 and verdict.startswith("FAILED") and why in verdict, (name, verdict)
    code, verdicts = _verdicts(publisher_jar, ca, _bundle_file(tmp_path / "sealed.json", [sealed, honest]))
    assert code == 0 and sorted(v.split()[0] for v in verdicts.values()) == ["NOT_VERIFIABLE", "VERIFIED"]
