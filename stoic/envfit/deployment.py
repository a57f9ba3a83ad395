"""Fitting one cloud runtime's deployment-time process (``DeploymentSpec``).

The simulator draws T_d = floor + (median − floor)·exp(σZ)·[time terms], plus, with
probability ``outlier_rate``, a Lomax(``outlier_scale_s``, ``outlier_alpha``) excess; a
timeout with probability ``timeout_rate`` or when the draw reaches the timeout. This
module fits exactly that model by maximum likelihood, with the timeouts as
right-censored samples (a timed-out attempt took *at least* its timeout):

* completed deployment x:  (1 − τ)·[(1 − r)·g(x) + r·(g ∗ ℓ)(x)]
* timed out at c:          τ + (1 − τ)·P(T_d ≥ c)

where g is the shifted log-normal body and ℓ the Lomax density. The convolution g ∗ ℓ
has no closed form; it is the average of ℓ over K equal-probability slices of the body,
each slice's average taken exactly from the Lomax CDF (a smooth quadrature, even where
ℓ jumps at zero). The mixture is what makes the fit robust: a pull that took minutes
lands in the outlier component instead of inflating σ.

The likelihood of a three-parameter log-normal grows without bound as the floor nears
the smallest sample (a spike too narrow to matter, but an optimiser can fall into it),
so the floor is bounded a thousandth of the way from the smallest completed deployment
to the median, and the fit starts well below that. Measurements taken by polling for
readiness are rounded to the poll period, and a few equal values at the bottom then
look like a spike worth chasing: given a resolution, each completed deployment is the
interval it stands for (its probability, not a density), which removes the spike.

Parameters with too little evidence (``stoic.envfit.params``) stay at the prior and are
held fixed in the likelihood, so the others are fitted *given* them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtri

from stoic.backends.simulated import DeploymentSpec
from stoic.envfit.params import Value, needs

FloatArray = NDArray[np.float64]

#: Body slices of the outlier convolution (equal probability under the body).
SLICES = 32
#: The body's outermost slice edges, in standard deviations.
EDGE_Z = 4.5
_EDGES = np.concatenate(([-EDGE_Z], ndtri(np.arange(1, SLICES) / SLICES), [EDGE_Z]))

#: Attempts the sample-by-sample likelihood (samples with time terms) is evaluated on
#: at most: beyond, a fixed random subset (a week of one-minute probes is 10,000 per
#: runtime; the estimates' spread at 3,000 is already well under the model's own error).
MAX_FIT = 3_000
#: Above this many completed deployments without time terms, the likelihood is that of
#: their counts in BINS bins of equal count (:class:`Binned`).
BIN_ABOVE = 400
BINS = 200

_SIGMA = (1e-3, 1.0)
_RATE = (0.0, 0.6)
_SCALE = (0.05, 5_000.0)
_ALPHA = (0.3, 20.0)
_TIMEOUT = (0.0, 0.95)


@dataclass(frozen=True, slots=True)
class DeploymentData:
    """One runtime's attempts: ``duration_s`` of each, ``timed_out`` ones censored at
    their duration, ``offset`` the log-scale time terms of each (0 without them);
    completed ones known to ± ``resolution_s`` / 2 (0: exactly)."""

    duration_s: FloatArray
    timed_out: NDArray[np.bool_]
    offset: FloatArray
    resolution_s: float = 0.0

    @property
    def n_ok(self) -> int:
        return int((~self.timed_out).sum())

    @property
    def n(self) -> int:
        return int(self.duration_s.size)


@dataclass(frozen=True, slots=True)
class Params:
    """A point of the model (``median_s`` is the body's, without the time terms)."""

    floor_s: float
    median_s: float
    sigma: float
    outlier_rate: float
    outlier_scale_s: float
    outlier_alpha: float
    timeout_rate: float


def _lomax_cdf(y: FloatArray, scale: float, alpha: float) -> FloatArray:
    yp = np.maximum(y, 0.0)
    return np.asarray(-np.expm1(-alpha * np.log1p(yp / scale)))


def _lomax_icdf(y: FloatArray, scale: float, alpha: float) -> FloatArray:
    """∫₀^y of the Lomax CDF (0 for y ≤ 0): the exact slice average of the CDF."""
    yp = np.maximum(y, 0.0)
    lg = np.log1p(yp / scale)
    if abs(alpha - 1.0) < 1e-9:
        return np.asarray(yp - scale * lg)
    return np.asarray(yp + scale / (alpha - 1.0) * np.expm1((1.0 - alpha) * lg))


def _cdfs(y: FloatArray, o: FloatArray, p: Params) -> tuple[FloatArray, FloatArray]:
    """P(body ≤ y) and P(body + Lomax ≤ y) at each ``y`` (log-scale offsets ``o``)."""
    mu = math.log(max(p.median_s - p.floor_s, 1e-12))
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(y - p.floor_s, 1e-300)) - mu - o) / p.sigma
    body = np.exp(log_ndtr(z))
    if p.outlier_rate <= 0 or not y.size:
        return body, body
    edges = p.floor_s + np.exp(mu + o[:, None] + p.sigma * _EDGES[None, :])
    icdf = _lomax_icdf(y[:, None] - edges, p.outlier_scale_s, p.outlier_alpha)
    width = np.maximum(np.diff(edges, axis=1), 1e-300)
    return body, ((icdf[:, :-1] - icdf[:, 1:]) / width).mean(axis=1)


