"""Workload generator: the default profile reproduces the paper's figures; the ECDF
sampler stays within the data and converges to it; bad count files name the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stoic.cli import app
from stoic.errors import WorkloadError
from stoic.replay.workload import SizeDistribution, WorkloadProfile, hourly, per_day, read_counts
from tests.support.paths import SHARED

COUNTS = SHARED / "data" / "wtb_hourly_nonzero_counts.txt"


def test_default_profile_matches_published_figures() -> None:
    p = WorkloadProfile.load()
    batches = hourly(p, 27_264 * 4, seed=7)
    sizes = np.array([b.images for b in batches])
    assert 1 - sizes.size / (27_264 * 4) == pytest.approx(0.6653, abs=0.01)
    assert sizes.mean() == pytest.approx(74.7, rel=0.05)
    assert sizes.sum() / (27_264 * 4) == pytest.approx(25.0, rel=0.05)
    assert sizes.min() >= 1 and sizes.max() <= 2450
    assert sizes.max() > 1500  # the heavy tail reaches towards the published 2450
    by_hour = np.bincount([b.hour for b in batches], minlength=24)
    peaks = sorted(np.argsort(by_hour)[-2:])
    assert set(peaks) == {13, 20}


def test_reproducible_and_seed_dependent() -> None:
    p = WorkloadProfile.load()
    assert hourly(p, 500, seed=1) == hourly(p, 500, seed=1)
    assert hourly(p, 500, seed=1) != hourly(p, 500, seed=2)


def test_per_day_spreads_162_batches_over_a_day() -> None:
    b = per_day(WorkloadProfile.load(), 162, seed=3)
    assert len(b) == 162
    assert all(0 <= x.at_s < 86_400 for x in b)
    assert [x.at_s for x in b] == sorted(x.at_s for x in b)


@pytest.mark.skipif(not COUNTS.exists(), reason="shared count file absent")
def test_count_file_ecdf() -> None:
    p = WorkloadProfile.load().with_counts(COUNTS)
    assert p.sizes.max == 2450 and p.sizes.min == 1
    assert p.sizes.mean == pytest.approx(74.75, abs=0.01)


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=60), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_ecdf_samples_within_data_range(counts: list[int], seed: int) -> None:
    d = SizeDistribution.from_counts(np.array(counts))
    s = d.sample(np.random.default_rng(seed), 200)
    assert s.min() >= min(counts) and s.max() <= max(counts)
    assert set(s.tolist()) <= set(counts)


@given(st.lists(st.integers(1, 300), min_size=2, max_size=40), st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_ecdf_of_samples_approaches_input(counts: list[int], seed: int) -> None:
    d = SizeDistribution.from_counts(np.array(counts))
    s = d.sample(np.random.default_rng(seed), 20_000)
    data = np.sort(np.array(counts))
    for v in np.unique(data):
        want = np.mean(data <= v)
        got = np.mean(s <= v)
        assert abs(got - want) < 0.03  # DKW: P(sup > 0.03) < 2e-7 at n = 20,000


@pytest.mark.parametrize(
    ("text", "line", "what"), [("1\n2\nx\n", 3, "not an integer"), ("4\n-1\n", 2, "negative")]
)
def test_bad_count_file_names_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    f = tmp_path / "c.txt"
    f.write_text(text)
    with pytest.raises(WorkloadError, match=rf"c.txt:{line}: {what}"):
        read_counts(f)


def test_cli_bad_count_file_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    f = tmp_path / "c.txt"
    f.write_text("3\n2.5\n")
    r = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "workload", "sample", "--counts", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "c.txt:2" in r.stderr


def test_cli_sample_csv(tmp_path: Path) -> None:
    out = tmp_path / "w.csv"
    r = CliRunner().invoke(app, ["workload", "sample", "--batches", "162", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0] == "index,time_s,hour,images,bytes" and len(lines) == 163
