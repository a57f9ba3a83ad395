"""``stoic evaluate predictor``: one step ahead through the daemon's predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stoic.cli import app
from stoic.errors import InputError
from stoic.predict.onestep import MeasuredBatch, read_components_csv, replay, score
from stoic.predict.predictor import Predictor
from stoic.settings import Settings
from tests.support.csvfiles import assert_refused
from tests.support.paths import REPO, SHARED
from tests.support.processes import cli_error_line

REAL = SHARED / "data" / "nautilus-2020-real" / "components.csv"
HEADER = "epoch,image_num,runtime,act_transfer,act_deploy,act_proc,act_total,pred_proc"
runner = CliRunner()


def _steady(path: Path, rows: int = 12) -> Path:
    """gpu1: T_p = 0.5 s/image + 4 s, T_d 30 s, T_t 0.05 s/image; edge: 2 s/image."""
    lines = [HEADER]
    for i in range(rows):
        n = 10 + 7 * i
        tp, tt = 0.5 * n + 4, 0.05 * n
        lines.append(f"{1000 + 100 * i},{n},gpu1,{tt},30,{tp},{tt + 30 + tp},{tp + 1}")
        lines.append(f"{1050 + 100 * i},{n},edge,0,0,{2 * n},{2 * n},")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_steady_site_is_learnt_and_the_reference_is_scored(tmp_path: Path) -> None:
    steps = replay(
        Predictor.from_settings(Settings()), read_components_csv(_steady(tmp_path / "s.csv"))
    )
    figures = score(steps)
    gpu1, edge = figures["gpu1"], figures["edge"]
    assert gpu1["processing"]["n"] == 9  # 12 rows, the first 3 observed only
    assert gpu1["processing"]["mae_s"] < 0.05
    assert gpu1["deployment"]["mae_s"] < 1e-9
    assert gpu1["transfer"]["mae_s"] < 1e-6  # the nominal bytes per image cancel
    assert gpu1["processing"]["reference_mae_s"] == pytest.approx(1.0)
    assert edge["processing"]["mae_s"] < 0.05
    assert "deployment" not in edge or edge["deployment"]["n"] == 0  # nothing to score
    assert figures["all"]["total"]["n"] == 18
    # Asked before observed: the first batch is predicted from the priors alone.
    assert steps[0].predicted["deployment"].mean == Settings().runtime("gpu1").prior_deploy_s


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} (the shared real data) is not here")
def test_the_real_runs_match_the_audit_figures() -> None:
    result = runner.invoke(app, ["evaluate", "predictor", "--csv", str(REAL), "--json"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output)["runtimes"]["all"]
    # docs/predictor.md, "On the real runs": ours against STOIC's own predictions.
    assert fig["deployment"]["mae_s"] == pytest.approx(9.74, abs=0.01)
    assert fig["deployment"]["reference_mae_s"] == pytest.approx(24.70, abs=0.01)
    assert fig["processing"]["mae_s"] == pytest.approx(6.01, abs=0.01)
    assert fig["total"]["mae_s"] == pytest.approx(10.25, abs=0.01)
    assert fig["total"]["reference_mae_s"] == pytest.approx(22.88, abs=0.01)
    # Calibrated spreads (stoic/predict/spread.py): 68 %, 44 % and 56 % before.
    for component, covered in (
        ("deployment", 27 / 31),
        ("processing", 43 / 48),
        ("total", 43 / 48),
    ):
        assert fig[component]["coverage_90"] == pytest.approx(covered)
        assert 0.85 <= fig[component]["coverage_90"] <= 0.95


def test_plot_and_table(tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    csv = _steady(tmp_path / "s.csv")
    result = runner.invoke(app, ["evaluate", "predictor", "--csv", str(csv), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "90 % cover" in result.output and "gpu1" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("epoch,runtime\n1,edge\n", 1, None, "missing column(s) image_num, act_proc"),
        (f"{HEADER}\n1,0,edge,0,0,3,3,\n", 2, "image_num", "at least 1"),
        (f"{HEADER}\n1,4,gpu1,0.1,-2,3,3,\n", 2, "act_deploy", "duration >= 0"),
        (f"{HEADER}\n1,4,gpu1,0.1,2,,3,\n", 2, "act_proc", "empty"),
        (f"{HEADER}\n", 1, None, "no rows"),
    ],
)
def test_bad_csv_is_named(
    tmp_path: Path, text: str, line: int, column: str | None, problem: str
) -> None:
    assert_refused(read_components_csv, tmp_path / "bad.csv", text, line, column, problem)


def test_an_unknown_runtime_is_one_line_and_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text(f"{HEADER}\n1,4,tpu9,0.1,2,3,5.1,\n")
    with pytest.raises(InputError, match="unknown runtime 'tpu9'"):
        replay(
            Predictor.from_settings(Settings()),
            [MeasuredBatch(1.0, "tpu9", 4, {"processing": 3.0})],
        )
    assert "tpu9" in cli_error_line("evaluate", "predictor", "--csv", str(p))


def test_a_cold_first_deployment_is_a_what_if_and_the_cold_ratio_keeps_it_out(
    tmp_path: Path,
) -> None:
    """``--cold-first``: each cloud runtime's first T_d is replaced (its total moves by
    as much); one prior sample then predicts the pull today, the prior with a cold ratio."""
    batches = read_components_csv(_steady(tmp_path / "s.csv"))
    today = replay(Predictor.from_settings(Settings()), batches, skip=1, cold_first_s=605.0)
    first = today[0].batch
    assert first.actual["deployment"] == 605.0
    assert first.actual["total"] == pytest.approx(batches[0].actual["total"] + 575.0)
    assert today[1].batch.runtime == "edge" and today[1].batch.actual["deployment"] == 0.0
    assert today[2].predicted["deployment"].mean == 605.0
    cold = Settings(predictor={"deployment_cold_ratio": 3.0})
    steps = replay(Predictor.from_settings(cold), batches, skip=1, cold_first_s=605.0)
    assert steps[2].predicted["deployment"].mean == cold.runtime("gpu1").prior_deploy_s
    assert score(steps)["gpu1"]["deployment"]["mae_s"] == 0.0
    assert score(today)["gpu1"]["deployment"]["mae_s"] > 50.0


def test_cold_first_is_for_measured_batches_only() -> None:
    result = runner.invoke(
        app, ["evaluate", "predictor", "--env", "workload/envs", "--cold-first", "605"]
    )
    assert isinstance(result.exception, InputError)
    assert "--cold-first: only with --csv" in str(result.exception)


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} (the shared real data) is not here")
@pytest.mark.parametrize("name", ["regimes.toml", "recommended.toml", "regimes-all.toml"])
def test_the_real_runs_with_the_regime_settings(name: str) -> None:
    """docs/predictor.md, "Regimes": the day-old lines left out (processing_max_age_s),
    T_p 6.01 → 4.37 s and T_s 10.25 → 8.90 s, the 90 % intervals still within 85–95 %;
    the recommended set's T_d options change nothing on this file ("T_s on the real
    runs: where the error is"), nor do regimes-all.toml's others ("Every regime option
    together": the time-of-day term needs a clock, the shape and the tail view more
    samples, and the detector raises no alarm)."""
    config = REPO / "docs" / "evaluation" / "predictor" / name
    result = runner.invoke(
        app, ["evaluate", "predictor", "--csv", str(REAL), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output)["runtimes"]["all"]
    assert fig["processing"]["mae_s"] == pytest.approx(4.37, abs=0.01)
    assert fig["total"]["mae_s"] == pytest.approx(8.90, abs=0.01)
    assert fig["deployment"]["mae_s"] == pytest.approx(9.74, abs=0.01)
    for component in ("deployment", "processing", "total"):
        assert 0.85 <= fig[component]["coverage_90"] <= 0.95
