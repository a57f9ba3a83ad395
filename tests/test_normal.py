"""stoic.normal equals scipy.special bit for bit: the replay's figures depend on it.

Bit for bit means the same 64 bits (a NaN matches any NaN): over the whole range of
doubles (random bit patterns), dense grids, the tails, subnormals, the signed zeros,
the infinities, NaN and both sides of every branch point of the Cephes code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sc
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stoic.normal import ndtr, ndtri

EXP_M2 = 0.13533528323661269189
TINY = 5e-324
# ndtr's branch points in x: |x|/√2 = 1 (erf | erfc), 8 (erfc's two fractions) and
# sqrt(MAXLOG) (exp(-x²/2) underflows)
NDTR_POINTS = [math.sqrt(2), 8 * math.sqrt(2), math.sqrt(2 * 7.09782712893383996843e2)]
# ndtri's in y: exp(-2), 1 - exp(-2), and sqrt(-2 log y) = 8 (exp(-32))
NDTRI_POINTS = [EXP_M2, 1 - EXP_M2, math.exp(-32), 1 - math.exp(-32), 0.5]
SPECIAL = [0.0, -0.0, 1.0, -1.0, math.inf, -math.inf, math.nan, 1e-300, -1e-300, TINY, -TINY,
           2.2250738585072014e-308, 1e-310, 1 - 1e-16, 1 + 1e-16, 1 - 2**-53, 1e300, -1e300,
           1.7976931348623157e308]  # fmt: skip

doubles = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=64)
unit = st.floats(0.0, 1.0, allow_subnormal=True)


def bits(x: np.ndarray | float) -> np.ndarray:
    """The 64 bits of each element, NaNs made one."""
    a = np.asarray(x, dtype=np.float64)
    return np.where(np.isnan(a), np.nan, a).view(np.int64)


def around(points: list[float], k: int = 40) -> np.ndarray:
    """Each point and its ``k`` neighbours on both sides, both signs."""
    out = []
    for p in points:
        x = p
        for _ in range(k):
            x = np.nextafter(x, -np.inf)
        for _ in range(2 * k + 1):
            out.append(x)
            x = np.nextafter(x, np.inf)
    a = np.array(out)
    return np.concatenate([a, -a])


def random_doubles(n: int, seed: int, below: int = 2**64) -> np.ndarray:
    """Doubles with uniformly random bit patterns (under ``below``): every exponent
    equally often."""
    return np.random.default_rng(seed).integers(0, below, n, np.uint64).view(np.float64)


def assert_same(ours: np.ndarray | float, theirs: np.ndarray | float) -> None:
    same = bits(ours) == bits(theirs)
    assert np.all(same), np.asarray(ours)[~same][:5]


# sizes on both sides of stoic.normal._FEW: one by one below it, NumPy's arrays above
sizes = st.integers(0, 160)


@given(arrays(np.float64, sizes, elements=doubles))
@settings(max_examples=300, deadline=None)
def test_ndtr_is_scipys_bit_for_bit(x: np.ndarray) -> None:
    assert_same(ndtr(x), sc.ndtr(x))


@given(arrays(np.float64, sizes, elements=doubles | unit))
@settings(max_examples=300, deadline=None)
def test_ndtri_is_scipys_bit_for_bit(y: np.ndarray) -> None:
    assert_same(ndtri(y), sc.ndtri(y))


@given(doubles | unit)
@settings(max_examples=300, deadline=None)
def test_ndtri_of_a_float_is_a_float_and_scipys(y: float) -> None:
    ours = ndtri(y)
    assert type(ours) is float
    assert_same(ours, sc.ndtri(y))


@pytest.mark.parametrize(
    "x",
    [
        pytest.param(np.array(SPECIAL), id="special"),
        pytest.param(np.tile(SPECIAL, 8), id="special-as-array"),
        pytest.param(around(NDTR_POINTS), id="branch-points"),
        pytest.param(np.linspace(-40, 40, 400_001), id="grid"),
        pytest.param(np.random.default_rng(0).normal(0, 4, 200_000), id="normal"),
        pytest.param(random_doubles(400_000, 1), id="all-doubles"),
    ],
)
def test_ndtr_on_grids_and_edges(x: np.ndarray) -> None:
    assert_same(ndtr(x), sc.ndtr(x))


@pytest.mark.parametrize(
    "y",
    [
        pytest.param(np.array(SPECIAL), id="special"),
        pytest.param(np.tile(SPECIAL, 8), id="special-as-array"),
        pytest.param(around(NDTRI_POINTS), id="branch-points"),
        pytest.param(np.linspace(0, 1, 400_001), id="grid"),
        pytest.param(np.exp(np.linspace(-745, 0, 200_001)), id="lower-tail"),
        pytest.param(-np.expm1(np.linspace(-37, 0, 200_001)), id="upper-tail"),
        pytest.param(random_doubles(400_000, 2), id="all-doubles"),
        pytest.param(random_doubles(400_000, 3, below=0x3FF0000000000001), id="unit-bits"),
    ],
)
def test_ndtri_on_grids_and_edges(y: np.ndarray) -> None:
    assert_same(ndtri(y), sc.ndtri(y))


def test_shapes_and_the_ends() -> None:
    u = np.random.default_rng(4).random((4096, 4))
    assert ndtri(u).shape == (4096, 4) and ndtr(u).shape == (4096, 4)
    assert_same(ndtri(u), sc.ndtri(u))
    assert ndtri(np.array(0.5)).shape == () and ndtr(np.zeros((2, 3))).shape == (2, 3)
    assert ndtri(0.0) == -math.inf and ndtri(1.0) == math.inf and ndtri(0.5) == 0.0
    assert math.isnan(ndtri(1.5)) and math.isnan(ndtri(-0.1)) and math.isnan(ndtri(math.nan))
    assert list(ndtr(np.array([-math.inf, 0.0, math.inf]))) == [0.0, 0.5, 1.0]
