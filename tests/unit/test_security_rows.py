"""docs/security.md names, for each attack, the test that stops it: every test it names exists."""

from __future__ import annotations

import re

from healthbook.config import PROJECT_ROOT

SECURITY = (PROJECT_ROOT / "docs" / "security.md").read_text(encoding="utf-8")
TESTS = {path.name: path.read_text(encoding="utf-8") for path in (PROJECT_ROOT / "tests").rglob("test_*.py")}


def test_every_test_file_and_test_the_threat_model_names_exists():
    missing = []
    for row in (line for line in SECURITY.splitlines() if line.startswith("| ")):
        current = None
        for file, test in re.findall(r"`(?:(test_[a-z0-9_]+\.py))?(?:::(test_[a-z0-9_]+))?`", row):
            current = file or current
            if file and file not in TESTS:
                missing.append(file)
            if test and (current is None or f"def {test}(" not in TESTS.get(current, "")):
                missing.append(f"{current}::{test}")
    assert missing == []
