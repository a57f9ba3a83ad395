"""The fitted spec as a file: a header that says where every number came from, then YAML.

The header names the command that made the file, the source, the period, the sample
counts, the prior, the rule for keeping a prior value (``stoic.envfit.params``), and
then every parameter the fit considered with its value and its provenance ("fitted,
15 completed deployments" or "prior: 2.7 outliers < 100"). A reader of the spec alone
can tell measured numbers from inherited ones.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from stoic.envfit.fit import SpecFit
from stoic.envfit.measurements import Measurements
from stoic.envfit.params import min_samples_lines
from stoic.replay.randenv import spec_yaml


def period(m: Measurements) -> str:
    """The measurements' period in UTC, with the spec clock's origin."""
    if m.first_epoch is None or m.last_epoch is None:
        return "unknown (the source gives no instants)"
    span_h = (m.last_epoch - m.first_epoch) / 3600
    tz = f"UTC{m.utc_offset_h:+g}" if m.utc_offset_h else "UTC"
    return (
        f"{_utc(m.first_epoch)} to {_utc(m.last_epoch)} ({span_h:.1f} h); spec hour 0 = "
        f"{_utc(m.origin_epoch)} (local midnight, {tz})"
    )


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _counts(m: Measurements) -> list[str]:
    c = m.counts()
    out = []
    for kind, per in c.items():
        if per and any(per.values()):
            out.append(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
    return out


def render(
    fit: SpecFit,
    m: Measurements,
    *,
    command: str,
    prior: str,
    ks: list[dict[str, Any]] | None = None,
) -> str:
    """The text of the spec file: the header, then the YAML body."""
    width = max(map(len, fit.values), default=10)
    header = [
        f"# Fitted environment: {fit.spec.name}. Made by `stoic env fit` (stoic/envfit;",
        "# docs/envfit.md): robust maximum likelihood of the simulator's own model.",
        '# Schema: docs/replay.md ("Environment spec"). Every duration in seconds.',
        "#",
        f"# Command: {command}",
        f"# Source:  {m.source}",
        f"# Period:  {period(m)}",
        "# Samples: " + "; ".join(_counts(m)),
        f'# Prior:   {prior} (a parameter marked "prior" below is its value)',
        "#",
        "# A parameter is fitted only from at least:",
        *(f"#   {line}" for line in min_samples_lines()),
        "#",
        "# Parameters (value, then where it came from):",
        *(f"#   {k.ljust(width)}  {v.value:<10g}  {v.why}" for k, v in fit.values.items()),
    ]
    if fit.kept:
        header += ["#", "# Kept from the prior:", *(f"#   {k}" for k in fit.kept)]
    notes = [*m.notes, *(f"{k}: {v}" for k, v in fit.evidence.items())]
    if notes:
        header += ["#", "# Notes:", *(f"#   {n}" for n in notes)]
    if ks:
        header += ["#", "# Goodness of fit (two-sample KS, measured vs drawn; --report has more):"]
        header += [
            f"#   {r['component']} {r['runtime']} ({r['data']}, n = {r['n']}): "
            f"D = {r['ks']:.3f}, p = {r['p_value']:.3f}"
            for r in ks
        ]
    return "\n".join(header) + "\n" + spec_yaml(fit.raw)
