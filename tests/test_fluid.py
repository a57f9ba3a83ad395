"""The fluid finish of a batch shared across runtimes (share's forecast, the bound's pieces)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoic.schedule.share.fluid import Capacity, fluid_bound


def test_one_runtime_is_its_own_total() -> None:
    assert fluid_bound(100, [Capacity(10, 5, 0.5)]) == pytest.approx(65)


def test_a_late_runtime_that_cannot_help_is_ignored() -> None:
    edge = Capacity(0, 10, 2.0)  # 100 images done at 210 s
    late = Capacity(500, 0, 0.1)
    assert fluid_bound(100, [edge, late]) == pytest.approx(210)


def test_two_runtimes_share() -> None:
    # edge from 0 at 1 img/s, gpu from 20 s at 4 img/s: T + 4 (T - 20) = 100 → T = 36.
    assert fluid_bound(100, [Capacity(0, 0, 1.0), Capacity(15, 5, 0.25)]) == pytest.approx(36)


def test_edge_cases() -> None:
    assert fluid_bound(0, [Capacity(0, 0, 1.0)]) == 0
    assert fluid_bound(5, []) == math.inf
    assert fluid_bound(5, [Capacity(math.inf, 0, 1.0)]) == math.inf


caps = st.lists(
    st.builds(
        Capacity,
        st.floats(0, 1000),
        st.floats(0, 100),
        st.floats(0.01, 10),
    ),
    min_size=1,
    max_size=5,
)


@given(n=st.integers(1, 3000), runtimes=caps)
def test_the_bound_is_exact_and_never_above_any_single_runtime(
    n: int, runtimes: list[Capacity]
) -> None:
    t = fluid_bound(n, runtimes)
    done = sum(max(0.0, (t - c.start_s) / c.per_image_s) for c in runtimes)
    assert done == pytest.approx(n, rel=1e-6)
    assert t <= min(c.start_s + n * c.per_image_s for c in runtimes) + 1e-6
