"""The soak's nemesis schedule: a seed gives one schedule, every kind of fault comes up, none at the very end."""

from tests.soak import FAULT_WEIGHTS, REGISTRY_STEPS, schedule


def test_a_seed_replays_the_same_schedule_and_another_seed_does_not():
    assert schedule(4242, 1800) == schedule(4242, 1800)
    assert schedule(4242, 1800) != schedule(4243, 1800)


def test_half_an_hour_mixes_every_kind_of_fault_and_changes_the_registries_once_each():
    plan = schedule(4242, 1800)
    kinds = [f.kind for f in plan]
    assert set(FAULT_WEIGHTS) <= set(kinds)
    assert [k for k in kinds if k in dict((kind, 0) for _, kind in REGISTRY_STEPS)] == [k for _, k in REGISTRY_STEPS]
    assert [f.at for f in plan] == sorted(f.at for f in plan)
    assert all(5.0 <= f.hold <= 20.0 for f in plan if f.kind in FAULT_WEIGHTS)


def test_no_fault_starts_in_the_last_minute_so_the_end_is_checked_calm():
    for seed in range(20):
        assert max(f.at for f in schedule(seed, 600) if f.kind in FAULT_WEIGHTS) < 540
