"""T_p model selection (issue 24, §5): each candidate one step ahead on the same batches.

The predictor's T_p line (RANSAC around Bayesian ridge on the last 10 samples) against
the candidates the issue names, each fed the same measured sequence in time order
(ask, then observe, per runtime), scored from each runtime's fourth batch on:

* ``ransac-ridge``: today's (:func:`stoic.predict.processing.fit_processing`);
* ``ransac-ridge, max age 24 h``: the same, on the samples of the last day before the
  newest only (``predictor.processing_max_age_s``);
* ``rlm-huber``: statsmodels' robust linear model (Huber's T) on the same window;
* ``shrink-to-prior λ``: least squares on the window with a ridge penalty toward the
  configured slope (not zero), ``λ`` in units of the window's spread of sizes;
* ``hgb-quantile``: scikit-learn's ``HistGradientBoostingRegressor(loss="quantile",
  quantile=0.5)`` on every sample of the runtime so far, where there are at least
  :data:`HGB_MIN_SAMPLES` (today's line before);
* ``online-choice``: per runtime, the prediction of whichever of ransac-ridge,
  rlm-huber and shrink-to-prior 0.1 had the least mean absolute one-step error over
  its last :data:`CHOICE_WINDOW` batches;
* ``…, max age 24 h``: rlm-huber, shrink-to-prior 0.1 and the online choice on the
  last day's samples, as ransac-ridge's.

T_s is scored too where the sequence has T_t and T_d (the predictor's own, unchanged):
its error is T_p's plus theirs, so a better T_p can score a worse T_s where the errors
cancelled. ``--env`` scores on the batches of a selector replay (the decisions are the
default predictor's; only the T_p models differ).

    PYTHONPATH=. .venv/bin/python docs/evaluation/processing_models.py \\
        --csv ../shared/data/nautilus-2020-real/components.csv \\
        --env workload/envs/edge-afternoon-spell.yaml --days 3 [--without-hgb]

Needs the dev dependencies (statsmodels, scikit-learn): an evaluation, not the daemon.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stoic.predict.onestep import Step, read_components_csv, replay
from stoic.predict.predictor import Predictor
from stoic.predict.processing import fit_processing
from stoic.settings import Settings

WINDOW = 10
HGB_MIN_SAMPLES = 20
CHOICE_WINDOW = 5
DAY_S = 86_400.0

Sample = tuple[float, float, float]  # (at, images, seconds)
Model = Callable[[Sequence[Sample], float, float, float, float], float]
"""(samples so far, images, now, prior slope, prior intercept) -> predicted T_p."""


def ransac_ridge(samples: Sequence[Sample], n: float, _: float, a: float, b: float) -> float:
    w = samples[-WINDOW:]
    x = np.array([s[1] for s in w], dtype=np.float64)
    y = np.array([s[2] for s in w], dtype=np.float64)
    return fit_processing(x, y, prior_slope=a, prior_intercept=b).predict(n).mean


def last_day(model: Model) -> Model:
    """``model`` on the samples of the last day before the newest only
    (``predictor.processing_max_age_s``)."""

    def aged(samples: Sequence[Sample], n: float, now: float, a: float, b: float) -> float:
        w = samples[-WINDOW:]
        newest = w[-1][0] if w else now
        return model([s for s in w if s[0] >= newest - DAY_S], n, now, a, b)

    return aged


def rlm_huber(samples: Sequence[Sample], n: float, now: float, a: float, b: float) -> float:
    import statsmodels.api as sm

    w = samples[-WINDOW:]
    x = np.array([s[1] for s in w], dtype=np.float64)
    if x.size < 3 or np.all(x == x[0]):
        return ransac_ridge(samples, n, now, a, b)
    y = np.array([s[2] for s in w], dtype=np.float64)
    fit = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.HuberT()).fit()
    intercept, slope = (float(v) for v in fit.params)
    if slope < 0:
        return ransac_ridge(samples, n, now, a, b)
    return max(slope * n + intercept, 0.0)


def shrink_to_prior(lam: float) -> Model:
    def model(samples: Sequence[Sample], n: float, now: float, a: float, b: float) -> float:
        w = samples[-WINDOW:]
        if len(w) < 3:
            return ransac_ridge(samples, n, now, a, b)
        x = np.array([s[1] for s in w], dtype=np.float64)
        y = np.array([s[2] for s in w], dtype=np.float64)
        sxx = float(((x - x.mean()) ** 2).sum())
        sxy = float(((x - x.mean()) * (y - y.mean())).sum())
        penalty = lam * max(sxx, 1.0)
        slope = (sxy + penalty * a) / (sxx + penalty)
        return max(slope * n + float(y.mean() - slope * x.mean()), 0.0)

    return model


def hgb_quantile(samples: Sequence[Sample], n: float, now: float, a: float, b: float) -> float:
    if len(samples) < HGB_MIN_SAMPLES:
        return ransac_ridge(samples, n, now, a, b)
    from sklearn.ensemble import HistGradientBoostingRegressor

    x = np.array([[s[1]] for s in samples], dtype=np.float64)
    y = np.array([s[2] for s in samples], dtype=np.float64)
    hgb = HistGradientBoostingRegressor(loss="quantile", quantile=0.5, random_state=0)
    return float(hgb.fit(x, y).predict(np.array([[n]]))[0])


class OnlineChoice:
    """Per runtime, the candidate with the least recent one-step MAE."""

    def __init__(self, candidates: dict[str, Model]) -> None:
        self.candidates = candidates
        self.errors: dict[tuple[str, str], deque[float]] = {}

    def predict(self, rt: str, samples: Sequence[Sample], n: float, now: float,
                a: float, b: float) -> tuple[float, dict[str, float]]:  # fmt: skip
        preds = {k: m(samples, n, now, a, b) for k, m in self.candidates.items()}

        def recent(k: str) -> float:
            e = self.errors.get((rt, k))
            return sum(e) / len(e) if e else math.inf

        best = min(preds, key=lambda k: (recent(k), list(preds).index(k)))
        return preds[best], preds

    def observe(self, rt: str, preds: dict[str, float], actual: float) -> None:
        for k, p in preds.items():
            self.errors.setdefault((rt, k), deque(maxlen=CHOICE_WINDOW)).append(abs(actual - p))


def score(
    steps: Sequence[Step], settings: Settings, *, hgb: bool = True
) -> dict[str, tuple[float, float | None, int]]:
    """Per model: (T_p MAE, T_s MAE or None, scored batches); ``hgb=False`` leaves the
    gradient-boosted model out (refitted on every sample, it is slow on a replay)."""
    priors = {r.name: (r.prior_per_image_s, r.prior_fixed_s) for r in settings.runtimes}
    models: dict[str, Model] = {
        "ransac-ridge (today's)": ransac_ridge,
        "ransac-ridge, max age 24 h": last_day(ransac_ridge),
        "rlm-huber": rlm_huber,
        "rlm-huber, max age 24 h": last_day(rlm_huber),
        "shrink-to-prior 0.1": shrink_to_prior(0.1),
        "shrink-to-prior 0.1, max age 24 h": last_day(shrink_to_prior(0.1)),
        "shrink-to-prior 1": shrink_to_prior(1.0),
    }
    if hgb:
        models["hgb-quantile (>= 20 samples)"] = hgb_quantile
    trio = {"ransac": ransac_ridge, "rlm": rlm_huber, "shrink": shrink_to_prior(0.1)}
    choosers = {
        "online-choice": OnlineChoice(trio),
        "online-choice, max age 24 h": OnlineChoice({k: last_day(m) for k, m in trio.items()}),
    }
    names = [*models, *choosers]
    tp_err: dict[str, list[float]] = {k: [] for k in names}
    ts_err: dict[str, list[float]] = {k: [] for k in names}
    history: dict[str, list[Sample]] = {}
    for st in steps:
        b = st.batch
        if "processing" not in b.actual:
            continue
        rt, n, now, y = b.runtime, float(b.images), b.at, b.actual["processing"]
        seen = history.setdefault(rt, [])
        a0, b0 = priors[rt]
        pred = {k: m(seen, n, now, a0, b0) for k, m in models.items()}
        for k, chooser in choosers.items():
            pred[k], cands = chooser.predict(rt, seen, n, now, a0, b0)
            chooser.observe(rt, cands, y)
        if st.scored:
            rest = st.predicted["total"].mean - st.predicted["processing"].mean
            for k in names:
                tp_err[k].append(abs(y - pred[k]))
                if "total" in b.actual:
                    ts_err[k].append(abs(b.actual["total"] - rest - pred[k]))
        seen.append((now, n, y))
    return {
        k: (
            float(np.mean(tp_err[k])),
            float(np.mean(ts_err[k])) if ts_err[k] else None,
            len(tp_err[k]),
        )
        for k in names
    }


def _print(title: str, figures: dict[str, tuple[float, float | None, int]]) -> None:
    print(f"\n{title}\n\n| T_p model | T_p MAE (s) | T_s MAE (s) | batches |\n|---|---:|---:|---:|")
    for k, (tp, ts, n) in figures.items():
        print(f"| {k} | {tp:.2f} | {'-' if ts is None else f'{ts:.2f}'} | {n} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, help="measured batches (components.csv format)")
    ap.add_argument("--env", type=Path, action="append", default=[], help="spec to replay")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--without-hgb", action="store_true", help="leave the slow HGB model out")
    args = ap.parse_args()
    hgb = not args.without_hgb
    logging.getLogger("stoic").setLevel(logging.ERROR)
    settings = Settings()
    if args.csv:
        steps = replay(Predictor.from_settings(settings), read_components_csv(args.csv))
        _print(f"{args.csv.name}, first 3 per runtime not scored", score(steps, settings, hgb=hgb))
    from stoic.replay.onestep import env_steps

    for env in args.env:
        steps = env_steps(env, days=args.days, seed=args.seed, settings=settings)
        _print(f"{env.stem}, {args.days} days, seed {args.seed}", score(steps, settings, hgb=hgb))


if __name__ == "__main__":
    main()
