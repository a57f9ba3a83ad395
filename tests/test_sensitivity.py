"""The sensitivity study (stoic.replay.sensitivity): one variant spec per environment and
scenario, each changing only what its scenario names, and the pivoted tables."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from stoic.backends.simulated import EnvSpec
from stoic.replay.runner import DEFAULT_ENV
from stoic.replay.sensitivity import (
    BASE,
    SCENARIOS,
    run_sensitivity,
    sensitivity_table,
    write_variants,
)
from tests.support.paths import REPO

LEO = REPO / "workload" / "envs" / "leo-satellite.yaml"


def test_each_variant_changes_only_its_scenario(tmp_path: Path) -> None:
    entries = write_variants([DEFAULT_ENV, LEO], tmp_path)
    assert [e.name for e in entries][: len(SCENARIOS)] == [
        f"{DEFAULT_ENV.stem}@{s}" for s in SCENARIOS
    ]
    spec = {e.name.split("@", 1)[1]: EnvSpec.load(e.path) for e in entries[len(SCENARIOS) :]}
    base = spec[BASE]
    assert base == EnvSpec.parse(yaml.safe_load(LEO.read_text()))
    gpu1 = {k: v.runtimes["gpu1"].processing for k, v in spec.items()}
    assert gpu1["overhead 0.5 s"].later_call_s == 0.5
    assert gpu1["overhead 2 s"].later_call_s == 2.0
    assert gpu1["model load per call"].later_call_s == gpu1[BASE].fixed_s
    assert gpu1["fill"].chunk_fill_penalty > 0 == gpu1[BASE].chunk_fill_penalty
    assert spec["correlation 0.5"].cloud.correlation == 0.5
    assert spec["stall"].uplink.outage_model == "stall"
    for name, s in spec.items():  # nothing else moved
        assert s.uplink.outages == base.uplink.outages, name
        assert s.runtimes["gpu2"].deployment == base.runtimes["gpu2"].deployment, name


def test_a_small_study_tabulates_every_scenario(tmp_path: Path) -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)
    scenarios = {k: SCENARIOS[k] for k in (BASE, "overhead 2 s")}
    result = run_sensitivity(
        [DEFAULT_ENV],
        tmp_path,
        modes=("share",),
        days=1,
        batches=4,
        warmup_periods=5,
        scenarios=scenarios,
    )
    assert not result.failed and len(result.cells) == 2
    text = sensitivity_table(result)
    assert f"| environment | mode | {BASE} | overhead 2 s |" in text
    assert "| nautilus-2020 | share | " in text and "% of MIN-LAT" in text
