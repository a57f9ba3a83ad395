"""Results as CSV: one row per image, for a spreadsheet or R's ``read.csv``.

The columns are what a person sorting a season's images asks of each one: which file,
which camera placement, when the camera took it, what the model said and how sure it
was, where it ran, in which batch, with which model version. Capture times are the
camera's own ISO 8601 text; ``accepted_at`` is when the daemon took the batch (UTC).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence

from stoic.export.records import ImageRecord

COLUMNS = (
    "file",
    "deployment",
    "captured_at",
    "camera_make",
    "camera_model",
    "camera_serial",
    "label",
    "score",
    "runtime",
    "batch_id",
    "app",
    "model_version",
    "accepted_at",
    "error",
)


def _utc(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else ""


def csv_text(recs: Sequence[ImageRecord]) -> str:
    """The CSV of ``recs``: a header, then one row per image."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in recs:
        score = r.score
        w.writerow(
            (
                r.file,
                r.deployment or "",
                r.captured_at or "",
                r.camera_make or "",
                r.camera_model or "",
                r.camera_serial or "",
                r.label or "",
                "" if score is None else f"{score:.6g}",
                r.runtime or "",
                r.batch_id,
                r.app,
                r.app_version,
                _utc(r.accepted_at),
                r.error or "",
            )
        )
    return out.getvalue()
