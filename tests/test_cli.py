"""The command line as a user meets it: every command answers --help, fast (no TF)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stoic.cli import app

COMMANDS = [
    [],
    ["evaluate", "deployment"],
    ["replay"],
    ["replay", "sweep"],
    ["env", "random"],
    ["env", "check"],
    ["env", "fit"],
    ["workload", "sample"],
    ["model", "init"],
    ["model", "push"],
    ["model", "default"],
    ["serve"],
    ["submit"],
    ["status"],
    ["batch", "cancel"],
    ["batch", "retry"],
    ["drain"],
    ["runtime", "disable"],
    ["runtime", "enable"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "stoic")
def test_help(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from stoic.cli import app; "
        "heavy = ('tensorflow', 'fastapi', 'matplotlib', 'sklearn'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_config_is_one_line_and_exit_2(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[predictor]\nmax_window = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "stoic.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "predictor.max_window" in out.stderr
    assert "Traceback" not in out.stderr
