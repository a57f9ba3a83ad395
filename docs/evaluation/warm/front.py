"""The selector's latency against its warm pod seconds, predicted keep-alive vs fixed.

    PYTHONPATH=. .venv/bin/python docs/evaluation/warm/front.py

Reads the runs of ``run.py`` beside this file (``warm.json``, ``warm-price-0.1.json``,
``warm-fixed-60.json`` and ``front/*.json``: ``--only-on --envs
nautilus-2020-real,bursty --modes selector`` with ``--price`` 0.05, 0.2, 0.5 and
``--fixed`` 30, 300, 900) and prints, per environment, each setting's % of MIN-LAT and
warm pod seconds (means over the seeds), and whether a setting of the other kind
beats it on both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENVS = ("nautilus-2020-real", "bursty")


def points() -> dict[str, dict[str, tuple[float, float]]]:
    """env -> setting -> (% of MIN-LAT, warm pod seconds), the selector with warm pods on."""
    files = [HERE / "warm.json", HERE / "warm-price-0.1.json", HERE / "warm-fixed-60.json"]
    files += sorted((HERE / "front").glob("*.json"))
    out: dict[str, dict[str, tuple[float, float]]] = {env: {} for env in ENVS}
    for f in files:
        data: dict[str, Any] = json.loads(f.read_text())
        meta = data["meta"]
        fixed = meta.get("fixed_s")
        label = (
            f"fixed {fixed:g} s" if fixed is not None else f"price {meta['price_s_per_pod_s']:g}"
        )
        for env in ENVS:
            rows = [
                r for r in data["rows"] if r["env"] == env and r["mode"] == "selector" and r["warm"]
            ]
            if rows:
                pct = 100 * sum(r["vs_min_lat"] for r in rows) / len(rows)
                warm = sum(r["pod_s_warm"] for r in rows) / len(rows)
                out[env][label] = (pct, warm)
    return out


def main() -> None:
    for env, by in points().items():
        print(
            f"\n{env}\n\n| setting | % of MIN-LAT | warm pod-s | beaten by |\n|---|---:|---:|---|"
        )
        for label, (pct, warm) in sorted(by.items(), key=lambda kv: kv[1][1]):
            kind = label.split()[0]
            beaten = [
                other
                for other, (p, w) in by.items()
                if other.split()[0] != kind and p <= pct and w <= warm
            ]
            print(f"| {label} | {pct:.1f} | {warm:,.0f} | {', '.join(beaten) or '—'} |")


if __name__ == "__main__":
    main()
