"""Where things are: the tests run from any working directory."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
STAND_IN = REPO / "tests" / "standin_function.py"
