"""docs/evaluation/real_vs_paper.py: the two calibrations side by side, on 1 seed × 1 day.

The script reads the real runs from ``../shared/data/nautilus-2020-real/`` (never copied
into the project), so the test skips where they are absent.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest

from tests.support.paths import REPO, SHARED
from tests.support.scripts import load_script

DATA = SHARED / "data" / "nautilus-2020-real"
SCRIPT = REPO / "docs" / "evaluation" / "real_vs_paper.py"

pytestmark = pytest.mark.skipif(
    not (DATA / "totals.csv").exists() or not (DATA / "components.csv").exists(),
    reason=f"{DATA} (the shared real data) is not here",
)


@pytest.fixture(scope="module")
def run() -> tuple[ModuleType, dict[str, Any]]:
    rvp = load_script(SCRIPT)
    return rvp, rvp.compare(1, 1, modes=("selector", "share"), data=DATA)


def _share_tables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    real = doc["real"]
    tables = [real["totals.csv"]["best"], real["components.csv"]["best"]]
    tables += [real["components.csv"]["best_of_totals_runtimes"]]
    for s in doc["specs"].values():
        tables += list(s["best"].values())
    return tables


def test_the_real_files_are_read_as_all_runtime_batches(run) -> None:
    _, doc = run
    real = doc["real"]
    # 103 rows of totals.csv: 34 batches on edge, cpu and gpu1 (one of them with two
    # edge rows); 60 rows of components.csv: 12 batches on all four runtimes.
    assert real["totals.csv"]["batches"] == 34
    assert real["components.csv"]["batches"] == 12
    assert real["totals.csv"]["best"]["all"]["batches"] == 34
    assert sorted(real["components.csv"]["sizes"])[:3] == [8, 11, 12]


def test_both_specs_are_reported_in_every_comparison(run) -> None:
    rvp, doc = run
    assert list(doc["specs"]) == ["nautilus-2020", "nautilus-2020-real"]
    for s in doc["specs"].values():
        assert set(s["table4"]) == {"selector", "share"}
        for mode in s["table4"].values():
            assert math.isfinite(mode["vs_min_lat_pct"]) and mode["vs_min_lat_pct"] > 0
        assert s["best"]["at_totals_sizes"]["all"]["batches"] == 34 * rvp.DRAWS
        assert s["best"]["at_components_sizes"]["all"]["batches"] == 12 * rvp.DRAWS
        assert s["best"]["workload"]["all"]["batches"] == 162
        components = {r["component"] for r in s["ks"]}
        assert components == {"T_s", "T_d"}
        assert {r["runtime"] for r in s["ks"] if r["component"] == "T_s"} == {
            "edge", "cpu", "gpu1", "gpu2"
        }  # fmt: skip
    text = rvp.markdown(doc)
    for heading in ("Table 4", "Hindsight best runtime", "Kolmogorov", "Share's headroom"):
        assert heading in text


def test_shares_sum_to_one_and_only_name_the_compared_runtimes(run) -> None:
    _, doc = run
    for table in _share_tables(doc):
        for bucket in table.values():
            assert sum(bucket["shares"].values()) == pytest.approx(1.0)
            assert bucket["batches"] > 0
    for table in (
        doc["real"]["totals.csv"]["best"],
        doc["specs"]["nautilus-2020"]["best"]["workload"],
    ):
        assert set(table["all"]["shares"]) == {"edge", "cpu", "gpu1"}  # totals.csv has no gpu2


def test_ks_distances_and_p_values_are_probabilities(run) -> None:
    _, doc = run
    for s in doc["specs"].values():
        for row in s["ks"]:
            assert 0.0 <= row["ks"] <= 1.0
            assert 0.0 <= row["p_value"] <= 1.0


def test_the_fluid_bound_lies_below_min_lat(run) -> None:
    """The fluid bound holds for every schedule, single-runtime ones included, so its sum
    can never exceed MIN-LAT: on the specs' workloads, their audits at the real sizes,
    and the real batches."""
    _, doc = run
    assert doc["real"]["components.csv"]["headroom"]["fluid_pct"] <= 100.0
    for s in doc["specs"].values():
        h = s["headroom"]
        assert 0.0 < h["fluid_pct"] <= 100.0
        assert h["below_min_lat"] == pytest.approx(100.0 - h["fluid_pct"])
        assert h["below_selector"] == pytest.approx(h["selector"] - h["fluid_pct"])
        assert s["headroom_at_components_sizes"]["fluid_pct"] <= 100.0
