"""Charts for the operator page, drawn as inline SVG on the server.

Why server-side SVG rather than a charting library in the browser: the page must work
offline (nothing fetched at run time), the charts are small (tens to a few hundred
points), and an SVG string is testable without a browser. Colours and line styles come
from the stylesheet through CSS classes (``series-<kind>``), so the page's Content
Security Policy can forbid inline styles.

Every text that ends up in the SVG (titles, series names, tooltips) goes through
:func:`markupsafe.escape`; numbers are formatted here. The functions return
:class:`markupsafe.Markup`, which Jinja2's autoescaping leaves as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

WIDTH = 360
HEIGHT = 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 22, 22


@dataclass(frozen=True, slots=True)
class Series:
    """One data series: ``points`` are (x, y); ``kind`` picks the CSS class
    (``series-<kind>``); ``tips`` are optional per-point tooltips."""

    name: str
    kind: str
    points: Sequence[tuple[float, float]]
    line: bool = True
    tips: Sequence[str] = field(default_factory=tuple)


def nice_step(span: float, target_ticks: int = 4) -> float:
    """A step of 1, 2 or 5 × 10^k that cuts ``span`` into about ``target_ticks``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return float(m * mag)
    return float(10 * mag)  # pragma: no cover (the loop always returns)


def _fmt_number(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _fmt_time(t: float, span: float) -> str:
    lt = time.localtime(t)
    if span > 36 * 3600:
        return time.strftime("%m-%d", lt)
    if span < 600:
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%H:%M", lt)


def _frame(title: str, extra_class: str, width: int, height: int) -> list[str]:
    t = escape(title)
    return [
        f'<svg class="chart{extra_class}" role="img" aria-label="{t}" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}">',
        f"<title>{t}</title>",
        f'<text class="chart-title" x="{_LEFT}" y="14">{t}</text>',
    ]


def empty_chart(title: str, message: str, *, width: int = WIDTH, height: int = HEIGHT) -> Markup:
    parts = _frame(title, " empty", width, height)
    parts.append(
        f'<text class="chart-empty" x="{width / 2:.0f}" y="{height / 2:.0f}" '
        f'text-anchor="middle">{escape(message)}</text></svg>'
    )
    return Markup("".join(parts))


def time_chart(
    title: str,
    series: Sequence[Series],
    *,
    unit: str = "s",
    empty: str = "no samples yet",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """Several series over wall-clock time (x: epoch seconds, y: ``unit``, from 0)."""
    pts = [p for s in series for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return empty_chart(title, empty, width=width, height=height)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    if x1 - x0 < 1:
        x0, x1 = x0 - 30, x1 + 30
    y_max = max(max(p[1] for p in pts), 0.0)
    step = nice_step(y_max * 1.05 if y_max > 0 else 1.0)
    y1 = step * math.ceil((y_max * 1.05 if y_max > 0 else 1.0) / step)
    plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - max(y, 0.0) / y1 * plot_h

    parts = _frame(title, "", width, height)
    parts.append('<g class="axes">')
    bottom = _TOP + plot_h
    parts.append(f'<line x1="{_LEFT}" y1="{bottom}" x2="{_LEFT + plot_w}" y2="{bottom}"/>')
    parts.append(f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}"/>')
    tick = 0.0
    while tick <= y1 + step / 2:
        y = sy(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">'
            f"{escape(_fmt_number(tick))}{escape(unit) if tick == 0 else ''}</text>"
        )
        tick += step
    span = x1 - x0
    for i in range(3):
        t = x0 + span * i / 2
        anchor = ("start", "middle", "end")[i]
        parts.append(
            f'<text x="{sx(t):.1f}" y="{bottom + 14}" text-anchor="{anchor}">'
            f"{escape(_fmt_time(t, span))}</text>"
        )
    parts.append("</g>")
    for s in series:
        good = [
            (i, p) for i, p in enumerate(s.points) if math.isfinite(p[0]) and math.isfinite(p[1])
        ]
        if not good:
            continue
        kind = escape(s.kind)
        parts.append(f'<g class="series series-{kind}" data-series="{escape(s.name)}">')
        if s.line and len(good) > 1:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for _, (x, y) in good)
            parts.append(f'<polyline points="{coords}"/>')
        for i, (x, y) in good:
            tip = s.tips[i] if i < len(s.tips) else f"{s.name}: {_fmt_number(y)} {unit}"
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5">'
                f"<title>{escape(tip)}</title></circle>"
            )
        parts.append("</g>")
    # Legend, top right.
    x = width - _RIGHT
    for s in reversed(series):
        label = escape(s.name)
        parts.append(
            f'<text class="legend series-{escape(s.kind)}" x="{x}" y="14" '
            f'text-anchor="end">● {label}</text>'
        )
        x -= 9 + 7 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))


def share_chart(
    title: str,
    items: Sequence[tuple[str, int]],
    *,
    empty: str = "no batches yet",
    width: int = WIDTH,
) -> Markup:
    """Horizontal bars: the share of ``items`` (label, count) in their total."""
    total = sum(n for _, n in items)
    row = 20
    height = _TOP + row * max(len(items), 1) + 6
    if total <= 0:
        return empty_chart(title, empty, width=width, height=max(height, 60))
    label_w = 70
    bar_w = width - label_w - 90
    parts = _frame(title, "", width, height)
    for i, (label, n) in enumerate(items):
        y = _TOP + i * row
        share = n / total
        parts.append(f'<g class="series series-share" data-series="{escape(label)}">')
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{max(share * bar_w, 1):.1f}" '
            f'height="{row - 6}">'
            f"<title>{escape(label)}: {n} of {total} batches</title></rect>"
        )
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 13}">{share:.0%} ({n})</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
