"""A time-of-day term of T_p, learnt from the site's own past days.

A daily spell (an edge that shares its CPU with the station's afternoon work, a cluster
busy every evening) is a regime the T_p line of the last runs can only follow: it learns
the slow runtime a few batches into each spell and unlearns it a few batches after,
and once the selector stops running a slow runtime no sample tells the line that the
spell has ended (docs/predictor.md, "Regimes"). What the line cannot see, the site's
history can: the spell came at the same hours yesterday and the day before.

:class:`DailyProfile` keeps the samples of one processing model and, at the start of
each day (UTC, so no time zone is needed: a daily pattern is as regular in UTC as in
local time), fits a multiplicative factor per hour of the day from the days *before* it:

1. a robust reference line through those samples (Theil–Sen on the last
   :data:`LINE_SAMPLES`, each divided by its hour's factor: two rounds, the first with
   every factor 1), so that batches of different sizes give comparable ratios;
2. the log of each sample's ratio to that line, centred per day (minus the median of
   the day's hourly medians), so a runtime that got faster or slower from one day to the
   next leaves no trace: the term says how an hour differs from the rest *of its day*;
3. per hour, the median over the past days of each day's median there (one congested
   run moves a day's median little, one odd day the median of several not at all),
   shrunk toward 0 by :data:`SHRINK_DAYS` pseudo-days at factor 1. It counts only where
   at least ``min_days`` days measured that hour, each of at least ``min_days`` of them
   by ``log(1 + min_effect)`` or more on the same side, and the shrunk median is that
   far from 0 too; every other hour's factor is exactly 1. A daily pattern is one seen
   on several days: a permanent step splits one day in two (its morning looks fast,
   its afternoon slow) and the days after it are level again;
4. and one that lasts: an hour keeps its factor only where the hour before or after it
   has one on the same side. A runtime nobody uses is measured by one probe an hour,
   and where one run in seven is congested (random-004's cloud), a congested probe at
   the same hour on two days came once or twice a week per runtime and priced that
   hour ×1.2–1.4 for days; congestion at two neighbouring hours on two days is rare.

On a site without a daily pattern every factor is 1 and every prediction is the line's,
bit for bit.

:class:`~stoic.predict.processing.ProcessingModel` then fits its line on each sample
divided by its hour's factor and multiplies the line's prediction by the factor of the
hour it is asked for (the injected clock's, :class:`~stoic.predict.predictor.Predictor`).
Everything here is out of sample: a day's factors come from the days before it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stoic.predict.deployment import FloatArray
from stoic.predict.order import median

DAY_S = 86_400.0
HOUR_S = 3_600.0
HOURS = 24
SHRINK_DAYS = 0.5
"""Pseudo-days at factor 1 behind each hour's factor: with ``d`` days measured, the
log-factor is ``d / (d + 0.5)`` of their median, so two days of a ×2.5 spell give ×2.08
and five ×2.30. (With 1, five days gave ×2.15, and the line, fitted on the spell's
samples divided by it, still came out of each spell 16 % high.)"""
LINE_SAMPLES = 400
"""Samples (the newest) the reference line is fitted on: a Theil–Sen line costs their
pairs, 80,000 here, once a day."""
IntArray = npt.NDArray[np.int64]
HISTORY = 4_000
"""Samples kept: weeks of a runtime measured every few minutes."""


@dataclass(frozen=True, slots=True)
class DailyOptions:
    """``predictor.processing_time_of_day_*``: how many past days must have measured an
    hour before its factor counts, and the least effect that counts."""

    min_days: int = 2
    min_effect: float = 0.2


def _theil_sen(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    i, j = np.triu_indices(x.size, k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    slope = median((y[j] - y[i])[ok] / dx[ok]) if ok.any() else 0.0
    return slope, median(y - slope * x)


class DailyProfile:
    """Hour-of-day factors of one processing model (module docstring)."""

    def __init__(self, options: DailyOptions = DailyOptions()) -> None:
        self.options = options
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=HISTORY)
        self._day: int | None = None
        self._log = np.zeros(HOURS)
        self.version = 0
        """Counts the refits that changed a factor (the model refits its line on them)."""

    def add(self, at: float, images: float, seconds: float) -> None:
        """Record a measured run that ended at ``at`` (epoch seconds)."""
        if seconds > 0:
            self._samples.append((at, images, seconds))

    def refresh(self, now: float) -> None:
        """Refit the factors from the days before ``now``'s when ``now`` is in a new day."""
        day = math.floor(now / DAY_S)
        if self._day is not None and day <= self._day:
            return
        self._day = day
        log = self._fit(day * DAY_S)
        if not np.array_equal(log, self._log):
            self._log = log
            self.version += 1

    def factor(self, at: float) -> float:
        """The factor of ``at``'s hour of the day (1 where none has been learnt)."""
        g = self._log[_hour(at)]
        return 1.0 if g == 0.0 else math.exp(g)

    @property
    def factors(self) -> list[float]:
        """The 24 factors, hour 0 (UTC) first."""
        return [math.exp(g) for g in self._log]

    def _fit(self, before: float) -> FloatArray:
        rows = [s for s in self._samples if s[0] < before]
        log = np.zeros(HOURS)
        if not rows:
            return log
        a = np.array(rows, dtype=np.float64)
        days = np.floor(a[:, 0] / DAY_S).astype(np.int64)
        hours = ((a[:, 0] % DAY_S) // HOUR_S).astype(np.int64)
        x, y = a[:, 1], a[:, 2]
        for _ in range(2):
            tail = slice(-LINE_SAMPLES, None)
            slope, intercept = _theil_sen(x[tail], (y / np.exp(log[hours]))[tail])
            line = slope * x + intercept
            ok = line > 0
            if not ok.any():
                return np.zeros(HOURS)
            log = self._factors(np.log(y[ok] / line[ok]), days[ok], hours[ok])
        return log

    def _factors(self, ratios: FloatArray, days: IntArray, hours: IntArray) -> FloatArray:
        cells = np.full((np.unique(days).size, HOURS), np.nan)
        for row, d in enumerate(np.unique(days)):
            on = days == d
            for h in np.unique(hours[on]):
                cells[row, h] = median(ratios[on & (hours == h)])
            cells[row] -= median(cells[row][~np.isnan(cells[row])])
        log = np.zeros(HOURS)
        dead = math.log1p(self.options.min_effect)
        for h in range(HOURS):
            seen = cells[:, h][~np.isnan(cells[:, h])]
            if seen.size < self.options.min_days:
                continue
            g = median(seen) * seen.size / (seen.size + SHRINK_DAYS)
            agree = int(np.count_nonzero(seen * math.copysign(1.0, g) >= dead))
            if abs(g) >= dead and agree >= self.options.min_days:
                log[h] = g
        lasting = (log * np.roll(log, 1) > 0) | (log * np.roll(log, -1) > 0)
        return np.where(lasting, log, 0.0)


def _hour(at: float) -> int:
    return int((at % DAY_S) // HOUR_S)
