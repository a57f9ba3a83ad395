"""The replay's probe shortcut walks the inquisitor's ticks a run at a time
(:func:`stoic.replay.runner.probe_walk`): the same ticks as a walk tick by tick."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stoic.replay.runner import probe_walk


def tick_by_tick(steps: list[int]) -> tuple[list[int], int]:
    walked, k = [], 0
    while k < len(steps):
        walked.append(k)
        k += steps[k]
    return walked, k


@given(arrays(np.int64, st.integers(1, 300), elements=st.integers(1, 12)))
def test_the_walk_is_the_tick_by_tick_walk(steps: np.ndarray) -> None:
    walk, beyond = probe_walk(steps)
    assert (walk.tolist(), beyond) == tick_by_tick(steps.tolist())


def test_runs_and_skips() -> None:
    walk, beyond = probe_walk(np.array([1, 1, 3, 1, 1, 1, 2, 1, 4]))
    assert walk.tolist() == [0, 1, 2, 5, 6, 8]
    assert beyond == 12
    assert probe_walk(np.ones(4, dtype=np.int64))[0].tolist() == [0, 1, 2, 3]
