"""No test module imports another: what tests share lives in ``tests/support`` (issue 21).

A helper imported from a test module drags that module's fixtures and imports along, and
a change to one test file then breaks another. The check reads the sources (``ast``), so
an import inside a function or a relative one counts too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.paths import REPO

TESTS = REPO / "tests"
TEST_MODULE = re.compile(r"tests\.(test_\w+|conftest)(\..+)?")


def imported_test_modules(source: str) -> list[str]:
    """The test modules (``tests.test_*``, ``tests.conftest``) that ``source``, a module
    of the ``tests`` package, imports, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:
            package = "tests" if node.level == 1 else ""
            module = ".".join(part for part in (package, node.module) if part)
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [name for name in names if TEST_MODULE.fullmatch(name)]
    return sorted({".".join(name.split(".")[:2]) for name in found})


def test_no_test_module_imports_another() -> None:
    found = {
        str(path.relative_to(REPO)): modules
        for path in sorted(TESTS.rglob("*.py"))
        if (modules := imported_test_modules(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("from tests.test_api import jpeg", "tests.test_api"),
        ("import tests.test_api", "tests.test_api"),
        ("from tests import test_api", "tests.test_api"),
        ("from .test_api import jpeg", "tests.test_api"),
        ("from . import test_api", "tests.test_api"),
        ("from .conftest import REPO", "tests.conftest"),
        ("def helper():\n    from tests.test_e2e import wait_for\n", "tests.test_e2e"),
    ],
)
def test_the_check_finds_each_way_to_import_a_test_module(source: str, imported: str) -> None:
    assert imported_test_modules(source) == [imported]


@pytest.mark.parametrize(
    "source",
    [
        "from tests.support.images import jpeg",
        "import tests.support.net",
        "from .support import paths",
        "from stoic.schedule import test_helpers",
        "from ..test_api import jpeg",
    ],
)
def test_the_check_lets_support_and_other_packages_through(source: str) -> None:
    assert imported_test_modules(source) == []


@pytest.mark.parametrize("path", sorted((TESTS / "support").glob("*.py")), ids=lambda p: p.name)
def test_each_support_module_says_what_it_is_for(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text()))
