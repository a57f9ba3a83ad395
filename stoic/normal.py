"""The standard normal CDF and its inverse, bit for bit SciPy's, without SciPy.

Why: the replay's ground truth (``stoic.backends.simulated``) and the workload's
size distribution (``stoic.replay.workload``) need ``ndtr`` and ``ndtri``, vectorised
over blocks of thousands of draws. ``scipy.special`` has them, but SciPy is about
143 MB of a base install that should fit an edge box, and nothing else in the base
install needs it (``stoic env fit`` does: the ``fit`` extra). The standard library's
``statistics.NormalDist`` is another algorithm (Wichura's AS241): its quantiles differ
from SciPy's in the last places for 70 % of uniforms, which would change every
committed replay figure.

So this is a port of the Cephes algorithms SciPy uses (``xsf/cephes/ndtr.h`` and
``ndtri.h`` of scipy/xsf, Cephes 2.2's ``ndtr.c`` and ``ndtri.c``): the same
coefficients, the same Horner order and the same branch points, so every result equals
SciPy's on float64 bit for bit (``tests/test_normal.py`` checks it over the whole range
with hypothesis, against SciPy 1.17.1 here). It is the code of SciPy 1.15 onwards:
before (scipy#20695), ``ndtr`` took ``erfc`` from ``|x| >= 1`` rather than ``sqrt 2``,
which can round differently there; the committed replay figures were made with 1.17.

One detail is needed for that: ``exp`` and ``log`` come from the C library through
:mod:`math`, as in SciPy's compiled code, not from NumPy, whose own SIMD ``exp`` and
``log`` differ from the C library's in the last place on some inputs (on an AVX-512
machine ``np.exp`` on ``erfc``'s arguments in 4.5 % of them, ``np.log`` in about 0.03 %).
Only the tails need them (``|x| >= sqrt 2`` for ``ndtr``, ``y`` outside
[0.135, 0.865] for ``ndtri``); the rest is NumPy arithmetic, which rounds as C does.

The price is speed: NumPy's calls and the one-by-one ``log`` make a block of 4,096
quantiles about 8 times slower than SciPy's compiled loop (``benchmarks/bench_normal.py``;
the full replay's cost: docs/evaluation/README.md, "Full-length benchmark").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np

_Num = float | np.ndarray
_Poly = Callable[[Any], Any]
"""A polynomial of a float or an array (``Any``: no ``float()`` around each one-by-one
value, a call that would cost a sixth of one)."""


def _horner(coef: Sequence[float], *, monic: bool = False) -> _Poly:
    """Cephes ``polevl(x, coef, N)`` (``monic``: ``p1evl``, whose leading coefficient 1
    ``coef`` leaves out) as one expression, ``((c0·x + c1)·x + c2)…``: the same
    operations in the same order as the C loop, the coefficients written exactly
    (``repr``). Written out, not looped, because a Python loop costs twice as much and
    the simulator asks for about 500 single values per replayed batch."""
    acc = f"(x + {coef[0]!r})" if monic else repr(coef[0])
    for c in coef[1:]:
        acc = f"({acc} * x + {c!r})"
    poly: _Poly = eval(f"lambda x: {acc}")
    return poly


# ndtr: erf for |x| < 1 (T/U), erfc for 1 <= x < 8 (P/Q) and x >= 8 (R/S)
_ERF_T = _horner(
    (
        9.60497373987051638749e0,
        9.00260197203842689217e1,
        2.23200534594684319226e3,
        7.00332514112805075473e3,
        5.55923013010394962768e4,
    )
)
_ERF_U = _horner(
    (
        3.35617141647503099647e1,
        5.21357949780152679795e2,
        4.59432382970980127987e3,
        2.26290000613890934246e4,
        4.92673942608635921086e4,
    ),
    monic=True,
)
_ERFC_P = _horner(
    (
        2.46196981473530512524e-10,
        5.64189564831068821977e-1,
        7.46321056442269912687e0,
        4.86371970985681366614e1,
        1.96520832956077098242e2,
        5.26445194995477358631e2,
        9.34528527171957607540e2,
        1.02755188689515710272e3,
        5.57535335369399327526e2,
    )
)
_ERFC_Q = _horner(
    (
        1.32281951154744992508e1,
        8.67072140885989742329e1,
        3.54937778887819891062e2,
        9.75708501743205489753e2,
        1.82390916687909736289e3,
        2.24633760818710981792e3,
        1.65666309194161350182e3,
        5.57535340817727675546e2,
    ),
    monic=True,
)
_ERFC_R = _horner(
    (
        5.64189583547755073984e-1,
        1.27536670759978104416e0,
        5.01905042251180477414e0,
        6.16021097993053585195e0,
        7.40974269950448939160e0,
        2.97886665372100240670e0,
    )
)
_ERFC_S = _horner(
    (
        2.26052863220117276590e0,
        9.39603524938001434673e0,
        1.20489539808096656605e1,
        1.70814450747565897222e1,
        9.60896809063285878198e0,
        3.36907645100081516050e0,
    ),
    monic=True,
)

# ndtri: |y - 0.5| <= 3/8 (P0/Q0); z = sqrt(-2 log y) in [2, 8) (P1/Q1), [8, 64] (P2/Q2)
_NDTRI_P0 = _horner(
    (
        -5.99633501014107895267e1,
        9.80010754185999661536e1,
        -5.66762857469070293439e1,
        1.39312609387279679503e1,
        -1.23916583867381258016e0,
    )
)
_NDTRI_Q0 = _horner(
    (
        1.95448858338141759834e0,
        4.67627912898881538453e0,
        8.63602421390890590575e1,
        -2.25462687854119370527e2,
        2.00260212380060660359e2,
        -8.20372256168333339912e1,
        1.59056225126211695515e1,
        -1.18331621121330003142e0,
    ),
    monic=True,
)
_NDTRI_P1 = _horner(
    (
        4.05544892305962419923e0,
        3.15251094599893866154e1,
        5.71628192246421288162e1,
        4.40805073893200834700e1,
        1.46849561928858024014e1,
        2.18663306850790267539e0,
        -1.40256079171354495875e-1,
        -3.50424626827848203418e-2,
        -8.57456785154685413611e-4,
    )
)
_NDTRI_Q1 = _horner(
    (
        1.57799883256466749731e1,
        4.53907635128879210584e1,
        4.13172038254672030440e1,
        1.50425385692907503408e1,
        2.50464946208309415979e0,
        -1.42182922854787788574e-1,
        -3.80806407691578277194e-2,
        -9.33259480895457427372e-4,
    ),
    monic=True,
)
_NDTRI_P2 = _horner(
    (
        3.23774891776946035970e0,
        6.91522889068984211695e0,
        3.93881025292474443415e0,
        1.33303460815807542389e0,
        2.01485389549179081538e-1,
        1.23716634817820021358e-2,
        3.01581553508235416007e-4,
        2.65806974686737550832e-6,
        6.23974539184983293730e-9,
    )
)
_NDTRI_Q2 = _horner(
    (
        6.02427039364742014255e0,
        3.67983563856160859403e0,
        1.37702099489081330271e0,
        2.16236993594496635890e-1,
        1.34204006088543189037e-2,
        3.28014464682127739104e-4,
        2.89247864745380683936e-6,
        6.79019408009981274425e-9,
    ),
    monic=True,
)

_SQRT1_2 = 0.707106781186547524401  # M_SQRT1_2
_SQRT2PI = 2.50662827463100050242  # sqrt(2 pi)
_MAXLOG = 7.09782712893383996843e2  # log(DBL_MAX)
_EXP_M2 = 0.13533528323661269189  # exp(-2): where ndtri's tails begin
_EXP_M2_UPPER = 1.0 - _EXP_M2


def _libm(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """``fn`` (``math.exp``, ``math.log``: the C library's) over ``x``, one by one."""
    return np.fromiter(map(fn, x.tolist()), np.float64, x.size)


def _each(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """``fn`` of each element of ``x``, in ``x``'s shape."""
    return _libm(fn, x.ravel()).reshape(x.shape)


_FEW = 64
"""Below this many elements, one by one in Python is quicker than NumPy's calls (a few
dozen, each costing a microsecond or less whatever the size): the simulator asks for
one to four values per batch and runtime."""


def ndtr(a: np.ndarray) -> np.ndarray:
    """The standard normal CDF of each element: ``scipy.special.ndtr``, bit for bit.
    Like SciPy's, it warns of nothing (NaN in, NaN out)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size < _FEW:
        return _each(_ndtr_one, a)
    with np.errstate(all="ignore"):  # a signalling NaN; -x² overflowing to -inf, as in C
        return _ndtr(a)


def _ndtr(a: np.ndarray) -> np.ndarray:
    x = a * _SQRT1_2
    z = np.abs(x)
    y = np.full(a.shape, np.nan)
    inner = z < 1.0  # 0.5 + erf(x)/2
    xi = x[inner]
    zi = xi * xi
    y[inner] = 0.5 + 0.5 * (xi * _ERF_T(zi) / _ERF_U(zi))
    outer = z >= 1.0  # erfc(|x|)/2, reflected for x > 0; 0 where exp(-x²) underflows
    zo = z[outer]
    minus = -zo * zo
    erfc = np.zeros(zo.shape)
    live = minus >= -_MAXLOG
    zl = zo[live]
    p, q = np.asarray(_ERFC_P(zl)), np.asarray(_ERFC_Q(zl))
    far = zl >= 8.0
    if far.any():
        p[far], q[far] = _ERFC_R(zl[far]), _ERFC_S(zl[far])
    erfc[live] = (_libm(math.exp, minus[live]) * p) / q
    half = 0.5 * erfc
    y[outer] = np.where(x[outer] > 0, 1.0 - half, half)
    return y


def _ndtr_one(a: float) -> float:
    """:func:`_ndtr` of one value."""
    if math.isnan(a):
        return math.nan
    x = a * _SQRT1_2
    z = abs(x)
    if z < 1.0:
        zi = x * x
        return 0.5 + 0.5 * float(x * _ERF_T(zi) / _ERF_U(zi))
    minus = -z * z
    erfc = 0.0
    if minus >= -_MAXLOG:
        p, q = (_ERFC_P, _ERFC_Q) if z < 8.0 else (_ERFC_R, _ERFC_S)
        erfc = float((math.exp(minus) * p(z)) / q(z))
    half = 0.5 * erfc
    return 1.0 - half if x > 0 else half


def _ndtri_central(y: Any) -> Any:
    """ndtri for exp(-2) < y <= 1 - exp(-2)."""
    y = y - 0.5
    y2 = y * y
    return (y + y * (y2 * _NDTRI_P0(y2) / _NDTRI_Q0(y2))) * _SQRT2PI


def _ndtri_tail(y: np.ndarray) -> np.ndarray:
    """-ndtri(y) for 0 < y <= exp(-2): an expansion in 1/sqrt(-2 log y)."""
    x = np.sqrt(-2.0 * _libm(math.log, y))
    x0 = x - _libm(math.log, x) / x
    z = 1.0 / x
    x1 = np.asarray(z * _NDTRI_P1(z) / _NDTRI_Q1(z))
    far = x >= 8.0  # y < exp(-32): none in the simulator's draws, clipped at 1e-12
    if far.any():
        zf = z[far]
        x1[far] = zf * _NDTRI_P2(zf) / _NDTRI_Q2(zf)
    out: np.ndarray = x0 - x1
    return out


def _ndtri_tail_one(y: float) -> float:
    """:func:`_ndtri_tail` of one value."""
    x = math.sqrt(-2.0 * math.log(y))
    x0 = x - math.log(x) / x
    z = 1.0 / x
    p, q = (_NDTRI_P1, _NDTRI_Q1) if x < 8.0 else (_NDTRI_P2, _NDTRI_Q2)
    x1: float = z * p(z) / q(z)
    return x0 - x1


@overload
def ndtri(y: float) -> float: ...
@overload
def ndtri(y: np.ndarray) -> np.ndarray: ...
def ndtri(y: _Num) -> _Num:
    """The standard normal quantile of each element (-inf at 0, inf at 1, NaN outside
    [0, 1]): ``scipy.special.ndtri``, bit for bit. A float gives a float."""
    if isinstance(y, float | int):  # NumPy's scalars too, as Python floats: quicker
        return _ndtri_one(float(y))
    y0 = np.asarray(y, dtype=np.float64)
    if y0.size < _FEW:
        return _each(_ndtri_one, y0)
    with np.errstate(all="ignore"):  # a signalling NaN
        return _ndtri(y0)


def _ndtri(y0: np.ndarray) -> np.ndarray:
    flip = y0 > _EXP_M2_UPPER
    yy = np.where(flip, 1.0 - y0, y0)
    out = np.empty(y0.shape)
    central = yy > _EXP_M2
    out[central] = _ndtri_central(yy[central])
    tail = (yy > 0.0) & ~central
    t = _ndtri_tail(yy[tail])
    out[tail] = np.where(flip[tail], t, -t)
    rest = ~(central | tail)
    if rest.any():  # 0, 1, outside [0, 1], NaN: none in the simulator's clipped draws
        r = y0[rest]
        out[rest] = np.where(r == 0.0, -np.inf, np.where(r == 1.0, np.inf, np.nan))
    return out


def _ndtri_one(y0: float) -> float:
    """:func:`_ndtri` of one value."""
    if y0 == 0.0:
        return -math.inf
    if y0 == 1.0:
        return math.inf
    if not 0.0 < y0 < 1.0:
        return math.nan
    flip = y0 > _EXP_M2_UPPER
    y = 1.0 - y0 if flip else y0
    if y > _EXP_M2:
        x: float = _ndtri_central(y)
        return x
    t = _ndtri_tail_one(y)
    return t if flip else -t
