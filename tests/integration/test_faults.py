"""The fault suite in small: a worker SIGKILLed and PostgreSQL stopped under load lose and double nothing."""

import pytest

from tests.fault_suite import Plan, run_scenario, table_markdown

pytestmark = pytest.mark.integration


async def test_a_killed_worker_and_a_stopped_database_lose_and_double_nothing():
    outcome = await run_scenario(Plan("make test", events=2_000, citizens=200, rate=400, kills=1,
                                      database_stop_seconds=5))
    report = table_markdown([outcome])
    assert outcome.published == 2_000 and outcome.poison > 0, report
    assert outcome.rows == outcome.expected_rows > 0, report
    assert (outcome.lost, outcome.doubled) == (0, 0), report
    assert outcome.checksum_match and outcome.counts_match and outcome.dedup_state_agrees, report
    assert outcome.dead_lettered == outcome.expected_dead == outcome.poison, report
    assert outcome.requests_answered and outcome.unexpected_exits == [], report
