"""docs/evaluation/budget/tables_all.py: the committed tables are what the committed
sweeps give, and a sweep that lacks a seed does not pass for a mean over all of them."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace

from stoic.replay.sweep_report import load_sweep
from tests.support.paths import REPO
from tests.support.scripts import load_script

ta = load_script(REPO / "docs" / "evaluation" / "budget" / "tables_all.py")


def _render(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ta.main(list(argv))
    return out.getvalue()


def test_the_committed_tables_are_current() -> None:
    made = _render() + "\n" + _render("--priced")
    assert made == (ta.ALL / "README.md").read_text()


def test_every_environment_has_a_budget_both_ways() -> None:
    for argv in ((), ("--priced",)):
        lines = _render("--budgets", *argv).splitlines()
        assert [line.split()[0] for line in lines] == list(ta.ENVS)
        assert all(line.split()[2] != "-" for line in lines)


def test_a_missing_seed_gives_no_mean() -> None:
    env = "deploy-cache-mixture"
    result = load_sweep(ta.ALL / env / "gpu1" / "sweep.json")
    assert ta.per(result, env, ta.REFERENCE, "pod_s") is not None
    short = replace(result, cells=[c for c in result.cells if c.cell.seed != 1])
    assert ta.per(short, env, ta.REFERENCE, "pod_s") is None
    assert ta.per(result, env, ta.REFERENCE, "pod_s_batches") is not None  # a detail
