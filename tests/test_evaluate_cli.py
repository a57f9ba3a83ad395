"""``stoic evaluate deployment``: figures on a known series, and malformed CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stoic.cli import app
from stoic.errors import CsvFormatError
from stoic.predict.csvseries import read_deployment_csv
from tests.support.csvfiles import assert_refused
from tests.support.processes import cli_error_line

runner = CliRunner()


def _spiky(path: Path) -> Path:
    rows = ["epoch,cpu,gpu1"]
    for i in range(120):
        gpu1 = "400" if i % 29 == 7 else "20"
        cpu = "" if i == 50 else str(10 + (i % 3))
        rows.append(f"{1000 + i},{cpu},{gpu1}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_json_figures(tmp_path: Path):
    result = runner.invoke(
        app,
        ["evaluate", "deployment", str(_spiky(tmp_path / "d.csv")), "--max-window", "20", "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["samples"] == {"cpu": 119, "gpu1": 120}
    gpu1 = doc["runtimes"]["gpu1"]
    assert len(gpu1["median"]["mae_s"]) == 20
    assert gpu1["median"]["min_mae_s"] < gpu1["mean"]["min_mae_s"]
    assert gpu1["median"]["optimal_window"] >= 3


def test_table_and_plot(tmp_path: Path):
    png = tmp_path / "out" / "mae.png"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "deployment",
            str(_spiky(tmp_path / "d.csv")),
            "--max-window",
            "10",
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Med. SW" in result.output and "gpu1" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("", 1, None, "empty file"),
        ("10,20\n30,40\n", 1, None, "missing header"),
        ("epoch\n1\n2\n", 1, None, "no runtime columns"),
        ("epoch,cpu\n1,10\n2,abc\n", 3, "cpu", "not a number"),
        ("epoch,cpu,gpu1\n1,10,3\n2,11\n", 3, "gpu1", "expected 3 cells"),
        ("epoch,cpu\n1,10\n2,-1\n", 3, "cpu", "negative"),
        ("epoch,cpu,cpu\n1,1,1\n", 1, "cpu", "duplicate"),
        ("epoch,cpu\n1,10\n", 1, "cpu", "at least 2 values"),
    ],
)
def test_malformed_csv(tmp_path: Path, text, line, column, problem):
    p = tmp_path / "bad.csv"
    assert_refused(read_deployment_csv, p, text, line, column, problem)
    result = runner.invoke(app, ["evaluate", "deployment", str(p)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CsvFormatError)


def test_main_exits_2_with_one_line_and_no_traceback(tmp_path: Path):
    p = tmp_path / "bad.csv"
    p.write_text("epoch,cpu\n1,10\n2,abc\n")
    line = cli_error_line("evaluate", "deployment", str(p))
    assert f"{p}:3, column 'cpu': not a number" in line
