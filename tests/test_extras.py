"""Optional extras: a missing one is one line naming it, wherever it is needed.

This environment has every extra installed (``make venv`` installs ``.[all,dev]``), so
"missing" is simulated by hiding modules from :func:`importlib.util.find_spec` and the
import system; tests/test_base_install.py checks the real thing in a base-only venv.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stoic import extras
from stoic.daemon.controller import check_extras
from stoic.errors import ConfigError, MissingExtra
from stoic.settings import Settings
from tests.support.paths import REPO
from tests.support.processes import daemon_env

# A fresh interpreter in which SciPy cannot be imported, as in the base install: a
# meta path finder ahead of the others refuses it (the base venv itself is
# tests/test_base_install.py's, slower to build).
WITHOUT_SCIPY = """
import importlib.abc, sys
class NoScipy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "scipy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoScipy())
"""


def without_scipy(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SCIPY + code],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=daemon_env(),
    )


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Modules (top-level names) added to the returned set look uninstalled."""
    hidden: set[str] = set()
    real_find_spec = importlib.util.find_spec
    real_import = builtins.__import__

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] in hidden else real_find_spec(name, *args, **kwargs)

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    yield hidden


def test_every_extra_is_declared_and_all_has_them() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    assert set(extras.EXTRAS) <= set(optional)
    assert optional["all"] == [f"stoic[{','.join(extras.EXTRAS)}]"]
    base = " ".join(project["dependencies"]).lower()
    heavy_ones = (
        "tensorflow",
        "statsmodels",
        "matplotlib",
        "boto3",
        "kubernetes",
        "psycopg",
        "scipy",
        "numba",
    )
    for heavy in heavy_ones:
        assert heavy not in base, f"{heavy} is in the base install"
    assert "looptime" in base  # the replay is part of the base install


def test_require_and_needs(hide: set[str]) -> None:
    extras.require("analysis", "the AutoReg analysis")  # installed here: no error
    assert extras.installed("function")
    hide.add("statsmodels")
    assert not extras.installed("analysis") and extras.installed("analysis", "matplotlib")
    with pytest.raises(MissingExtra) as info:
        extras.require("analysis", "the AutoReg analysis", "statsmodels")
    assert str(info.value) == (
        "the AutoReg analysis needs the 'analysis' extra (no module 'statsmodels'): "
        "pip install 'stoic[analysis]'"
    )
    assert isinstance(info.value, ConfigError) and info.value.extra == "analysis"
    with pytest.raises(MissingExtra, match=r"stoic\[analysis\]"), extras.needs("analysis", "x"):
        import statsmodels.api  # noqa: F401
    # Another module's absence is not the extra's: it passes through.
    with pytest.raises(ModuleNotFoundError), extras.needs("analysis", "x"):
        import stoic_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    with pytest.raises(ValueError, match="unknown extra"):
        extras.require("gpu", "x")


@pytest.mark.parametrize(
    ("settings", "module", "extra", "named"),
    [
        ({}, "tensorflow", "function", "runtimes ['edge', 'cpu', 'gpu1', 'gpu2']"),
        (
            {"runtimes": [{"name": "cpu", "kind": "cpu", "backend": "kubernetes"}]},
            "kubernetes",
            "kubernetes",
            "backend 'kubernetes'",
        ),
        (
            {"runtimes": [{"name": "cpu", "kind": "cpu", "backend": "kubernetes"}]},
            "boto3",
            "s3",
            "S3 store kubernetes.store",
        ),
        ({"objectstore": {"kind": "s3"}}, "boto3", "s3", "objectstore.kind = 's3'"),
        (
            {"database": {"url": "postgresql+psycopg://u@localhost/stoic"}},
            "psycopg",
            "postgres",
            "database.url",
        ),
        ({"predictor": {"deployment_method": "autoreg"}}, "statsmodels", "analysis", "autoreg"),
    ],
)
def test_settings_that_need_an_extra(
    hide: set[str], settings: dict[str, Any], module: str, extra: str, named: str
) -> None:
    s = Settings(**settings)
    check_extras(s)  # everything is installed here
    hide.add(module)
    with pytest.raises(MissingExtra) as info:
        check_extras(s)
    assert info.value.extra == extra and named in str(info.value)
    assert f"pip install 'stoic[{extra}]'" in str(info.value)


def test_local_runtimes_with_their_own_command_need_no_tensorflow(hide: set[str]) -> None:
    hide.add("tensorflow")
    check_extras(Settings(local={"command": ["python", "standin.py"]}))


def test_cli_commands_name_the_extra(hide: set[str], tmp_path: Path) -> None:
    from stoic.cli import app

    hide.add("tensorflow")
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    for args in (["model", "init"], ["model", "push", str(model), "--version", "2"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, MissingExtra), result.output
        assert f"stoic {' '.join(args[:2])} needs the 'function' extra" in str(result.exception)
    hide.add("statsmodels")
    sample = REPO / "benchmarks" / "data" / "deployment_sample.csv"
    evaluate = ["evaluate", "deployment", str(sample)]
    explicit = CliRunner().invoke(app, [*evaluate, "--method", "autoreg"])
    assert isinstance(explicit.exception, MissingExtra)
    assert "--method autoreg needs the 'analysis' extra" in str(explicit.exception)
    default = CliRunner().invoke(app, [*evaluate, "--json"])
    assert default.exit_code == 0, default.output
    assert "AutoReg left out" in default.output
    hide.add("scipy")
    fit = CliRunner().invoke(app, ["env", "fit", "--csv", str(sample), "--out", "x.yaml"])
    assert isinstance(fit.exception, MissingExtra), fit.output
    assert str(fit.exception) == (
        "stoic env fit needs the 'fit' extra (no module 'scipy'): pip install 'stoic[fit]'"
    )


@pytest.mark.slow
def test_only_the_fitting_modules_need_scipy(tmp_path: Path) -> None:
    """Every module imports without SciPy but stoic env fit's own (stoic.envfit, less
    the command that says which extra it needs), and the replay runs."""
    walk = without_scipy(
        "import importlib, json, pkgutil, stoic\n"
        "failed = {}\n"
        "for m in pkgutil.walk_packages(stoic.__path__, 'stoic.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        failed[m.name] = e.name\n"
        "print(json.dumps(failed))\n",
        tmp_path,
    )
    assert walk.returncode == 0, walk.stderr
    failed = json.loads(walk.stdout)
    assert failed and set(failed.values()) == {"scipy"}
    assert all(m.startswith("stoic.envfit.") and m != "stoic.envfit.cli" for m in failed)
    replay = without_scipy(
        "from stoic.cli import main\n"
        "sys.argv = ['stoic', 'replay', '--batches', '20', '--report', 'r', '--no-progress']\n"
        "main()\n",
        tmp_path,
    )
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith("20 batches: success"), replay.stdout
    assert (tmp_path / "r" / "report.json").is_file()


def test_env_fit_without_scipy_is_one_line(tmp_path: Path) -> None:
    sample = REPO / "benchmarks" / "data" / "deployment_sample.csv"
    out = without_scipy(
        "from stoic.cli import main\n"
        f"sys.argv = ['stoic', 'env', 'fit', '--csv', {str(sample)!r}, '--out', 'x.yaml']\n"
        "main()\n",
        tmp_path,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip().splitlines() == [
        "stoic: error: stoic env fit needs the 'fit' extra (no module 'scipy'): "
        "pip install 'stoic[fit]'"
    ]
    assert not (tmp_path / "x.yaml").exists()
