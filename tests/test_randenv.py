"""Random environments: any seed gives a valid spec that replays; the CLI writes it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stoic.backends.simulated import EnvSpec
from stoic.replay.randenv import RANGES, random_spec, random_yaml, ranges_markdown
from stoic.replay.runner import ReplayConfig, run_replay
from stoic.replay.scoring import score
from stoic.settings import Settings
from tests.support.paths import REPO


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_seed_gives_a_valid_spec(seed: int) -> None:
    raw = random_spec(seed)
    spec = EnvSpec.parse(raw)
    spec.check_runtimes(Settings().runtime_list())
    up = spec.uplink
    assert (
        RANGES["uplink.bandwidth_mbps"].lo
        <= up.bandwidth_mbps
        <= RANGES["uplink.bandwidth_mbps"].hi * 1.001
    )
    for o in up.outages:
        assert o.every_h is not None and o.duration_h <= o.every_h / 10 * 1.001
    for name in ("cpu", "gpu1", "gpu2"):
        d = spec.runtimes[name].deployment
        assert d is not None and d.floor_s <= d.median_s <= 480
        assert all(r.median_s <= 480 for r in d.regimes)
    # the YAML text parses back to the same spec
    assert EnvSpec.parse(yaml.safe_load(random_yaml(seed))) == spec


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10**6))
def test_any_seed_replays(tmp_path_factory, seed: int) -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)
    f = tmp_path_factory.mktemp("env") / "env.yaml"
    f.write_text(random_yaml(seed))
    for mode in ("selector", "duplicator-gpu2"):
        r = run_replay(ReplayConfig(env_path=f, mode=mode, batches=4, warmup_periods=5, seed=seed))
        s = score(r)["summary"]
        assert s["batches"] == 4 and s["vs_min_lat"] is not None and s["vs_min_lat"] > 0.5


def test_deterministic_and_distinct() -> None:
    assert random_yaml(11) == random_yaml(11)
    assert random_spec(11) != random_spec(12)
    assert random_spec(11)["name"] == "random-011"


def test_cli_random(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "r.yaml"
    cmd = [sys.executable, "-m", "stoic.cli", "env", "random", "--seed", "5"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.startswith("# Random environment 5: drawn by `stoic env random --seed 5`")
    assert "uplink.bandwidth_mbps" in text.split("\nname:")[0]  # the ranges in the header
    EnvSpec.load(out)
    r2 = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert r2.stdout == text
    bad = subprocess.run([*cmd[:-1], "-3"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2


def test_cli_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(random_yaml(1))
    bad = tmp_path / "bad.yaml"
    bad.write_text(random_yaml(2).replace("bytes_per_image", "bytes_per_img"))
    cmd = [sys.executable, "-m", "stoic.cli", "env", "check"]
    r = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "ok" in r.stdout
    r = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "uplink.bytes_per_img: unknown key" in r.stderr


def test_docs_list_every_range() -> None:
    """docs/replay.md carries the generated table: keep it in step with the code."""
    docs = (REPO / "docs" / "replay.md").read_text()
    assert ranges_markdown() in docs
