"""docs/reliability.md is written by two tools: each replaces its own part and keeps the other's."""

from tests import fault_suite, soak
from tests.fault_suite import Outcome, Plan

HISTORY = "\n## Soak runs before the one reported below\n\n- on abc1234: FAIL on memory\n"
SOAK = "\n## The soak: 30 minutes of random faults on three brokers\n\nResult: **PASS**\n"


def test_the_fault_suite_rewrites_its_table_and_keeps_the_soak_history_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(fault_suite, "PROJECT_ROOT", tmp_path)
    docs = tmp_path / "reliability.md"
    docs.write_text("# Reliability: the fault suite\n\nan old table\n" + HISTORY + SOAK, encoding="utf-8")
    fault_suite.write_docs(docs, [Outcome(Plan("worker killed", 100, 10, 50.0))], 100, 10, 50.0, "Run 1 of 3.")
    text = docs.read_text(encoding="utf-8")
    assert "an old table" not in text and "Run 1 of 3." in text and "| worker killed | 0 |" in text
    assert text.endswith(HISTORY + SOAK) and text.count("## The soak:") == 1


def test_the_soak_replaces_its_report_and_keeps_the_fault_suites_table_and_history(tmp_path, monkeypatch):
    monkeypatch.setattr(soak, "report_markdown", lambda report: "## The soak: a new report\n\nResult: **PASS**")
    docs = tmp_path / "reliability.md"
    docs.write_text("# Reliability: the fault suite\n\nthe table\n" + HISTORY + SOAK, encoding="utf-8")
    soak.write_report(docs, None)  # type: ignore[arg-type]
    text = docs.read_text(encoding="utf-8")
    assert "the table" in text and HISTORY.strip() in text and "a new report" in text
    assert "30 minutes of random faults" not in text and text.count("## The soak:") == 1