def _densities(x: FloatArray, o: FloatArray, p: Params) -> tuple[FloatArray, FloatArray]:
    """The body density g and the outlier density g ∗ ℓ at each ``x``."""
    mu = math.log(max(p.median_s - p.floor_s, 1e-12))
    y = x - p.floor_s
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.where(y > 0, y, np.nan))
        z = (ly - mu - o) / p.sigma
        body = np.exp(-0.5 * z * z - ly) / (p.sigma * math.sqrt(2 * math.pi))
    body = np.nan_to_num(body, nan=0.0)
    if p.outlier_rate <= 0 or not x.size:
        return body, np.zeros_like(body)
    edges = p.floor_s + np.exp(mu + o[:, None] + p.sigma * _EDGES[None, :])
    cdf = _lomax_cdf(x[:, None] - edges, p.outlier_scale_s, p.outlier_alpha)
    width = np.maximum(np.diff(edges, axis=1), 1e-300)
    return body, ((cdf[:, :-1] - cdf[:, 1:]) / width).mean(axis=1)


def _terms(data: DeploymentData, p: Params) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per completed deployment, the body's and the outlier component's likelihood (a
    density, or with a resolution the probability of the interval); per timed-out
    attempt, P(T_d ≥ its duration) given no timeout draw."""
    ok = ~data.timed_out
    x, o = data.duration_s[ok], data.offset[ok]
    c, oc = data.duration_s[~ok], data.offset[~ok]
    h = data.resolution_s / 2
    if h > 0:
        b_hi, out_hi = _cdfs(x + h, o, p)
        b_lo, out_lo = _cdfs(x - h, o, p)
        body, out = b_hi - b_lo, out_hi - out_lo
    else:
        body, out = _densities(x, o, p)
    b_c, out_c = _cdfs(c, oc, p)
    r = p.outlier_rate
    surv = 1 - ((1 - r) * b_c + r * out_c)
    return body, out, surv


def log_likelihood(data: DeploymentData, p: Params) -> float:
    """The log-likelihood of ``data`` under ``p`` (see the module docstring)."""
    body, out, surv = _terms(data, p)
    r, tau = p.outlier_rate, p.timeout_rate
    dens = (1 - tau) * ((1 - r) * body + r * out)
    cens = tau + (1 - tau) * surv
    return float(np.log(np.maximum(dens, 1e-300)).sum() + np.log(np.maximum(cens, 1e-300)).sum())


@dataclass(frozen=True, slots=True)
class Binned:
    """Completed deployments grouped into bins of equal count (the edges between them),
    for samples without time terms: the likelihood of the counts costs the same at a
    hundred samples or a hundred thousand, and loses little (the bins are fine)."""

    edges: FloatArray
    counts: FloatArray
    censor: FloatArray

    @classmethod
    def of(cls, data: DeploymentData) -> Binned | None:
        """Bins of ``data``, or None where it should be fitted sample by sample (few
        samples, or time terms that differ between them)."""
        if data.n_ok <= BIN_ABOVE or np.ptp(data.offset) > 0:
            return None
        x = np.sort(data.duration_s[~data.timed_out])
        inner = np.unique(np.quantile(x, np.linspace(0, 1, BINS + 1)[1:-1]))
        top = x[-1] * (1 + 1e-9) + 1e-9
        edges = np.concatenate(([0.0], inner[(inner > 0) & (inner < top)], [top]))
        counts, _ = np.histogram(x, bins=edges)
        return cls(edges, counts.astype(np.float64), data.duration_s[data.timed_out])

    def log_likelihood(self, p: Params) -> float:
        zero = np.zeros(self.edges.size)
        body, out = _cdfs(self.edges, zero, p)
        r, tau = p.outlier_rate, p.timeout_rate
        mass = (1 - tau) * np.diff((1 - r) * body + r * out)
        ll = float((self.counts * np.log(np.maximum(mass, 1e-300))).sum())
        if self.censor.size:
            b_c, out_c = _cdfs(self.censor, np.zeros(self.censor.size), p)
            surv = 1 - ((1 - r) * b_c + r * out_c)
            ll += float(np.log(np.maximum(tau + (1 - tau) * surv, 1e-300)).sum())
        return ll


def _floor_cap(data: DeploymentData) -> float:
    """The highest floor the fit may take: just under the smallest completed deployment,
    by a thousandth of the distance to the median (see the module docstring)."""
    x = data.duration_s[~data.timed_out]
    if not x.size:
        return 0.0
    lo, mid = float(x.min()), float(np.median(x))
    return max(lo - 1e-3 * max(mid - lo, lo * 1e-3), 0.0)


@dataclass(frozen=True, slots=True)
class Free:
    """Which parameters the data may set (the others stay at the prior)."""

    body: bool
    rate: bool
    tail: bool
    timeout: bool


def _optimise(data: DeploymentData, start: Params, free: Free) -> tuple[Params, float]:
    """Maximise the likelihood over the free parameters (L-BFGS-B within bounds)."""
    names: list[str] = []
    x0: list[float] = []
    bounds: list[tuple[float, float]] = []
    mu0 = math.log(max(start.median_s - start.floor_s, 1e-6))
    top = _floor_cap(data)
    if free.body:
        names += ["mu", "log_sigma", "floor"]
        x0 += [mu0, math.log(min(max(start.sigma, _SIGMA[0]), _SIGMA[1]))]
        x0.append(min(max(start.floor_s, 0.0), top))
        bounds += [(mu0 - 8.0, mu0 + 8.0), (math.log(_SIGMA[0]), math.log(_SIGMA[1]))]
        bounds.append((0.0, top))
    if free.rate:
        names.append("rate")
        x0.append(min(max(start.outlier_rate, 0.005), _RATE[1]))
        bounds.append(_RATE)
    if free.tail:
        names += ["log_scale", "log_alpha"]
        x0 += [math.log(start.outlier_scale_s), math.log(start.outlier_alpha)]
        bounds += [tuple(map(math.log, _SCALE)), tuple(map(math.log, _ALPHA))]  # type: ignore[list-item]
    if free.timeout:
        names.append("timeout")
        x0.append(min(max(start.timeout_rate, 1e-4), _TIMEOUT[1]))
        bounds.append(_TIMEOUT)

    def unpack(v: NDArray[np.float64]) -> Params:
        d = dict(zip(names, (float(t) for t in v), strict=True))
        if free.body:
            sigma = math.exp(d["log_sigma"])
            floor = d["floor"]
            median = floor + math.exp(d["mu"])
        else:
            sigma, floor, median = start.sigma, start.floor_s, start.median_s
        return Params(
            floor_s=floor,
            median_s=median,
            sigma=sigma,
            outlier_rate=d.get("rate", start.outlier_rate),
            outlier_scale_s=math.exp(d["log_scale"]) if free.tail else start.outlier_scale_s,
            outlier_alpha=math.exp(d["log_alpha"]) if free.tail else start.outlier_alpha,
            timeout_rate=d.get("timeout", start.timeout_rate),
        )

    if not names:
        return start, log_likelihood(data, start)

    binned = Binned.of(data)

    def nll(v: NDArray[np.float64]) -> float:
        p = unpack(v)
        ll = binned.log_likelihood(p) if binned is not None else log_likelihood(data, p)
        return -ll / max(data.n, 1)

    res = minimize(
        nll, np.array(x0), method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-9, "gtol": 1e-6}
    )
    best = unpack(res.x)
    return best, log_likelihood(data, best)


def _starts(data: DeploymentData, prior: Params, free: Free) -> list[Params]:
    """Starting points: robust moments of the completed deployments, with a light and a
    heavy outlier share (the mixture's likelihood has more than one hill)."""
    ok = ~data.timed_out
    x = data.duration_s[ok] * np.exp(-data.offset[ok])
    floor0 = 0.0
    sigma0, med0 = prior.sigma, prior.median_s
    if free.body and x.size:
        q10, q50 = np.quantile(x, [0.1, 0.5])
        floor0 = max(0.0, float(x.min()) - 0.5 * float(q50 - q10))
        ly = np.log(np.maximum(x - floor0, 1e-9))
        mad = float(np.median(np.abs(ly - np.median(ly)))) * 1.4826
        sigma0 = min(max(mad, 0.02), 2.0)
        med0 = floor0 + float(np.exp(np.median(ly)))
    base = Params(
        floor0 if free.body else prior.floor_s,
        med0 if free.body else prior.median_s,
        sigma0 if free.body else prior.sigma,
        prior.outlier_rate,
        prior.outlier_scale_s,
        prior.outlier_alpha,
        (float(data.timed_out.mean()) if free.timeout and data.n else prior.timeout_rate),
    )
    if not free.rate:
        return [base]
    return [replace(base, outlier_rate=0.02), replace(base, outlier_rate=0.15)]


def outlier_posterior(data: DeploymentData, p: Params) -> FloatArray:
    """Each completed deployment's probability of coming from the outlier component."""
    if p.outlier_rate <= 0 or data.n_ok == 0:
        return np.zeros(data.n_ok)
    body, out, _ = _terms(data, p)
    r = p.outlier_rate
    mix = (1 - r) * body + r * out
    return np.asarray(np.where(mix > 0, r * out / np.maximum(mix, 1e-300), 1.0))


def outlier_share(data: DeploymentData, p: Params) -> float:
    """The expected number of completed deployments from the outlier component: the
    evidence the Lomax tail rests on."""
    return float(outlier_posterior(data, p).sum())


@dataclass(frozen=True, slots=True)
class DeploymentFit:
    """The fitted parameters (each with its provenance) and the fit's evidence."""

    values: dict[str, Value]
    params: Params
    n_ok: int
    n_timeouts: int
    outliers: float
    log_likelihood: float


def fit_deployment(data: DeploymentData, prior: DeploymentSpec | None) -> DeploymentFit:
    """Fit ``data`` (see the module docstring); parameters short of evidence keep
    ``prior``'s value. ``prior`` may be None only if the data fit every body parameter;
    the tail and timeout parameters then default to the schema's defaults."""
    base = prior or DeploymentSpec(floor_s=0.0, median_s=1.0, sigma=0.1)
    completed = data.duration_s[~data.timed_out]
    # A Lomax of scale 0 adds nothing: with no prior scale, start from the median.
    scale = base.outlier_scale_s or (float(np.median(completed)) if completed.size else 1.0)
    p0 = Params(
        base.floor_s,
        base.median_s,
        base.sigma,
        base.outlier_rate,
        scale,
        base.outlier_alpha,
        base.timeout_rate,
    )
    n_ok, n_to = data.n_ok, data.n - data.n_ok
    whole = data
    if data.n > MAX_FIT and Binned.of(data) is None:
        keep = np.sort(np.random.default_rng(0).choice(data.n, MAX_FIT, replace=False))
        data = DeploymentData(
            data.duration_s[keep], data.timed_out[keep], data.offset[keep], data.resolution_s
        )
    free = Free(
        body=n_ok >= needs("deployment.body"),
        rate=n_ok >= needs("deployment.outlier_rate"),
        tail=False,
        timeout=whole.n >= needs("deployment.timeout_rate"),
    )
    best, _ = _best(data, p0, free)
    share = outlier_share(whole, best) if free.rate else 0.0
    if free.rate and share >= needs("deployment.outlier_tail"):
        free = Free(free.body, True, True, free.timeout)
        scale = float(np.median(data.duration_s[~data.timed_out]))
        starts = [best, replace(best, outlier_scale_s=scale, outlier_alpha=2.0)]
        best = max((_optimise(data, p, free) for p in starts), key=lambda f: f[1])[0]
        share = outlier_share(whole, best)
    values = _values(best, free, n_ok, whole.n, share, prior is None)
    if not base.outlier_scale_s and not free.tail:
        values["outlier_scale_s"] = Value.prior(
            scale, "no prior scale (0 adds nothing): the median completed deployment"
        )
    return DeploymentFit(values, best, n_ok, n_to, share, log_likelihood(whole, best))


def _best(data: DeploymentData, p0: Params, free: Free) -> tuple[Params, float]:
    fits = [_optimise(data, s, free) for s in _starts(data, p0, free)]
    return max(fits, key=lambda f: f[1])


def _values(
    p: Params, free: Free, n_ok: int, n: int, share: float, no_prior: bool
) -> dict[str, Value]:
    src = "schema default" if no_prior else "prior"

    def pick(on: bool, value: float, fitted: str, short: str) -> Value:
        return Value.fit(value, fitted) if on else Value.prior(value, f"{src}: {short}")

    body_n = needs("deployment.body")
    body_why = f"fitted, {n_ok} completed deployments"
    body_short = f"{n_ok} completed deployments < {body_n}"
    rate_n = needs("deployment.outlier_rate")
    tail_n = needs("deployment.outlier_tail")
    tail_short = f"{share:.1f} outliers < {tail_n}" if free.rate else f"{n_ok} completed < {rate_n}"
    to_n = needs("deployment.timeout_rate")
    return {
        "floor_s": pick(free.body, p.floor_s, body_why, body_short),
        "median_s": pick(free.body, p.median_s, body_why, body_short),
        "sigma": pick(free.body, p.sigma, body_why, body_short),
        "outlier_rate": pick(
            free.rate,
            p.outlier_rate,
            f"fitted, {n_ok} completed deployments",
            f"{n_ok} completed deployments < {rate_n}",
        ),
        "outlier_scale_s": pick(
            free.tail, p.outlier_scale_s, f"fitted, {share:.1f} outliers", tail_short
        ),
        "outlier_alpha": pick(
            free.tail, p.outlier_alpha, f"fitted, {share:.1f} outliers", tail_short
        ),
        "timeout_rate": pick(
            free.timeout,
            p.timeout_rate,
            f"fitted, {n} attempts ({n - n_ok} timed out)",
            f"{n} attempts < {to_n}",
        ),
    }
