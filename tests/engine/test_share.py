"""The fair-share rules of shared runs as pure functions (engine/leases.py): the share, the claim limit, how much
to hand back, which tasks, and which targets to claim first."""

from __future__ import annotations

import pytest

from orchestrator.engine.claims import (
    MIN_SHARE,
    claim_limit,
    claim_preference,
    fair_share,
    hand_back_choice,
    hand_back_count,
)
from orchestrator.store.leases import HeldTask


@pytest.mark.parametrize(("unfinished", "workers", "share"), [
    (300, 1, 300),
    (300, 3, 100),
    (301, 3, 101),  # rounded up: the shares together always cover the run
    (299, 3, 100),
    (25, 3, MIN_SHARE),  # near the end: never below the floor
    (0, 2, MIN_SHARE),
    (100, 0, 100),  # no live worker counted (the asking one always is): as if alone
])
def test_the_share_is_the_unfinished_count_over_the_live_workers_never_below_the_floor(
        unfinished: int, workers: int, share: int) -> None:
    assert fair_share(unfinished, workers) == share


def test_the_shares_of_all_live_workers_cover_every_unfinished_task() -> None:
    for unfinished in range(0, 400, 7):
        for workers in range(1, 9):
            assert fair_share(unfinished, workers) * workers >= unfinished


@pytest.mark.parametrize(("claim_size", "share", "held", "limit"), [
    (100, 300, 0, 100),  # a batch at a time
    (100, 100, 60, 40),  # never past the share
    (100, 100, 100, 0),
    (100, 100, 130, 0),  # over the share: no claim at all
    (20, 100, 90, 10),
])
def test_a_claim_takes_a_batch_at_most_and_never_past_the_share(claim_size: int, share: int, held: int,
                                                                  limit: int) -> None:
    assert claim_limit(claim_size, share, held) == limit


@pytest.mark.parametrize(("share", "held", "others", "free", "count"), [
    (100, 300, [0, 0], 0, 200),  # two joiners with nothing: hand back all that is over the share
    (100, 300, [0], 0, 100),  # one joiner: what it can take (the third share has nobody to go to yet)
    (100, 300, [0, 0], 150, 50),  # the joiners claim the free tasks first; only the rest is handed back
    (100, 300, [0, 0], 400, 0),
    (100, 100, [0, 0], 0, 0),  # at its share: keeps everything
    (59, 64, [55, 58], 0, 0),  # all about at their share: moving a handful helps nobody
    (50, 70, [30, 50], 0, 20),  # one short by 20: gets it
    (50, 70, [42, 49], 0, 0),  # short by 8 and 1: below the floor, no move
    (MIN_SHARE, 20, [0, 5], 0, MIN_SHARE),  # the tail: a worker with nothing still gets the floor's worth
])
def test_how_many_tasks_a_worker_over_its_share_hands_back(share: int, held: int, others: list[int], free: int,
                                                           count: int) -> None:
    assert hand_back_count(share, held, others, free) == count


def _held(spec: dict[str | None, int]) -> list[HeldTask]:
    out = []
    for target, n in spec.items():
        out += [HeldTask(f"{target}-{i:03d}", target) for i in range(n)]
    return out


def test_hand_back_gives_the_targets_held_fewest_of_first_and_keeps_the_rest_whole() -> None:
    held = _held({"bj4": 50, "sg": 5, "hk": 20})
    chosen = hand_back_choice(held, 25)
    assert len(chosen) == 25
    # All of sg (5) and of hk (20); bj4, the target held most of, stays whole.
    assert {j.split("-")[0] for j in chosen} == {"sg", "hk"}
    assert sum(j.startswith("hk") for j in chosen) == 20
    # Partly: the last claimed of a target go first.
    part = hand_back_choice(held, 8)
    assert part[:5] == [f"sg-{i:03d}" for i in (4, 3, 2, 1, 0)]
    assert part[5:] == ["hk-019", "hk-018", "hk-017"]


def test_hand_back_never_gives_a_task_in_flight_nor_a_family_member() -> None:
    held = [HeldTask("a", None), HeldTask("b", None), HeldTask("c", None, family=True), HeldTask("d", None)]
    assert hand_back_choice(held, 10, keep={"b"}) == ["d", "a"]
    assert hand_back_choice(held, 1, keep={"b", "d"}) == ["a"]
    assert hand_back_choice(held, 3, keep={"a", "b", "d"}) == []
    assert hand_back_choice(held, 0) == []


def test_hand_back_ranks_targets_by_what_we_hold_even_of_tasks_we_keep() -> None:
    # Of "big" we hold 6, four of them in flight: it still counts as the target we hold most of.
    held = _held({"big": 6, "small": 3})
    chosen = hand_back_choice(held, 4, keep={f"big-00{i}" for i in range(4)})
    assert chosen == ["small-002", "small-001", "small-000", "big-005"]


def test_claims_prefer_our_targets_then_free_ones_then_the_rest() -> None:
    first, last = claim_preference({"bj4": 3}, {"bj4", "sg"})
    assert first == {"bj4"}
    assert last == {"sg"}  # ours too is not "last" even if another worker also holds some of it
    # One target, or none named: no preference, task order alone.
    assert claim_preference({None: 40}, {None}) == (set(), set())
    assert claim_preference({}, set()) == (set(), set())
