"""Reading a whole data file (YAML, CSV) with a typed error that names the file.

Specs, profiles, meta files and measurement tables are all read the same way: the
file's text at once, then parsed, and every failure (a missing file, an unreadable
one, bad syntax) is an :class:`~stoic.errors.InputError` subclass whose message starts
with the path, so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from stoic.errors import CsvFormatError, InputError


def read_yaml(
    path: Path, error: type[InputError], what: str = "", syntax: str = "not valid YAML"
) -> Any:
    """The parsed document (``None`` when the file is empty); ``what`` names the kind of
    file in the message (``" profile"``), ``syntax`` what a parse error is called."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read{what}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: {syntax}: {exc}") from None


def csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every row that is not blank; a leading BOM is
    dropped (spreadsheets write one)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CsvFormatError(name, 0, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CsvFormatError(name, 0, None, f"cannot read: {exc}") from None
    rows = csv.reader(text.splitlines())
    return [(i + 1, row) for i, row in enumerate(rows) if any(c.strip() for c in row)]
