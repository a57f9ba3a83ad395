"""``stoic env fit`` as a user meets it: from a CSV to a spec that loads and replays, a
report with a KS distance and a QQ plot per runtime and component, and one clear line
(exit code 2, no traceback) for input it cannot fit."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stoic.backends.simulated import EnvSpec, RuntimeTruth, SimEnvironment
from stoic.cli import main
from stoic.envfit.csvsource import read_csv
from stoic.envfit.gof import runtimes_of
from stoic.envfit.gof import total as gof_total
from stoic.envfit.measurements import Measurements
from stoic.envfit.params import min_samples_markdown
from stoic.replay.runner import ReplayConfig, run_replay
from stoic.store import Store, migrate
from stoic.values import DeploymentSample, Job
from tests.support.paths import REPO

NAUTILUS = REPO / "workload" / "nautilus-2020.yaml"
HEADER = "epoch,image_num,runtime,act_transfer,act_deploy,act_proc,act_total,pred_total"


def _components(path: Path, batches: int = 24, seed: int = 0) -> Path:
    """A components CSV of ``batches`` batches run on every runtime, drawn from the
    nautilus-2020 spec by the simulator (the layout of the real runs)."""
    spec = EnvSpec.load(NAUTILUS)
    env = SimEnvironment(spec, runtimes_of(spec), seed=seed)
    rng = np.random.default_rng(seed)
    rows = [HEADER]
    t0 = 1_580_669_108.0
    for i in range(batches):
        n = int(rng.integers(1, 200))
        at = 600.0 * i
        truth = env.audit(i, Job(f"b{i}", n, n * 212_000), at)
        for rt, tr in truth.runtimes.items():
            dep = tr.deployment_s if tr.attempts else 0.0
            if dep != dep:  # a timed-out draw: not in a file of completed runs
                continue
            rows.append(
                f"{t0 + at:.0f},{n},{rt},{tr.transfer_s:.6f},{dep:.6f},"
                f"{tr.processing_s:.6f},{tr.total_s:.6f},0"
            )
    path.write_text("\n".join(rows) + "\n")
    return path


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    monkeypatch.setattr(sys, "argv", ["stoic", "env", "fit", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_csv_to_a_spec_that_loads_and_replays_with_its_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _components(tmp_path / "components.csv")
    totals = tmp_path / "totals.csv"
    totals.write_text("image_num,runtime,act_total\n10,edge,38.0\n50,edge,133.4\n30,gpu1,95.0\n")
    out = tmp_path / "site-a.yaml"
    report = tmp_path / "report"
    args = ["--csv", str(csv), "--totals", str(totals), "--prior", str(NAUTILUS)]
    args += ["--utc-offset", "-8", "--out", str(out), "--report", str(report), "--no-progress"]
    code, stdout, err = _main(monkeypatch, capsys, *args)
    assert code in (0, None), err
    assert f"wrote {out}" in stdout

    spec = EnvSpec.load(out)
    assert spec.name == "site-a"
    text = out.read_text()
    header = text.split("\nname:")[0]
    assert f"# Command: stoic env fit --csv {csv} --totals {totals}" in header
    assert f"# Source:  {csv}, {totals}" in header
    assert "# Period:  2020-02-02 18:45 UTC to " in header
    assert "# Samples: deployments: cpu 24, gpu1 24, gpu2 24" in header
    assert "#   runtimes.gpu1.deployment.median_s" in header
    assert "fitted, 24 completed deployments" in header
    assert "prior: 24 attempts < 50" in header  # the timeout rate, short of attempts

    doc = json.loads((report / "gof.json").read_text())
    seen = {(c["component"], c["runtime"]) for c in doc["checks"]}
    for rt in ("cpu", "gpu1", "gpu2"):
        assert ("T_d", rt) in seen
    for rt in ("edge", "cpu", "gpu1", "gpu2"):
        assert ("T_p", rt) in seen and ("T_s", rt) in seen
    assert ("T_t", "uplink") in seen
    for c in doc["checks"]:
        assert 0 <= c["ks"] <= 1 and 0 <= c["p_value"] <= 1
        assert c["ks_prior"] is not None
    assert sorted(p.name for p in report.glob("qq_*.png")) == [
        "qq_T_d.png", "qq_T_p.png", "qq_T_s.png", "qq_T_t.png"
    ]  # fmt: skip
    assert "| T_d | gpu1 |" in (report / "gof.md").read_text()

    logging.getLogger("stoic").setLevel(logging.ERROR)
    r = run_replay(ReplayConfig(env_path=out, mode="selector", batches=4, warmup_periods=5))
    assert len(r.records) == 4


def read_with_totals(tmp_path: Path, components: str) -> Measurements:
    """``components`` read as ``c.csv`` with a totals file ``t.csv`` (the edge 14 s and
    gpu1 50 s for 5 images), 200 kB per image, no cloud prior, UTC."""
    csv = tmp_path / "c.csv"
    csv.write_text(components)
    totals = tmp_path / "t.csv"
    totals.write_text("image_num,runtime,act_total\n5,edge,14.0\n5,gpu1,50.0\n")
    return read_csv(csv, [totals], cloud_prior=set(), bytes_per_image=200_000, utc_offset_h=0)


def test_csv_reading_counts_a_shared_upload_once_and_edge_totals_as_processing(
    tmp_path: Path,
) -> None:
    m = read_with_totals(
        tmp_path,
        "epoch,image_num,runtime,act_transfer,act_deploy,act_proc\n"
        "1000,10,edge,0,0,25.0\n"
        "1100,10,cpu,0.5,20.0,30.0\n"
        "1200,10,gpu1,0.5,25.0,20.0\n"
        "1300,20,gpu1,1.1,24.0,22.0\n",
    )
    assert m.uploads is not None
    assert sorted(m.uploads.seconds.tolist()) == [0.5, 1.1]
    assert m.uploads.n_bytes.tolist() == [2_000_000, 4_000_000]
    assert set(m.deployments) == {"cpu", "gpu1"}
    assert m.runs["edge"].duration_s.tolist() == [25.0, 14.0]
    assert m.runs["gpu1"].duration_s.tolist() == [20.0, 22.0]
    assert m.origin_epoch == 0.0 and m.deployments["cpu"].at_s.tolist() == [1100.0]


def test_measured_totals_are_compared_with_what_they_measured(tmp_path: Path) -> None:
    """A components row's T_s is the sum of its components, T_t + T_d + T_p, as the
    spec's is: the authors' act_total leaves the upload out (here 45.0 and 46.0 where
    the sum is 45.5 and 47.1), and a row that reused a pod has no comparable T_s. A
    totals file's cloud figures have no upload, so the spec's draws leave it out too:
    T_d + warm-up + T_p (a timed-out deployment's fallback as it is)."""
    m = read_with_totals(
        tmp_path,
        "epoch,image_num,runtime,act_transfer,act_deploy,act_proc,act_total\n"
        "1000,10,edge,0,0,25.0,25.0\n"
        "1200,10,gpu1,0.5,25.0,20.0,45.0\n"
        "1300,20,gpu1,1.1,24.0,22.0,46.0\n"
        "1400,20,gpu1,1.1,0,21.0,21.0\n",
    )
    ours, theirs = m.totals["gpu1"]
    assert ours.label == "c.csv T_t + T_d + T_p" and ours.upload
    assert ours.total_s.tolist() == pytest.approx([45.5, 47.1])
    assert theirs.label == "t.csv (no upload)" and not theirs.upload
    assert m.totals["edge"][0].total_s.tolist() == [25.0]

    ready = RuntimeTruth("gpu1", 3.0, [20.0], 30.0, 2.0, 55.0)
    assert gof_total(ready, upload=True) == 55.0
    assert gof_total(ready, upload=False) == 52.0
    timed_out = RuntimeTruth("gpu1", 3.0, [None], 30.0, 2.0, 640.0)
    assert gof_total(timed_out, upload=False) == 640.0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "epoch,image_num,runtime,act_transfer,act_proc\n1,10,edge,0,25\n",
            ":1: missing column act_deploy (needs image_num, runtime, act_transfer, act_deploy, "
            "act_proc)",
        ),
        (
            "image_num,runtime,act_transfer,act_deploy,act_proc\n10,edge,0,0,25\n10,cpu,0.5,-3.5,30\n",
            ":3, column 'act_deploy': negative duration: -3.5",
        ),
        (
            "image_num,runtime,act_transfer,act_deploy,act_proc\n10,edge,0,0,abc\n",
            ":2, column 'act_proc': not a number: 'abc'",
        ),
        ("", ":1: empty file"),
    ],
    ids=["missing-column", "negative-duration", "not-a-number", "empty"],
)
def test_a_bad_csv_is_one_line_naming_the_problem(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    code, _, err = _main(monkeypatch, capsys, "--csv", str(csv), "--out", str(tmp_path / "o.yaml"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"stoic: error: {csv}")
    assert expected in lines[0]
    assert not (tmp_path / "o.yaml").exists()


def test_bad_store_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.yaml")
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    code, _, err = _main(monkeypatch, capsys, "--store", missing, "--out", out)
    assert (code, err.strip()) == (2, f"stoic: error: --store {missing}: no database file there")
    assert not (tmp_path / "nope.db").exists()

    url = f"sqlite:///{tmp_path / 'stoic.db'}"
    migrate(url)
    with Store(url) as s:
        s.add_samples([DeploymentSample("gpu1", 1_000.0, 30.0)])
    code, _, err = _main(
        monkeypatch, capsys, "--store", url, "--since", "2020-01-01T00:00:00Z", "--out", out
    )
    assert code == 2
    assert err.strip() == (
        f"stoic: error: --store {url}: no deployment, processing or transfer samples "
        "between 1577836800 and the end (Unix seconds)"
    )
    code, _, err = _main(monkeypatch, capsys, "--out", out)
    assert (code, err.strip()) == (
        2,
        "stoic: error: stoic env fit: give exactly one of --csv FILE and --store DATABASE_URL",
    )


def test_an_empty_store_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stoic.db'}"
    migrate(url)
    r = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "env", "fit", "--store", url, "--out",
         str(tmp_path / "o.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"stoic: error: --store {url}: no deployment, processing or transfer samples"
    )


def test_the_docs_carry_the_rule_for_keeping_a_prior() -> None:
    """docs/envfit.md has the generated table of minimum samples: keep it in step."""
    assert min_samples_markdown() in (REPO / "docs" / "envfit.md").read_text()


def test_a_runtime_too_thin_to_fit_without_a_prior_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "image_num,runtime,act_transfer,act_deploy,act_proc\n"
        "10,tpu,0.5,20.0,30.0\n20,tpu,0.9,22.0,31.0\n"
    )
    code, _, err = _main(monkeypatch, capsys, "--csv", str(csv), "--out", str(tmp_path / "o.yaml"))
    assert code == 2
    assert err.strip() == (
        "stoic: error: runtime tpu: 2 processing runs over too few batch sizes to fit its T_p "
        "line, and no prior to keep (--prior)"
    )
