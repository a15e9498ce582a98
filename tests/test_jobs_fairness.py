"""Fair order: round-robin between owners (whoever ran longest ago goes next), FIFO within one owner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from webui.core.jobs.fairness import fair_order


def _jobs(owners: str) -> list[tuple[str, str]]:
    return [(f"{o}{i}", o) for i, o in enumerate(owners)]


def test_three_owners_interleave() -> None:
    queued = _jobs("AAAAABBBCC")
    order = fair_order(queued, {})
    assert [j[0] for j in order] == list("ABCABCABAA")
    assert [int(j[1:]) for j in order if j[0] == "A"] == [0, 1, 2, 3, 4]  # FIFO within an owner


def test_owner_who_ran_recently_waits_for_the_others() -> None:
    queued = _jobs("AABC")
    # A's last job started after B's and C's: B and C go first
    assert [j[0] for j in fair_order(queued, {"A": 9, "B": 3, "C": 5})] == list("BCAA")
    # someone who never ran goes before everyone who did
    assert [j[0] for j in fair_order(queued, {"A": 9, "B": 3})] == list("CBAA")


@given(
    st.lists(st.sampled_from("ABCD"), max_size=30),
    st.dictionaries(st.sampled_from("ABCD"), st.integers(0, 50)),
)
def test_order_is_a_fair_permutation(owners: list[str], last_run: dict[str, int]) -> None:
    queued = _jobs("".join(owners))
    order = fair_order(queued, last_run)
    assert sorted(order) == sorted(j for j, _ in queued)
    for owner in set(owners):  # FIFO within each owner
        mine = [j for j in order if j[0] == owner]
        assert mine == [j for j, o in queued if o == owner]
    # round-robin: while two owners both still wait, neither runs twice before the other runs once
    position = {j: i for i, j in enumerate(order)}
    for a in set(owners):
        for b in set(owners) - {a}:
            a_pos = sorted(position[j] for j, o in queued if o == a)
            b_pos = sorted(position[j] for j, o in queued if o == b)
            for x, y in zip(a_pos, a_pos[1:], strict=False):
                if b_pos and b_pos[-1] > y:  # b still had jobs waiting after a's second pick
                    assert any(x < p < y for p in b_pos), (order, a, b)
