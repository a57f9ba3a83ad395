"""The sweep: every env × mode × seed in worker processes, one table, failures kept local."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stoic.errors import InputError
from stoic.replay import sweep as sweep_mod
from stoic.replay.runner import DEFAULT_ENV
from stoic.replay.sweep import (
    DEFAULT_ENVS,
    Cell,
    CellResult,
    EnvEntry,
    Metric,
    SweepConfig,
    SweepResult,
    aggregate,
    discover_envs,
    learning_gaps,
    run_sweep,
    table,
)
from stoic.replay.sweep_report import load_sweep, write_sweep_report
from tests.support.paths import REPO

TINY = dict(days=1, batches=3, warmup_periods=5)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)


@pytest.fixture
def envs(tmp_path: Path) -> Path:
    d = tmp_path / "envs"
    d.mkdir()
    shutil.copy(DEFAULT_ENV, d / "a-nautilus.yaml")
    shutil.copy(REPO / "workload" / "envs" / "fast-cloud.yaml", d / "b-fast.yaml")
    return d


def _bad(d: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_ENV.read_text())
    raw["runtimes"]["gpu1"]["deployment"]["median_sec"] = 3
    f = d / "c-bad.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


def test_small_sweep_in_workers_equals_in_process(envs: Path, tmp_path: Path) -> None:
    cfg = SweepConfig(
        envs=discover_envs([envs]),
        modes=("selector", "duplicator-gpu1"),
        seeds=(0, 1),
        jobs=2,
        **TINY,
    )
    par = run_sweep(cfg)
    seq = run_sweep(SweepConfig(**{**cfg.__dict__, "jobs": 1}))
    assert par.jobs == 2 and len(par.cells) == 8 and not par.failed
    assert [c.metrics for c in par.cells] == [c.metrics for c in seq.cells]
    for c in par.cells:  # the causes of the latency above MIN-LAT add up to it
        d = c.details
        gap = d["latency_s"] - d["min_lat_s"]
        assert sum(d["excess_by_cause_s"].values()) == pytest.approx(gap, abs=1e-6)
        assert sum(d["excess_by_size_s"].values()) == pytest.approx(gap, abs=1e-6)
    rows = table(par)
    assert [(r["env"], r["mode"]) for r in rows] == [
        ("a-nautilus", "selector"),
        ("a-nautilus", "duplicator-gpu1"),
        ("b-fast", "selector"),
        ("b-fast", "duplicator-gpu1"),
    ]
    for r in rows:
        agg = r["metrics"]["vs_min_lat"]
        assert agg["n"] == 2 and agg["min"] <= agg["mean"] <= agg["max"]
        assert 0 <= r["metrics"]["success_rate"]["mean"] <= 1
    # the duplicator starts a cloud leg for every batch: it uses cloud time
    dup = next(r for r in rows if r["mode"] == "duplicator-gpu1")
    assert dup["metrics"]["cloud_used_s"]["mean"] > 0
    doc = write_sweep_report(par, tmp_path / "rep", command="stoic replay sweep ...")
    assert (tmp_path / "rep" / "vs_min_lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "rep" / "sweep.json").read_text())["meta"]["cells"] == 8
    assert doc["meta"]["failed"] == 0
    md = (tmp_path / "rep" / "sweep.md").read_text()
    assert "| a-nautilus | selector |" in md and "% of MIN-LAT" in md
    for key in ("mean_latency_s", "p95_vs_best", "vs_min_lat", "vs_class", "pod_s"):
        assert all(c.metrics[key] is not None and c.metrics[key] > 0 for c in par.cells), key
    assert "## Latency against cloud pod time" in md and "* a-nautilus: " in md
    assert doc["meta"]["pareto_plot"] == "pareto.png"
    assert (tmp_path / "rep" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_spec_is_reported_and_the_others_finish(envs: Path, tmp_path: Path) -> None:
    bad = _bad(envs)
    cfg = SweepConfig(envs=discover_envs([envs]), modes=("edge-only",), seeds=(0,), **TINY)
    res = run_sweep(cfg)
    assert set(res.env_errors) == {"c-bad"}
    err = res.env_errors["c-bad"]
    assert str(bad) in err and "runtimes.gpu1.deployment.median_sec: unknown key" in err
    ok = {c.cell.env for c in res.cells if c.ok}
    assert ok == {"a-nautilus", "b-fast"}
    write_sweep_report(res, tmp_path / "rep")
    md = (tmp_path / "rep" / "sweep.md").read_text()
    assert "## Errors" in md and "median_sec: unknown key" in md
    row = next(r for r in table(res) if r["env"] == "c-bad")
    assert row["failed"] == 1 and row["metrics"]["vs_min_lat"]["n"] == 0


def test_a_failing_cell_is_recorded(envs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside a replay (not a bad spec) fails that cell only."""
    import stoic.replay.runner as runner

    real = runner.run_replay

    def flaky(cfg, progress=None):
        if cfg.seed == 1:
            raise ZeroDivisionError("boom")
        return real(cfg, progress)

    monkeypatch.setattr(runner, "run_replay", flaky)
    cfg = SweepConfig(
        envs=discover_envs([envs / "a-nautilus.yaml"]),
        modes=("selector",),
        seeds=(0, 1),
        jobs=1,
        **TINY,
    )
    res = run_sweep(cfg)
    assert [c.ok for c in res.cells] == [True, False]
    assert "ZeroDivisionError: boom" in (res.cells[1].error or "")


