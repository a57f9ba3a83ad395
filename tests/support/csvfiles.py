"""A malformed CSV as the readers must refuse it: one :class:`~stoic.errors.CsvFormatError`
that names the line, the column (None for the whole file) and the problem, which is what
the command line shows the user in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stoic.errors import CsvFormatError


def assert_refused(
    read: Callable[[Path], object],
    path: Path,
    text: str,
    line: int,
    column: str | None,
    problem: str,
) -> None:
    """``read`` of a file at ``path`` holding ``text`` raises a :class:`CsvFormatError`
    at ``line`` and ``column`` whose problem says ``problem``."""
    path.write_text(text)
    with pytest.raises(CsvFormatError) as err:
        read(path)
    assert (err.value.line, err.value.column) == (line, column)
    assert problem in err.value.problem
