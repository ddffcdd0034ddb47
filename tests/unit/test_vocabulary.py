"""Each code is written once: no reason, refusal or outcome is a string literal outside its vocabulary module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from healthbook.config import PROJECT_ROOT
from schemas.dead_letter_reasons import DeadLetterReason
from schemas.outcomes import REJECTED_PREFIX, AccessOutcome, Outcome
from schemas.refusal_codes import RefusalCode, ReplyStatus
from schemas.registry_reasons import IgnoredBecause

VOCABULARY = {
    "schemas/dead_letter_reasons.py": DeadLetterReason,
    "schemas/refusal_codes.py": (RefusalCode, ReplyStatus),
    "schemas/outcomes.py": (Outcome, AccessOutcome),
    "schemas/registry_reasons.py": IgnoredBecause,
}
WORDS = {str(member) for enum in (DeadLetterReason, RefusalCode, ReplyStatus, Outcome, AccessOutcome, IgnoredBecause)
         for member in enum}
PRODUCTION = ("schemas", "domain", "healthbook", "producers", "streams", "consumers", "synthetic", "commands")
# The same letters meaning something else, each with its reason.
NOT_OUR_CODES = {
    ("domain/fhir_bundle.py", "accepted"),  # FHIR Appointment.participant.status
}


def _field_names(tree: ast.AST) -> set[int]:
    """ids of constants that name a field (dict keys, subscripts, .get()), not a code."""
    names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            names.add(id(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:
            names.add(id(node.args[0]))
    return names


def _enum_bodies(tree: ast.AST) -> set[int]:
    """ids of constants that define an enum member (any StrEnum may reuse a word as its own value)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") in ("StrEnum", "Enum") for b in node.bases):
            inside.update(id(child) for child in ast.walk(node))
    return inside


def literal_codes(path: Path) -> list[tuple[int, str]]:
    """(line, word) of every code written as a string literal in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _field_names(tree) | _enum_bodies(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped \
                and (node.value in WORDS or node.value.startswith(REJECTED_PREFIX)):
            found.append((node.lineno, node.value))
    return found


def production_modules() -> list[Path]:
    return sorted(p for package in PRODUCTION for p in (PROJECT_ROOT / package).rglob("*.py"))


def test_the_scan_finds_a_code_written_out():
    assert literal_codes_of("status = 'refused'\ncounts['rejected:malformed'] += 1\nlog('duplicate')\n") == [
        (1, "refused"), (3, "duplicate")]
    assert literal_codes_of("x = f'rejected:{reason}'\n") == [(1, "rejected:")]


def literal_codes_of(source: str, tmp: Path = PROJECT_ROOT / ".local" / "vocabulary_probe.py") -> list[tuple[int, str]]:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(source, encoding="utf-8")
    try:
        return literal_codes(tmp)
    finally:
        tmp.unlink()


@pytest.mark.parametrize("path", production_modules(), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_no_code_is_a_string_literal_outside_its_vocabulary_module(path):
    relative = path.relative_to(PROJECT_ROOT).as_posix()
    if relative in VOCABULARY:
        return
    found = [(line, word) for line, word in literal_codes(path) if (relative, word) not in NOT_OUR_CODES]
    assert not found, f"{relative} writes codes out; import them from schemas/ instead: {found}"


def test_no_template_writes_a_code_out():
    expression = re.compile(r"\{[{%](.*?)[%}]\}", re.S)
    for template in (PROJECT_ROOT / "commands" / "citizen_page" / "templates").glob("*.html"):
        for block in expression.findall(template.read_text(encoding="utf-8")):
            written = set(re.findall(r"[\"']([a-z_:]+)[\"']", block)) & WORDS
            assert not written, f"{template.name} compares with {written}; pass the enum to the template instead"
