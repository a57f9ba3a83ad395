"""docs/evaluation/predictor/regimes-all/: the scripts behind docs/predictor.md, "Every
regime option together"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.scripts import load_script

FOLDER = REPO / "docs" / "evaluation" / "predictor" / "regimes-all"
compare = load_script(FOLDER / "compare.py")
by_hour = load_script(FOLDER / "by_hour.py")


def _sweep(
    folder: Path, env: str, runs: dict[int, tuple[float, float]], modes: tuple[str, str]
) -> str:
    """A sweep.json in ``folder``: per seed, the two modes' % of MIN-LAT."""
    folder.mkdir(parents=True)
    rows = [
        {"env": env, "mode": m, "seed": s, "error": None, "metrics": {"vs_min_lat": v / 100}}
        for s, pair in runs.items()
        for m, v in zip(modes, pair, strict=True)
    ]
    rows.append({"env": "x", "mode": "share", "seed": 0, "error": None, "metrics": {}})
    (folder / "sweep.json").write_text(json.dumps({"cells": rows}))
    return str(folder)


def test_the_table_pairs_the_seeds_both_sweeps_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gaps are selector − informed seed by seed, the paired change is after − before on
    the seeds both hold (seed 2 is in one only), and other modes are ignored."""
    modes = ("selector", "informed")
    before = _sweep(tmp_path / "a", "x", {0: (110, 100), 1: (120, 104), 2: (500, 100)}, modes)
    after = _sweep(tmp_path / "b", "x", {0: (104, 100), 1: (110, 104)}, modes)
    monkeypatch.setattr("sys.argv", ["compare.py", before, after])
    compare.main()
    out = capsys.readouterr().out
    # gaps: before 10, 16 (mean 13, se 3); after 4, 6 (mean 5, se 1); paired -6, -10
    row = "| x | 2 | 115.0 → 107.0 | 102.0 → 102.0 | +13.0 ± 3.0 | +5.0 ± 1.0 | -8.0 ± 2.0 |"
    assert row in out
    assert "The selector summed: 115.0 → 107.0" in out


@pytest.mark.parametrize(
    ("selector", "informed", "expected"),
    [
        ("gpu1", "gpu1", "same"),
        ("edge", "gpu1", "selector edge"),
        ("gpu2", "edge", "informed edge"),
        ("gpu1", "gpu2", "other cloud"),
    ],
)
def test_each_batch_is_put_in_one_kind(selector: str, informed: str, expected: str) -> None:
    assert by_hour.kind(selector, informed) == expected


def test_named_modes_are_read_from_one_sweep_per_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/evaluation/actions-all/'s layout (a folder per environment) and its modes: the
    plain selector's cells in the same sweeps are not read."""
    before = tmp_path / "before"
    _sweep(before / "x", "x", {0: (110, 101)}, ("sel+a", "inf+a"))
    _sweep(before / "x-plain", "x", {0: (300, 100)}, ("selector", "informed"))
    _sweep(before / "y", "y", {0: (120, 100)}, ("sel+a", "inf+a"))
    after = _sweep(tmp_path / "after", "x", {0: (105, 101)}, ("sel+a", "inf+a"))
    monkeypatch.setattr("sys.argv", ["compare.py", str(before), after, "sel+a", "inf+a"])
    compare.main()
    out = capsys.readouterr().out
    assert "| x | 1 | 110.0 → 105.0 | 101.0 → 101.0 | +9.0 ± 0.0 | +4.0 ± 0.0 | -5.0 ± 0.0 |" in out
    assert "The learning gaps summed: +9.0 → +4.0" in out
    assert "Gaps of at most 2 points: 0 → 0" in out


def test_gaps_are_read_as_the_sweeps_computed_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--gaps MODE``: each environment's ``learning_gaps`` entry of MODE, other modes'
    ignored, in points; the count of gaps at most 2 points."""
    for name, gap in (("before", 0.03), ("after", 0.015)):
        (tmp_path / name).mkdir()
        gaps = [
            {"env": "x", "mode": "dup", "mean": gap, "se": 0.005},
            {"env": "x", "mode": "selector", "mean": 0.5, "se": 0.1},
        ]
        (tmp_path / name / "sweep.json").write_text(json.dumps({"learning_gaps": gaps}))
    argv = ["compare.py", str(tmp_path / "before"), str(tmp_path / "after"), "--gaps", "dup"]
    monkeypatch.setattr("sys.argv", argv)
    compare.main()
    out = capsys.readouterr().out
    assert "| x | +3.0 ± 0.5 | +1.5 ± 0.5 |" in out
    assert "Gaps of at most 2 points: 0 → 1" in out


def test_the_ledger_table_holds_the_ratio_and_the_growth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--ledger``: probes ÷ batches as the ratio of the means over the seeds, and an
    environment meets both only with the ratio ≤ 25 % and the gap growing ≤ 0.5 point."""

    def cell(env: str, mode: str, seed: int, vs: float, probes: float) -> dict[str, object]:
        metrics = {"vs_min_lat": vs, "probe_cloud_s": probes, "cloud_used_s": 100.0}
        return {"env": env, "mode": mode, "seed": seed, "error": None, "metrics": metrics}

    sel, inf = "selector+deadline+pipelined", "informed+deadline+pipelined"
    runs = {  # env: (before: selector, probes), (after: selector, probes)
        "fine": ((1.10, 50.0), (1.104, 20.0)),
        "grows": ((1.10, 50.0), (1.11, 20.0)),
        "costly": ((1.10, 50.0), (1.10, 30.0)),
    }
    for i, name in enumerate(("before", "after")):
        cells = []
        for env, pair in runs.items():
            for seed in (0, 1):
                cells.append(cell(env, sel, seed, pair[i][0], pair[i][1]))
                cells.append(cell(env, inf, seed, 1.0, 0.0))
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(json.dumps({"cells": cells}))
    argv = ["compare.py", str(tmp_path / "before"), str(tmp_path / "after"), "--ledger"]
    monkeypatch.setattr("sys.argv", argv)
    compare.main()
    out = capsys.readouterr().out
    assert "| fine | 50.0 % | 20.0 % | +10.0 ± 0.0 | +10.4 ± 0.0 | +0.4 ± 0.0 | yes |" in out
    assert "| grows | 50.0 % | 20.0 % | +10.0 ± 0.0 | +11.0 ± 0.0 | +1.0 ± 0.0 | no |" in out
    assert "| costly | 50.0 % | 30.0 % |" in out and "1 of 3 environments meet both." in out
