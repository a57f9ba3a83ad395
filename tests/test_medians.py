"""The calibration's median rows: numba's kernel against bottleneck's, bit for bit.

The replay's figures depend on these rows only through the windows they choose, so
"the same figures with or without the ``fast`` extra" rests on this equality, not on a
tolerance. The kernel is tested wherever numba is installed (``make test`` installs it
with ``all``); without it only bottleneck's rows exist, and the dispatcher test shows
that is what is used.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoic.predict import medians
from stoic.predict.medians import median_rows, median_rows_bottleneck, numba_kernel


def _naive(x: np.ndarray, max_window: int, t: np.ndarray) -> np.ndarray:
    """The definition: the median of the min(w, t) values before x[t]."""
    rows = np.full((t.size, max_window), np.nan)
    for i, ti in enumerate(t.tolist()):
        for w in range(1, max_window + 1):
            if ti > 0:
                rows[i, w - 1] = np.median(x[max(ti - w, 0) : ti])
    return rows


def test_bottleneck_rows_are_the_definition() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.lognormal(3, 1, 60), 1)  # rounded: ties
    t = np.arange(0, 60)
    np.testing.assert_array_equal(median_rows_bottleneck(x, 25, t), _naive(x, 25, t))


kernel = numba_kernel()
needs_numba = pytest.mark.skipif(kernel is None, reason="numba (the fast extra) not installed")

series = st.lists(
    st.one_of(
        st.floats(0, 1e4, allow_nan=False),
        st.sampled_from([0.0, 1.0, 2.0, 30.0, 600.0]),  # ties and the timeout's value
    ),
    min_size=1,
    max_size=400,
)


@needs_numba
@settings(max_examples=300, deadline=None)
@given(
    values=series,
    max_window=st.integers(1, 130),
    data=st.data(),
)
def test_the_kernel_gives_bottlenecks_rows_bit_for_bit(
    values: list[float], max_window: int, data: st.DataObject
) -> None:
    x = np.array(values)
    n = x.size
    first = data.draw(st.integers(0, n - 1))
    # Consecutive indices (what calibration asks), or any ascending ones with gaps.
    if data.draw(st.booleans()):
        t = np.arange(first, n)
    else:
        t = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    assert kernel is not None
    got = kernel(x, max_window, t.astype(np.int64))
    want = median_rows_bottleneck(x, max_window, t)
    assert got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)  # NaN where t == 0, both


@needs_numba
def test_the_kernel_on_a_replays_calibration() -> None:
    """The call calibration makes: 100 scored samples, their 100 predecessors."""
    rng = np.random.default_rng(0)
    x = np.minimum(rng.lognormal(3.4, 0.6, 200), 600.0)
    t = np.arange(111, 200)
    assert kernel is not None
    np.testing.assert_array_equal(kernel(x, 100, t), median_rows_bottleneck(x, 100, t))


def test_the_dispatcher_falls_back_to_bottleneck(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.array([3.0, 1.0, np.nan, 4.0, 1.0, 5.0])
    t = np.arange(1, 6)
    # A NaN in the history: bottleneck's NaN-aware median, whichever is installed.
    np.testing.assert_array_equal(median_rows(x, 4, t), median_rows_bottleneck(x, 4, t))

    def no_kernel(*args: object) -> np.ndarray:
        raise AssertionError("the kernel ran without numba")

    # Without numba (the controller's image): bottleneck's rows.
    monkeypatch.setattr(medians, "numba_kernel", lambda: None)
    y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])
    np.testing.assert_array_equal(median_rows(y, 4, t), median_rows_bottleneck(y, 4, t))
    monkeypatch.setattr(medians, "numba_kernel", lambda: no_kernel)
    with pytest.raises(AssertionError, match="kernel ran"):
        median_rows(y, 4, t)


@pytest.fixture(autouse=True)
def fresh_load() -> Iterator[None]:
    """Each test loads the kernel afresh, and leaves the real one loaded after it."""
    numba_kernel.cache_clear()
    yield
    numba_kernel.cache_clear()


def _kernel_module(kernel: object) -> object:
    return type("Module", (), {"median_rows_kernel": staticmethod(kernel)})


def _wrong(x: np.ndarray, max_window: int, t: np.ndarray) -> np.ndarray:
    return median_rows_bottleneck(x, max_window, t) + 1.0


def _cannot_compile(x: np.ndarray, max_window: int, t: np.ndarray) -> np.ndarray:
    raise RuntimeError("LLVM ERROR: cannot select")


@pytest.mark.parametrize(
    "load",
    [
        # numba raises RuntimeError at import where it has nowhere to write its cache
        pytest.param(None, id="cannot-import"),
        pytest.param(_cannot_compile, id="cannot-compile"),
        pytest.param(_wrong, id="wrong-rows"),
    ],
)
def test_a_kernel_that_cannot_load_is_bottlenecks_rows(
    monkeypatch: pytest.MonkeyPatch, load: object
) -> None:
    def import_module(name: str) -> object:
        if load is None:
            raise RuntimeError(f"cannot cache function {name!r}: no locator available")
        return _kernel_module(load)

    monkeypatch.setattr(medians.importlib, "import_module", import_module)
    monkeypatch.setattr(medians.importlib.util, "find_spec", lambda name: object())
    assert numba_kernel() is None
    x = np.array([2.0, 7.0, 1.0, 8.0])
    t = np.arange(0, 4)
    np.testing.assert_array_equal(median_rows(x, 3, t), median_rows_bottleneck(x, 3, t))


def test_a_kernel_that_passes_its_check_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _kernel_module(median_rows_bottleneck)
    monkeypatch.setattr(medians.importlib, "import_module", lambda name: module)
    monkeypatch.setattr(medians.importlib.util, "find_spec", lambda name: object())
    assert numba_kernel() is median_rows_bottleneck
