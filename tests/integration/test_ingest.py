"""healthbook ingest on the real stack: dossier files in, the complete health book out."""

import json
import random
import subprocess
import sys
from decimal import Decimal

import pytest

from commands.identity_standin import confirmation
from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from schemas.envelope import Signer
from schemas.visit import VisitEvent
from synthetic.dossiers import Quirks, write_dossier
from tests.dossier_signing import (
    facility_certificate,
    pem,
    sign_covering_nothing,
    sign_dossier,
    transplant_signature,
)
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until
from tests.unit.test_giamdinhhs import SAMPLE

pytestmark = pytest.mark.integration


def ingest(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commands.cli", "ingest", *args], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True, timeout=300)


async def test_the_sample_dossier_reaches_the_citizen_complete_and_a_rerun_changes_nothing(clinics, db, settings,
                                                                                          identity):
    first = ingest(settings, str(SAMPLE))
    assert first.returncode == 0, first.stdout + first.stderr
    row = await wait_until(lambda: visible(db, "79001", "79001-2026-000123"), "the sample's first visit",
                           process=clinics.worker)
    await wait_until(lambda: visible(db, "79001", "79001-2026-000124"), "the sample's second visit")
    assert (row["personal_id"], row["version"]) == ("079186001234", 20260315)
    record = json.loads(row["record"])
    assert record["patient"]["full_name"] == "Nguyễn Thị Lan"
    assert record["follow_up"]["appointment_date"] == "20260322"
    assert [m["name"] for m in record["medicines"]] == ["Paracetamol", "Amlodipin"]

    reply = await identity.ask(confirmation("079186001234", 2026))
    (listed,) = [v for v in reply.visits if v.visit_code == "79001-2026-000123"]
    assert listed.diagnosis_codes == ["J02.9", "I10"], "the year's list names the visit"
    (shown,) = (await identity.ask(confirmation("079186001234", 2026, detail=("79001", "79001-2026-000123")))).visits
    assert shown.follow_up_date == "20260322"
    assert (shown.insurance_paid, shown.patient_paid) == (Decimal("97600.00"), Decimal("24400.00"))
    assert [r.name for r in shown.results] == ["Số lượng bạch cầu", "Tỷ lệ bạch cầu trung tính"]
    assert shown.diagnosis_codes == ["J02.9", "I10"]

    before = await clinics.counts()
    again = ingest(settings, str(SAMPLE))
    assert again.returncode == 0
    assert "2 visit(s) were already published with the same content" in again.stdout
    await wait_until(lambda: _duplicates_grew(clinics, before, 2), "the re-sent visits to be counted as duplicates")
    unchanged = await visible(db, "79001", "79001-2026-000123")
    assert unchanged["projected_at"] == row["projected_at"]


async def _duplicates_grew(clinics, before, by):
    return (await clinics.counts()).get("duplicate", 0) >= before.get("duplicate", 0) + by


async def test_a_directory_with_quirks_and_a_bad_hoso(clinics, db, settings, tmp_path):
    people = [new_citizen() for _ in range(3)]
    events = [VisitEvent.model_validate(visit(person=p, sequence=next_sequence())).model_dump() for p in people]
    events[1]["main_diagnosis_code"] = "cảm"
    quirks = [Quirks(encoding="nested", nfd=True), Quirks(encoding="base64", bom=True), Quirks(shuffle_tables=True)]
    folder = tmp_path / "exports"
    folder.mkdir()
    with (folder / "day1.xml").open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260316", events, len(events), quirks, random.Random(2))
    (folder / "broken.xml").write_text("<GIAMDINHHS><THONGTINDONVI><MACSKCB>79001</MACSKCB>", encoding="utf-8")

    result = ingest(settings, str(folder))
    assert result.returncode == 1
    report = result.stdout
    line = next(line for line in report.splitlines() if "HOSO #2" in line)
    assert "day1.xml" in line and f"MA_LK={events[1]['visit_code']}" in line
    assert "XML1.MA_BENH_CHINH='cảm'" in line and "[icd10_format]" in line
    assert "broken.xml" in report
    for event in (events[0], events[2]):
        row = await wait_until(lambda e=event: visible(db, "79001", e["visit_code"]), "the good HOSO",
                               process=clinics.worker)
        assert json.loads(row["record"])["patient"]["full_name"] == event["patient"]["full_name"]
        assert row["version"] == 20260316
    assert await visible(db, "79001", events[1]["visit_code"]) is None


async def test_sensitive_tables_appear_only_in_the_detail_of_their_visit(clinics, db, settings, identity, tmp_path):
    person = new_citizen()
    event = VisitEvent.model_validate(visit(person=person, sequence=next_sequence())).model_dump()
    event["sensitive"] = [{"table": "XML15", "records": [{"MA_LK": event["visit_code"], "KET_QUA_DTRI_LAO": "1",
                                                          "PHAC_DO_DTRI_LAO": "2RHZE/4RHE"}]}]
    path = tmp_path / "tb.xml"
    with path.open("w", encoding="utf-8") as out:
        write_dossier(out, "79001", "20260317", [event], 1)
    assert ingest(settings, str(path)).returncode == 0
    row = await wait_until(lambda: visible(db, "79001", event["visit_code"]), "the visit", process=clinics.worker)
    assert "2RHZE" not in row["record"]
    assert "2RHZE" in row["sensitive"]
    # judged once by the worker, under the lists the query consumer runs with: the list reads the judgement
    assert (row["sealed"], row["sealed_under"]) == (True, settings.sensitive.fingerprint)

    listed = await identity.ask(confirmation(person.personal_id, 2026))
    assert "2RHZE" not in repr(listed)
    assert [v.sealed for v in listed.visits] == [True]
    detail = await identity.ask(confirmation(person.personal_id, 2026, detail=("79001", event["visit_code"])))
    (visit_detail,) = detail.visits
    assert [t.model_dump() for t in visit_detail.sensitive] == [
        {"table": "XML15", "records": event["sensitive"][0]["records"]}]

    stranger = new_citizen()
    refused = await identity.ask(confirmation(stranger.personal_id, 2026, detail=("79001", event["visit_code"])))
    assert (refused.status, refused.refusal_code, refused.visits) == ("refused", "not_found", [])


async def test_a_facility_signed_dossier_is_verified_and_every_bypass_publishes_nothing(clinics, db, settings, ca,
                                                                                          tmp_path):
    key, certificate = facility_certificate("79001", ca.clinics)
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(pem(certificate))
    registered = subprocess.run([sys.executable, "-m", "commands.cli", "clinic", "certificate", "--clinic", "79001",
                                 str(cert_file)], cwd=PROJECT_ROOT, env=settings_env(settings), capture_output=True,
                                text=True)
    assert registered.returncode == 0, registered.stderr
    try:
        people = [new_citizen() for _ in range(8)]
        sent = [VisitEvent.model_validate(visit(person=p, sequence=next_sequence())).model_dump() for p in people]
        names = ("signed", "altered", "stripped", "partial", "padded", "oversize", "unsigned", "forged")
        files = {name: tmp_path / f"{name}.xml" for name in names}
        for (name, path), event in zip(files.items(), sent, strict=True):
            with path.open("w", encoding="utf-8") as out:
                write_dossier(out, "79001", "20260318", [event], 1, [Quirks(encoding="nested")])
            if name not in ("unsigned", "forged"):
                sign_dossier(path, key, certificate, only="THONGTINDONVI" if name == "partial" else None)
        signed_once = tmp_path / "innocuous.xml"  # what the facility signed, once: a base64 Reference over nothing
        with signed_once.open("w", encoding="utf-8") as out:
            write_dossier(out, "79001", "20260318", [visit(person=new_citizen(), sequence=next_sequence())], 1)
        sign_covering_nothing(signed_once, key, certificate)
        transplant_signature(signed_once, files["forged"])
        for name in ("altered", "partial", "padded"):
            files[name].write_bytes(files[name].read_bytes().replace(b"<MA_KHOA>K01</MA_KHOA>",
                                                                     b"<MA_KHOA>K02</MA_KHOA>", 1))
        files["padded"].write_bytes(files["padded"].read_bytes() + b" " * (300 * 1024))
        text = files["stripped"].read_bytes()
        files["stripped"].write_bytes(text[:text.index(b"<ds:Signature")] +
                                      text[text.index(b"</ds:Signature>") + len(b"</ds:Signature>"):])

        accepted = ingest(settings, str(files["signed"]))
        assert accepted.returncode == 0, accepted.stdout
        assert "verified" in accepted.stdout
        expected = {"altered": "CHUKYDONVI does not verify", "stripped": "carries no XML signature",
                    "partial": "instead of the whole document", "padded": "CHUKYDONVI does not verify",
                    "unsigned": "carries no XML signature",
                    "forged": "only the enveloped-signature and C14N transforms are accepted"}
        for name, reason in expected.items():
            refused = ingest(settings, str(files[name]))
            assert refused.returncode == 1 and reason in " ".join(refused.stdout.split()), (name, refused.stdout)
        tight = settings.model_copy(update={"xml_signature_max_mb": 0})
        oversize = ingest(tight, str(files["oversize"]))
        assert oversize.returncode == 1 and "HEALTHBOOK_XML_SIGNATURE_MAX_MB" in " ".join(oversize.stdout.split())
        await wait_until(lambda: visible(db, "79001", sent[0]["visit_code"]), "the signed dossier's visit",
                         process=clinics.worker)
        for person in people[1:]:
            await clinics.barrier(person)
        for event in sent[1:]:
            assert await visible(db, "79001", event["visit_code"]) is None
    finally:
        (settings.key_dir / "79001" / "xml-signature-certificate.pem").unlink()


def test_only_a_certificate_a_trusted_ca_issued_to_that_facility_is_stored_for_its_dossiers(settings, ca, tmp_path):
    def register(certificate, clinic: str = "79002") -> subprocess.CompletedProcess:
        path = tmp_path / "candidate.pem"
        path.write_bytes(pem(certificate))
        return subprocess.run([sys.executable, "-m", "commands.cli", "clinic", "certificate", "--clinic", clinic,
                               str(path)], cwd=PROJECT_ROOT, env=settings_env(settings), capture_output=True, text=True)

    stored = settings.key_dir / "79002" / "xml-signature-certificate.pem"
    refusals = {
        "self-signed": (facility_certificate("79002")[1], "not issued by a trusted clinic CA"),
        "another facility's": (facility_certificate("79001", ca.clinics)[1], "not 'MA_CSKCB:79002'"),
        "the registries' CA's": (facility_certificate("79002", ca.registries)[1], "not issued by a trusted clinic CA"),
        "an Ed25519 key's": (ca.certify_clinic("79002", Signer.generate("x").public_key), "ECDSA on P-256"),
    }
    revoked = facility_certificate("79002", ca.clinics)[1]
    ca.revoke(revoked)
    refusals["a revoked"] = (revoked, "revoked by its CA")
    for what, (certificate, reason) in refusals.items():
        result = register(certificate)
        assert result.returncode != 0 and reason in result.stderr, (what, result.stderr)
        assert not stored.exists(), what
    accepted = register(facility_certificate("79002", ca.clinics)[1])
    assert accepted.returncode == 0, accepted.stderr
    assert stored.exists()
    stored.unlink()
