"""Values the core passes around: an Estimate's total is the sum of its components,
whichever way the estimate was made (it is summed once, at construction)."""

from __future__ import annotations

import math
from dataclasses import replace

from stoic.values import Component, Estimate, Risk


def test_total_adds_means_and_variances() -> None:
    e = Estimate("gpu1", Component(1.0, 3.0), Component(10.0, 4.0), Component(5.0, 12.0))
    assert e.total == Component(16.0, math.hypot(math.hypot(3.0, 4.0), 12.0))


def test_a_replaced_estimate_has_the_total_of_its_new_components() -> None:
    e = Estimate("gpu1", Component(1.0), Component(10.0), Component(5.0))
    warm = replace(e, deployment=Component(0.0), risk=Risk(p_timeout=0.0))
    assert warm.total == Component(6.0)
    assert e.total == Component(16.0)


def test_estimates_compare_by_their_components_only() -> None:
    a = Estimate("gpu1", Component(1.0), Component(10.0), Component(5.0))
    assert a == Estimate("gpu1", Component(1.0), Component(10.0), Component(5.0))
    assert a != replace(a, processing=Component(6.0))
    assert "total" not in repr(a)
