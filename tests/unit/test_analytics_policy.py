"""Subscriber policies: the shipped ones load, and a wrong file says what to fix."""

from pathlib import Path

import pytest

from domain.analytics_policy import PolicyError, load_policies, parse_policy
from healthbook.config import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "ops" / "analytics"


def test_the_shipped_policies_load_and_differ_in_what_they_give():
    policies = {p.name: p for p in load_policies(SHIPPED)}
    assert set(policies) == {"health-statistics", "university-research"}
    assert policies["health-statistics"].pseudonym_period is None
    assert "facility_code" in policies["health-statistics"].quasi_identifiers
    assert policies["university-research"].pseudonym_period == "year"
    assert "facility_code" not in policies["university-research"].receives
    assert all("admitted_month" in p.quasi_identifiers for p in policies.values())


@pytest.mark.parametrize(("text", "says"), [
    ('name = "x"\nreceives = ["age_band", "personal_id"]', "personal_id, which no subscriber can receive"),
    ('name = "x"\nreceives = ["pseudonym", "lifetime_pseudonym"]', "one kind"),
    ('name = "x"\nreceives = []\nk = 1', "k must be a whole number of at least 2"),
    ('name = "x"\nreceives = []\nage_band_years = 3', "age_band_years must be one of"),
    ('name = "Bad Name"\nreceives = []', "name must be"),
    ('name = "x"\nreceives = []\nextra = 1', "unknown setting(s) extra"),
    ('name = "x"\nreceives = "age_band"', "receives must be a list"),
    ("name = [", "not TOML"),
])
def test_a_wrong_policy_names_its_file_and_the_fix(text, says):
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "ops/analytics/x.toml")
    assert "ops/analytics/x.toml" in str(raised.value) and says in str(raised.value)


def test_two_files_for_one_subscriber_are_refused(tmp_path: Path):
    for file in ("a.toml", "b.toml"):
        (tmp_path / file).write_text('name = "same"\nreceives = ["sex"]\n')
    with pytest.raises(PolicyError, match="already defined"):
        load_policies(tmp_path)


def test_a_missing_directory_is_named(tmp_path: Path):
    with pytest.raises(PolicyError, match="HEALTHBOOK_ANALYTICS_POLICY_DIR"):
        load_policies(tmp_path / "nowhere")


def test_the_contract_explains_every_item_a_policy_can_name():
    from domain.analytics_policy import RECEIVABLE

    contract = (PROJECT_ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    section = contract[contract.index("## 12. Analytics subscribers"):]
    assert [item for item in RECEIVABLE if f"`{item}`" not in section] == []
