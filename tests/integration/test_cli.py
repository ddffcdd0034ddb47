"""The healthbook command as a clinic integrator uses it: register a key, publish a file."""

import json
import subprocess
import sys

import pytest

from commands.processes import settings_env
from healthbook.config import PROJECT_ROOT
from tests.factories import visit
from tests.integration.conftest import new_citizen, next_sequence, visible, wait_until

pytestmark = pytest.mark.integration


def healthbook(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=PROJECT_ROOT,
                          env=settings_env(settings), capture_output=True, text=True, timeout=120)


async def test_register_then_publish_a_file_with_one_bad_line(clinics, db, settings, tmp_path):
    registered = healthbook(settings, "clinic", "register", "--clinic", "56001", "--key-id", "his-2026")
    assert registered.returncode == 0, registered.stderr
    assert (settings.key_dir / "56001" / "his-2026.pem").stat().st_mode & 0o077 == 0, "private key is owner-only"

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


def test_register_refuses_a_malformed_clinic_code(settings):
    result = healthbook(settings, "clinic", "register", "--clinic", "7900")
    assert result.returncode != 0
    assert "clinic code '7900' must be 5 digits" in result.stderr