def test_metrics_are_an_open_list(
    envs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extra = Metric("batches", "batches", "count", lambda result, scored: len(result.records))
    monkeypatch.setattr(sweep_mod, "METRICS", [*sweep_mod.METRICS, extra])
    monkeypatch.setattr("stoic.replay.sweep_report.METRICS", sweep_mod.METRICS)
    cfg = SweepConfig(
        envs=discover_envs([envs / "a-nautilus.yaml"]),
        modes=("oracle",),
        seeds=(3,),
        jobs=1,
        **TINY,
    )
    res = run_sweep(cfg)
    assert res.cells[0].metrics["batches"] == 3
    doc = write_sweep_report(res, tmp_path)
    assert doc["table"][0]["metrics"]["batches"]["mean"] == 3
    assert "| batches |" in (tmp_path / "sweep.md").read_text().replace(" | seeds ok", "")


def test_aggregate() -> None:
    a = aggregate([1.0, 2.0, 3.0])
    assert a == {"n": 3, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert aggregate([5.0])["std"] == 0.0
    assert aggregate([])["mean"] is None


def test_discover_envs(envs: Path) -> None:
    names = [e.name for e in discover_envs([envs, envs / "a-nautilus.yaml"])]
    assert names == ["a-nautilus", "b-fast"]  # a file given twice counts once
    with pytest.raises(InputError, match="no such file"):
        discover_envs([envs / "nope.yaml"])
    empty = envs / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no \*\.yaml"):
        discover_envs([empty])


def test_the_real_calibration_leads_the_sweep(tmp_path: Path) -> None:
    """The default environment of the sweep is the real calibration: listed first
    wherever it is among the specs, the rest sorted; and the default --envs is the
    repository's family."""
    for name in ("a-site", "nautilus-2020", "nautilus-2020-real", "z-site"):
        shutil.copy(DEFAULT_ENV, tmp_path / f"{name}.yaml")
    names = [e.name for e in discover_envs([tmp_path])]
    assert names == ["nautilus-2020-real", "a-site", "nautilus-2020", "z-site"]
    family = discover_envs([REPO / p for p in DEFAULT_ENVS])
    assert family[0].name == "nautilus-2020-real" and len(family) >= 10


def _synthetic(cells: list[tuple[str, int, float, float | None]]) -> SweepResult:
    """A sweep result from (mode, seed, latency s, vs_class) on one environment whose
    MIN-LAT is 1,000 s per cell; the class reference named as the replay names it."""
    env = EnvEntry("site", Path("site.yaml"))
    refs = {"selector": "informed selector", "informed": "informed selector",
            "share": "fluid lower bound", "duplicator": "informed duplicator"}  # fmt: skip
    modes = tuple(dict.fromkeys(m for m, *_ in cells))
    seeds = tuple(sorted({s for _, s, *_ in cells}))
    cfg = SweepConfig(envs=[env], modes=modes, seeds=seeds, days=1)
    out = []
    for mode, seed, lat, vs_class in cells:
        metrics = {m.key: None for m in sweep_mod.METRICS}
        metrics.update(vs_min_lat=lat / 1000, vs_class=vs_class, mean_latency_s=lat, pod_s=0.0)
        details = {"latency_s": lat, "min_lat_s": 1000.0, "class_ref": refs[mode]}
        out.append(CellResult(Cell("site", env.path, mode, seed, 1), metrics, details))
    return SweepResult(cfg, out, {}, 1, 1.0)


def test_learning_gaps_are_paired_by_seed_with_their_standard_error(tmp_path: Path) -> None:
    """The selector's gap is taken against the informed mode of the same seed (0.05,
    0.07, 0.03, 0.05 of MIN-LAT: mean 5.0 points, sd 1.63, SE 0.82; 3 seeds put the SE
    under a point), share's against its class bound (900 s at 110 % of the fluid bound:
    8.2 points), and the adaptive duplicator's against its informed reference where no
    `informed` cell exists for it to pair with. References get no gap."""
    res = _synthetic(
        [("selector", s, lat, 1.0) for s, lat in enumerate((1100.0, 1120.0, 1080.0, 1100.0))]
        + [("informed", s, 1050.0, 1.0) for s in range(4)]
        + [("share", s, 900.0, 1.1) for s in range(4)]
        + [("duplicator", 0, 1010.0, 1.01)]
    )
    gaps = {g.mode: g for g in learning_gaps(res)}
    assert set(gaps) == {"selector", "share", "duplicator"}
    sel = gaps["selector"]
    assert sel.per_seed == pytest.approx((0.05, 0.07, 0.03, 0.05))
    assert sel.mean == pytest.approx(0.05) and sel.reference == "informed (mode)"
    assert sel.se == pytest.approx((0.0008 / 3) ** 0.5 / 2)
    assert sel.seeds_for_target == 3 and not sel.bound
    share = gaps["share"]
    assert share.bound and share.mean == pytest.approx((900 - 900 / 1.1) / 1000)
    assert share.seeds_for_target == 2  # no spread: two seeds, the least that measures one
    dup = gaps["duplicator"]
    assert dup.n == 1 and dup.se is None and dup.reference == "informed duplicator"
    doc = write_sweep_report(res, tmp_path)
    md = (tmp_path / "sweep.md").read_text()
    assert "## Gap to the reference of each action space" in md
    assert "| site | +5.0 ± 0.8 (3) | +8.2 ± 0.0 (2) † | +1.0 |" in md
    sel_json = next(g for g in doc["learning_gaps"] if g["mode"] == "selector")
    assert sel_json["se"] == pytest.approx(sel.se) and sel_json["seeds_for_se_below_target"] == 3


def test_a_sweep_report_is_written_again_from_its_json(tmp_path: Path) -> None:
    """load_sweep gives back the result a sweep.json was written from: the report
    written from it is the same, so a change to the report needs no replay."""
    res = _synthetic([("selector", s, 1100.0 + 10 * s, 1.0) for s in range(3)]
                     + [("informed", s, 1050.0, 1.0) for s in range(3)])  # fmt: skip
    write_sweep_report(res, tmp_path / "a", command="stoic replay sweep")
    again = load_sweep(tmp_path / "a" / "sweep.json")
    write_sweep_report(again, tmp_path / "b", command="stoic replay sweep")
    for name in ("sweep.md", "sweep.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_the_probe_share_reaches_every_cell_and_survives_the_report(tmp_path: Path) -> None:
    res = _synthetic([("selector", 0, 1100.0, 1.0), ("informed", 0, 1050.0, 1.0)])
    res.config = dataclasses.replace(res.config, probe_share=0.25)
    assert {c.probe_share for c in res.config.cells()} == {0.25}
    write_sweep_report(res, tmp_path, command="stoic replay sweep --probe-share 0.25")
    assert json.loads((tmp_path / "sweep.json").read_text())["meta"]["probe_share"] == 0.25
    assert load_sweep(tmp_path / "sweep.json").config.probe_share == 0.25
    assert SweepConfig(envs=[]).probe_share is None  # the default: no ledger


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoic.cli", *args], capture_output=True, text=True, check=False
    )


def test_cli_sweep_writes_report_then_exits_1_on_a_bad_spec(envs: Path, tmp_path: Path) -> None:
    _bad(envs)
    rep = tmp_path / "rep"
    r = _cli(
        "replay", "sweep",
        "--envs", str(envs / "a-nautilus.yaml"), "--envs", str(envs / "c-bad.yaml"),
        "--modes", "selector,oracle", "--seeds", "1", "--days", "1", "--batches", "2",
        "--warmup-periods", "5", "--random", "1", "--jobs", "2", "--no-progress",
        "--report", str(rep),
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "c-bad.yaml" in r.stderr and "median_sec: unknown key" in r.stderr
    doc = json.loads((rep / "sweep.json").read_text())
    assert list(doc["meta"]["envs"]) == ["a-nautilus", "c-bad", "random-000"]
    ok = [(c["env"], c["mode"]) for c in doc["cells"] if c["error"] is None]
    assert ok == [
        ("a-nautilus", "selector"),
        ("a-nautilus", "oracle"),
        ("random-000", "selector"),
        ("random-000", "oracle"),
    ]
    assert (rep / "envs" / "random-000.yaml").exists()
    assert (rep / "vs_min_lat.png").read_bytes()[:4] == b"\x89PNG"
    assert "stoic replay sweep --envs" in (rep / "sweep.md").read_text()


def test_cli_sweep_bad_mode_one_line_exit_2(envs: Path, tmp_path: Path) -> None:
    r = _cli("replay", "sweep", "--envs", str(envs), "--modes", "selector,teleport",
             "--report", str(tmp_path / "r"))  # fmt: skip
    assert r.returncode == 2
    assert "unknown mode 'teleport'" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()


def test_single_replay_cli_still_works(tmp_path: Path) -> None:
    r = _cli("replay", "--batches", "2", "--no-progress", "--report", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "report.json").exists()
    r = _cli("replay", "--batches", "2")
    assert r.returncode == 2 and "Missing option '--report'" in r.stderr
