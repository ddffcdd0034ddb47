"""Release decisions: each released group holds k people, each held visit is decided once, small counts stay hidden."""

from collections import defaultdict
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.k_anonymity import (
    COARSE,
    FINE,
    RELEASED,
    SUPPRESSED,
    WAITING,
    Held,
    release_coarse,
    release_fine,
    suppress_small_counts,
)

# a visit: (person, fine cell, coarse cell); fine cells nest in coarse ones as age bands nest in wider ones
visits = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 11)), min_size=1, max_size=120)


def _decide(arrivals: list[tuple[int, int]], k: int, close_after: int) -> dict[str, Held]:
    """Hold visits one at a time as the stage does, reading only waiting visits and the cells already open."""
    rows: dict[str, Held] = {}
    opened: dict[int, set[str]] = {FINE: set(), COARSE: set()}
    closed = False

    def waiting() -> list[Held]:
        return [row for row in rows.values() if row.state == WAITING]

    for n, (person, cell) in enumerate(arrivals):
        ref = f"v{n}"
        rows[ref] = Held(ref, f"p{person}", f"f{cell}", f"c{cell // 4}")
        for released in release_fine(waiting(), k, opened[FINE]):
            rows[released] = replace(rows[released], state=RELEASED, released_as=FINE)
            opened[FINE].add(rows[released].fine_cell)
        if n + 1 == close_after:
            closed = True
        if closed:  # at close, and for each late visit after it
            widened, suppressed = release_coarse(waiting(), k, opened[COARSE])
            for released in widened:
                rows[released] = replace(rows[released], state=RELEASED, released_as=COARSE)
                opened[COARSE].add(rows[released].coarse_cell)
            for gone in suppressed:
                rows[gone] = replace(rows[gone], state=SUPPRESSED)
    return rows


@settings(max_examples=400, deadline=None)
@given(visits, st.integers(2, 6), st.integers(1, 130))
def test_every_released_group_holds_k_people_and_nothing_is_decided_twice(arrivals, k, close_after):
    rows = _decide(arrivals, k, close_after)
    groups: dict[tuple[int, str], set[str]] = defaultdict(set)
    for row in rows.values():
        if row.state == RELEASED:
            groups[(row.released_as, row.fine_cell if row.released_as == FINE else row.coarse_cell)].add(row.person)
    assert all(len(people) >= k for people in groups.values()), groups
    if close_after <= len(arrivals):
        assert all(row.state != WAITING for row in rows.values()), "a closed window leaves nothing waiting"
    assert len(rows) == len(arrivals)


def test_one_person_many_times_is_still_one_person():
    rows = [Held(f"v{n}", "same-person", "cell", "wide") for n in range(10)]
    assert release_fine(rows, 5) == []
    assert release_coarse(rows, 5) == ([], [f"v{n}" for n in range(10)])


def test_a_cell_released_widened_does_not_count_towards_its_finer_cell():
    earlier = [Held(f"w{n}", f"p{n}", "fine", "wide", RELEASED, COARSE) for n in range(4)]
    assert release_fine([*earlier, Held("late", "p9", "fine", "wide")], 5) == []


counts = st.dictionaries(st.tuples(st.sampled_from("abc"), st.sampled_from("vwxyz")),
                         st.integers(1, 12).flatmap(lambda people: st.tuples(st.integers(people, 30), st.just(people))),
                         min_size=1)


@given(counts, st.integers(2, 6))
def test_no_small_count_is_shown_or_can_be_worked_out_from_its_group(table, k):
    kept = suppress_small_counts(table, k)
    assert all(table[key][1] >= k for key in kept)
    for group in {g for g, _ in table}:
        hidden = sum(people for (g, item), (_, people) in table.items() if g == group and (g, item) not in kept)
        shown = [key for key in kept if key[0] == group]
        assert hidden == 0 or hidden >= k or not shown, "the group's total less what is shown must not be small"
    assert all(kept[key] == table[key][0] for key in kept), "what is shown is the true count of visits"
