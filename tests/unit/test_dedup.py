"""The deduplication decision."""

from domain.dedup import Candidate, Freshness, decide, plan


def test_decide():
    assert decide(None, 1) is Freshness.NEW
    assert decide(1, 2) is Freshness.NEWER
    assert decide(2, 2) is Freshness.DUPLICATE
    assert decide(3, 2) is Freshness.DUPLICATE


def test_plan_sees_earlier_decisions_of_the_same_batch():
    stored = {"A": {"79001/1": 2}}
    batch = [
        Candidate("A", "79001/1", 1),  # older than stored
        Candidate("A", "79001/1", 3),  # newer
        Candidate("A", "79001/1", 3),  # re-sent in the same batch
        Candidate("B", "79001/2", 1),
        Candidate("A", "01002/1", 1),  # same MA_LK number at another facility is another visit
    ]
    decisions, updated = plan(batch, lambda pid: stored.get(pid, {}))
    assert decisions == [Freshness.DUPLICATE, Freshness.NEWER, Freshness.DUPLICATE, Freshness.NEW, Freshness.NEW]
    assert updated == {"A": {"79001/1": 3, "01002/1": 1}, "B": {"79001/2": 1}}
    assert stored == {"A": {"79001/1": 2}}, "the stored state is not modified in place"
