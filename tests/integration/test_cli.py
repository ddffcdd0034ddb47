"""The healthbook command as a clinic integrator uses it: register a key, publish a file."""

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from schemas.envelope import Signer
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration


def healthbook(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True, timeout=120)


async def test_keygen_certify_register_then_publish_a_file_with_one_bad_line(clinics, db, settings, tmp_path):
    made = healthbook(settings, "clinic", "keygen", "--clinic", "56001", "--key-id", "his-2026")
    assert made.returncode == 0, made.stderr
    assert (settings.key_dir / "56001" / "his-2026.pem").stat().st_mode & 0o077 == 0, "private key is owner-only"
    request = settings.key_dir / "56001" / "his-2026.csr"
    assert "healthbook ca issue --clinic 56001" in made.stdout and str(request) in made.stdout
    again = healthbook(settings, "clinic", "keygen", "--clinic", "56001", "--key-id", "his-2026")
    assert again.returncode != 0 and "already has a key 'his-2026'" in again.stderr
    issued = healthbook(settings, "ca", "issue", "--clinic", "56001", str(request))
    assert issued.returncode == 0, issued.stderr
    registered = healthbook(settings, "clinic", "register", "--clinic", "56001", "--key-id", "his-2026",
                            "--certificate", str(request.with_suffix(".crt")))
    assert registered.returncode == 0, registered.stderr

    person = new_citizen()
    good = [visit(person=person, facility="56001", sequence=next_sequence()) for _ in range(2)]
    bad = visit(person=person, facility="56001", sequence=next_sequence(), main_diagnosis_code="cảm cúm")
    lines = [good[0], bad, good[1]]
    path = tmp_path / "visits.jsonl"
    path.write_text("\n".join(json.dumps(e, default=str, ensure_ascii=False) for e in lines), encoding="utf-8")

    published = healthbook(settings, "publish", "--clinic", "56001", "--key-id", "his-2026", str(path))
    assert published.returncode == 1
    assert "line 2: visit" in published.stderr and "main_diagnosis_code='cảm cúm'" in published.stderr
    assert "published 2 visit(s)" in published.stdout
    for event in good:
        await wait_until(lambda e=event: visible(db, "56001", e["visit_code"]), "the published visits",
                         process=clinics.worker)
    assert await visible(db, "56001", bad["visit_code"]) is None


def test_keygen_refuses_a_malformed_clinic_code(settings):
    result = healthbook(settings, "clinic", "keygen", "--clinic", "7900")
    assert result.returncode != 0
    assert "clinic code '7900' must be 5 digits" in result.stderr


def test_register_refuses_a_certificate_for_another_clinic_or_from_an_untrusted_ca(settings, tmp_path):
    from commands.local_ca import LocalCA

    healthbook(settings, "clinic", "keygen", "--clinic", "56005")
    request = settings.key_dir / "56005" / "k1.csr"
    assert healthbook(settings, "ca", "issue", "--clinic", "56005", str(request)).returncode == 0
    other = healthbook(settings, "clinic", "register", "--clinic", "56006", "--certificate",
                       str(request.with_suffix(".crt")))
    assert other.returncode != 0 and "names 'MA_CSKCB:56005', not 'MA_CSKCB:56006'" in other.stderr
    stranger = LocalCA.open(tmp_path / "not-our-ca")
    foreign = tmp_path / "foreign.crt"
    issued = stranger.certify_request(request.read_bytes(), "56005")
    foreign.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    refused = healthbook(settings, "clinic", "register", "--clinic", "56005", "--certificate", str(foreign))
    assert refused.returncode != 0 and "not issued by a trusted clinic CA" in refused.stderr


async def test_register_a_public_key_the_clinic_already_holds(clinics, db, settings, tmp_path):
    held = Signer.generate("legacy-1")
    public = tmp_path / "legacy.pub.pem"
    public.write_bytes(held.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    registered = healthbook(settings, "clinic", "register", "--clinic", "56007", "--key-id", "legacy-1",
                            "--public-key", str(public))
    assert registered.returncode == 0, registered.stderr
    event = visit(person=new_citizen(), facility="56007", sequence=next_sequence())
    async with clinics.publisher("56007", held) as pub:
        await (await pub.publish(event))
    await wait_until(lambda: visible(db, "56007", event["visit_code"]), "the visit", process=clinics.worker)


def as_a_clinic(settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The command run on a clinic's machine: no HEALTHBOOK_KAFKA_USER, only the clinic's own password file."""
    env = settings_env(settings)
    env.pop("HEALTHBOOK_KAFKA_USER", None)
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_a_clinic_publishes_as_its_own_principal_without_being_told_and_is_told_in_one_line_when_it_has_none(
        clinics, db, settings):
    # a run of the suite before this one on the same stack left the clinic's login here; this test needs none
    (settings.kafka_credentials_dir / "clinic-56012").unlink(missing_ok=True)
    made = healthbook(settings, "clinic", "keygen", "--clinic", "56012", "--key-id", "k1")
    assert made.returncode == 0, made.stderr
    request = settings.key_dir / "56012" / "k1.csr"
    assert healthbook(settings, "ca", "issue", "--clinic", "56012", str(request)).returncode == 0
    assert healthbook(settings, "clinic", "register", "--clinic", "56012", "--certificate",
                      str(request.with_suffix(".crt"))).returncode == 0

    refused = as_a_clinic(settings, "publish", "--clinic", "56012", "--synthetic", "2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and "broker add-clinic --clinic 56012" in refused.stderr

    assert healthbook(settings, "broker", "add-clinic", "--clinic", "56012").returncode == 0
    published = as_a_clinic(settings, "publish", "--clinic", "56012", "--synthetic", "2")
    assert published.returncode == 0, published.stderr
    assert "published 2 visit(s) for clinic 56012" in published.stdout
    await wait_until(lambda: db.fetchval("select count(*) from health_book_visits where facility_code = '56012'"),
                     "the clinic's visits", process=clinics.worker)


def test_a_certificate_for_a_negative_number_of_days_is_refused_in_one_line(settings):
    result = healthbook(settings, "ca", "issue", "--clinic", "56001", "--days", "-1", "nothing.csr")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'-1' is not a positive whole number of days" in result.stderr
