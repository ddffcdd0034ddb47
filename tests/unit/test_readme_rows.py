"""README's "Where to change what" names only files that exist, so the next engineer is never sent nowhere."""

from __future__ import annotations

import re

from healthbook.config import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
TOP = ("schemas", "domain", "healthbook", "producers", "streams", "consumers", "commands", "synthetic", "tests",
       "clients", "docs", "stack", "benchmarks")


def _rows() -> list[str]:
    section = README[README.index("### Where to change what"):]
    section = section[:section.index("\n### ", 1)]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]


def _paths(row: str) -> list[str]:
    return [p for p in re.findall(r"`([^`\s]+)`", row) if p.split("/")[0] in TOP]


def test_the_table_has_the_rows_a_new_engineer_looks_for():
    firsts = [row.split("|")[1].strip() for row in _rows()]
    for wanted in ("a new QĐ 4750 XML table", "the signing layout", "a dead-letter reason", "a refusal code"):
        assert any(first.startswith(wanted) for first in firsts), wanted


def test_every_file_a_row_names_exists():
    named = [path for row in _rows() for path in _paths(row)]
    assert len(named) > 30
    for path in named:
        pattern = path.replace("vN", "v*").replace("NNN", "*")
        assert list(PROJECT_ROOT.glob(pattern)), f"README names {path}, which does not exist"
