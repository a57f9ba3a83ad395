"""The share board: work stealing from both ends, reservations, release, hedges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stoic.schedule.share.board import Chunk, ShareBoard


def test_edge_takes_the_front_and_clouds_the_back() -> None:
    b = ShareBoard(100)
    assert b.take("edge", 10, from_back=False) == Chunk(0, 10)
    assert b.take("gpu1", 30, from_back=True) == Chunk(70, 100)
    assert b.take("cpu", 5, from_back=True) == Chunk(65, 70)
    assert b.pending_images() == 55 and b.open_images() == 100
    assert b.complete("edge", Chunk(0, 10), list(range(10))) == 10
    assert b.open_images() == 90 and not b.finished


def test_a_reserved_chunk_is_stolen_front_most_first_and_not_started_twice() -> None:
    b = ShareBoard(100)
    b.take("edge", 40, from_back=False)
    far = b.take("gpu1", 30, from_back=True, reserve=True)
    near = b.take("gpu1", 30, from_back=True, reserve=True)
    assert (far, near) == (Chunk(70, 100), Chunk(40, 70))
    assert b.steal("edge") == Chunk(40, 70)  # the front-most: the edge's next images
    assert not b.start("gpu1", near)  # stolen: gpu1 must not label it
    assert b.start("gpu1", far)
    assert b.steal("edge") is None  # started chunks are not stealable
    assert b.stats.steals == 1


def test_release_returns_unfinished_work_and_keeps_what_was_labelled() -> None:
    b = ShareBoard(50)
    b.take("edge", 10, from_back=False)
    c = b.take("gpu1", 40, from_back=True)
    assert c == Chunk(10, 50)
    # the edge hedged part of it? no: gpu1 fails; its chunk returns whole
    assert b.release("gpu1") == [c]
    assert b.pending_images() == 40
    assert b.take("edge", 100, from_back=False) == Chunk(10, 50)


def test_hedge_duplicates_once_and_the_first_result_wins() -> None:
    b = ShareBoard(20, max_hedges=1)
    edge = b.take("edge", 10, from_back=False)
    slow = b.take("cpu", 10, from_back=True)
    assert edge is not None and slow is not None
    b.complete("edge", edge, ["e"] * 10)
    assert b.take("edge", 5, from_back=False) is None and b.steal("edge") is None
    assert b.hedge("edge") == slow
    assert b.hedge("edge") is None  # the budget is one hedge per batch
    assert b.complete("edge", slow, ["h"] * 10) == 10
    assert b.finished
    assert b.complete("cpu", slow, ["c"] * 10) == 0  # too late: counted as waste
    assert b.stats.duplicate_images == 10
    assert {owner for owner, _ in b.ordered_results()} == {"edge"}


def test_a_hedged_chunk_survives_its_owner_failing() -> None:
    b = ShareBoard(10)
    c = b.take("cpu", 10, from_back=True)
    assert c is not None and b.hedge("edge") == c
    assert b.release("cpu") == []  # the hedger carries on: nothing to requeue
    assert b.held_by("edge") == [c] and b.pending_images() == 0


def test_a_restart_hands_out_only_the_unfinished_images() -> None:
    b = ShareBoard(10, done=[0, 1, 2, 5, 9])
    assert b.open_images() == 5
    assert b.take("edge", 10, from_back=False) == Chunk(3, 5)
    assert b.take("gpu1", 10, from_back=True) == Chunk(6, 9)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 60),
    done=st.sets(st.integers(0, 59), max_size=20),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["take-front", "take-back", "reserve", "start", "steal", "hedge",
                             "complete", "release"]),
            st.sampled_from(["edge", "cpu", "gpu1"]),
            st.integers(1, 15),
        ),
        max_size=60,
    ),
)  # fmt: skip
def test_every_image_is_labelled_exactly_once_whatever_happens(
    n: int, done: set[int], ops: list[tuple[str, str, int]]
) -> None:
    """Any interleaving of takes, steals, hedges, failures and completions, then
    everyone drains the board: each image ends with exactly one first result, and no
    image is ever held by two participants except as a hedge."""
    b = ShareBoard(n, done=done)
    for op, who, k in ops:
        if op == "take-front":
            b.take(who, k, from_back=False)
        elif op == "take-back":
            b.take(who, k, from_back=True)
        elif op == "reserve":
            b.take(who, k, from_back=True, reserve=True)
        elif op == "start":
            for c in b.reserved_by(who)[:1]:
                b.start(who, c)
        elif op == "steal":
            b.steal(who)
        elif op == "hedge":
            b.hedge(who)
        elif op == "complete":
            for c in b.held_by(who)[:1]:
                b.complete(who, c, [who] * c.size)
        else:
            b.release(who)
        held = [i for h in b._held for i in range(h.chunk.start, h.chunk.stop)]
        pending = [i for c in b._pending for i in range(c.start, c.stop)]
        assert len(held) == len(set(held)), "an image held twice outside a hedge"
        assert not set(held) & set(pending)
        assert not set(pending) & set(b.results)
    for who in ("edge", "cpu", "gpu1"):
        b.release(who)
    while (c := b.take("edge", 7, from_back=False)) is not None:
        b.complete("edge", c, ["edge"] * c.size)
    assert b.finished
    assert sorted(b.results) == list(range(n))
