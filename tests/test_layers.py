"""The layer order is enforced, not just drawn: import-linter's contracts in
pyproject.toml hold for the package, and an upward import makes them fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stoic
import stoic.errors as errors

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(
        Path(stoic.__file__).parent,
        tmp_path / "stoic",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


@pytest.mark.slow
def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    result = lint(copy_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 kept, 0 broken" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "upward", "contract"),
    [
        # the scheduling core reaching up into the daemon: the arrow issue 9 removed
        ("schedule/decide/policy.py", "import stoic.daemon.metrics", "Layers"),
        # a part (the predictor) reaching up into the scheduling core
        ("predict/transfer.py", "import stoic.schedule.decide.policy", "Layers"),
        # the core importing a web framework
        ("schedule/execute/legs.py", "import fastapi", "know no web framework"),
        # deciding reaching into execution: policies stay pure functions
        ("schedule/decide/policy.py", "import stoic.schedule.execute.legs", "Deciding knows"),
        # share's board learning of asyncio
        ("schedule/share/board.py", "import asyncio", "Share's board"),
        # share's forecast reaching for the asyncio session it serves
        ("schedule/share/forecast.py", "import stoic.schedule.share.session", "Share's board"),
        # the inquisitor reaching for the requester rather than the legs
        ("schedule/probe/inquisitor.py", "import stoic.schedule.execute.requester", "Probing uses"),
        # the replay reaching for SciPy, which only the fit extra brings
        ("backends/simulated.py", "import scipy.special", "imports SciPy"),
    ],
)
def test_an_upward_import_breaks_the_build(
    tmp_path: Path, module: str, upward: str, contract: str
) -> None:
    tree = copy_package(tmp_path)
    target = tree / "stoic" / module
    target.write_text(target.read_text() + f"\n{upward}  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert "Broken contracts" in result.stdout and contract in broken


def test_the_error_tree_in_the_docstring_is_the_class_tree() -> None:
    """stoic/errors.py documents its hierarchy as a drawing; it must match the code."""
    lines = (errors.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "StoicError")
    indent = len(lines[start]) - len(lines[start].lstrip())
    drawn: dict[str, str] = {}
    parents: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        body = line[indent:]
        name = re.match(r"\w+", body.lstrip(" │├└─"))
        assert name is not None, line
        level = (len(body) - len(body.lstrip(" │├└─"))) // 4
        parents[level:] = [name.group(0)]
        if level:
            drawn[name.group(0)] = parents[level - 1]
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.StoicError)
    }
    assert set(drawn) | {"StoicError"} == set(classes)
    for name, parent in drawn.items():
        assert classes[parent] in classes[name].__bases__, f"{name} is not drawn under its base"


def test_every_module_docs_architecture_names_exists() -> None:
    """docs/architecture.md is the map of the code: each ``*.py`` it names is a file of
    the repository (named from the root, from ``stoic/``, or within its package's row),
    and each dotted ``stoic.*`` name is a module or an attribute of one."""
    import importlib
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "architecture.md").read_text()
    files = [
        str(p.relative_to(root)) for d in ("stoic", "tests") for p in root.glob(f"{d}/**/*.py")
    ]
    named = set(re.findall(r"(?<![\w./])((?:[a-z_]+/)*[a-z_]+\.py)\b", doc))
    assert "execute/legs.py" in named and "stoic/schedule/assembly.py" in named
    missing = sorted(n for n in named if not any(f == n or f.endswith("/" + n) for f in files))
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"
    # (a path such as ./stoic.toml is a file name, not a module)
    for dotted in sorted(set(re.findall(r"(?<![/\w])stoic(?:\.[a-z_]+)+\b", doc))):
        module, _, attr = dotted.rpartition(".")
        parent = importlib.import_module(module)
        if not hasattr(parent, "__path__") or importlib.util.find_spec(dotted) is None:
            assert hasattr(parent, attr), dotted
