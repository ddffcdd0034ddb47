"""Every reader of outside bytes keeps its rejection path under hostile input (seeded and bounded; see make fuzz)."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.mutations import mutated
from tests.fuzz.targets import TARGETS, keyed

EXAMPLES = {"dossier": 150}  # each dossier example writes and parses a file
CORPUS = json.loads((Path(__file__).parents[1] / "fuzz" / "regressions.json").read_text())["cases"]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_no_exception_escapes_the_rejection_path(name):
    target = TARGETS[name]
    seeds = target.seeds()

    @settings(max_examples=EXAMPLES.get(name, 400), derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        target.check(data.draw(mutated(seeds)))

    check()
    assert {target.check(seed) for seed in seeds} <= {"accepted", "served", "applied", "tombstone",
                                                        "tombstone_ignored", "shown", "read"}


@pytest.mark.parametrize("case", CORPUS, ids=[f"{c['target']}-{i}" for i, c in enumerate(CORPUS)])
def test_inputs_that_once_crashed_stay_on_the_rejection_path(case):
    value = bytes.fromhex(case["value"])
    data = keyed(case["key"].encode(), value) if case["target"] == "visit_envelope" else value
    assert TARGETS[case["target"]].check(data) in {"rejected", "refused", "unreadable", "untrusted", "not_xml",
                                                  "hoso_rejected"}


def test_make_fuzz_runs_every_target():
    from tests.fuzz.run import TARGET_NAMES

    assert sorted(TARGET_NAMES) == sorted(TARGETS)
