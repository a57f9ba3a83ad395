"""The environment family in workload/envs/: every spec loads, says what it represents
and why its numbers are plausible, and replays."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stoic.backends.simulated import EnvSpec
from stoic.replay.runner import DEFAULT_ENV, ReplayConfig, run_replay
from stoic.replay.scoring import score
from stoic.settings import Settings
from tests.support.paths import REPO

ENVS = REPO / "workload" / "envs"
FILES = sorted(ENVS.glob("*.yaml"))


def test_family_has_nautilus_and_six_more() -> None:
    names = [f.stem for f in FILES]
    assert "nautilus-2020" in names and len(names) >= 7
    # the old path and the family's entry are the same spec
    assert (ENVS / "nautilus-2020.yaml").resolve() == DEFAULT_ENV.resolve()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_spec_is_documented_and_replays(path: Path) -> None:
    logging.getLogger("stoic").setLevel(logging.ERROR)
    text = path.read_text()
    spec = EnvSpec.load(path)
    spec.check_runtimes(Settings().runtime_list())
    assert spec.name == path.stem
    header = text.split("\nname:")[0]
    if "Made by `stoic env fit`" in header:
        # A fitted spec tells where its numbers come from instead of a story.
        for words in ("# Command: stoic env fit ", "# Source:", "# Period:", "# Samples:"):
            assert words in header, f"{path.name}: header lacks {words!r}"
    elif path.stem != "nautilus-2020":
        for words in ("What it represents", "What it stresses", "Why the numbers are plausible"):
            assert words in header, f"{path.name}: header lacks {words!r}"
    r = run_replay(ReplayConfig(env_path=path, mode="selector", batches=4, warmup_periods=5))
    assert score(r)["summary"]["batches"] == 4
