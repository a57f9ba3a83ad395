"""One image's result, flat and typed: what every export format is written from.

The daemon's results document (``GET /v1/batches/{id}/results``) nests images under a
batch; the formats ecologists use are per image (a CSV row, a Camtrap DP media row, a
MegaDetector ``images[]`` entry) and mix batches (``stoic export --since``). So each
format reads :class:`ImageRecord` values, and :func:`records` is the one place that
reads a results document. A document is the daemon's own output, but an export may be
run on an old or hand-edited one: a field of the wrong type is an
:class:`~stoic.errors.InputError` naming the batch and the image, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stoic.errors import InputError


@dataclass(frozen=True, slots=True)
class Detection:
    """A box a detector application reported: ``bbox`` is MegaDetector's
    ``[x_min, y_min, width, height]``, relative to the image (0-1)."""

    label: str
    conf: float
    bbox: tuple[float, float, float, float]
    classifications: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of one batch. Instants (``accepted_at``, ``classified_at``) are seconds
    since the Unix epoch; ``captured_at`` is the camera's own ISO 8601 time (with its
    UTC offset when the camera wrote one). ``scores`` are the classifier's, per label;
    ``detections`` only a detector application fills."""

    file: str
    batch_id: str
    app: str
    app_version: str
    runtime: str | None
    accepted_at: float | None
    classified_at: float | None
    deployment: str | None
    captured_at: str | None
    camera_make: str | None
    camera_model: str | None
    camera_serial: str | None
    label: str | None
    scores: tuple[tuple[str, float], ...]
    error: str | None
    detections: tuple[Detection, ...] = ()

    @property
    def score(self) -> float | None:
        """The score of the label given (None for an image that failed)."""
        return dict(self.scores).get(self.label) if self.label is not None else None

    @property
    def classifier(self) -> str:
        """The model's name and version, as ``app version``."""
        return f"{self.app} {self.app_version}"


def _str(value: Any, what: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{where}: {what} is {type(value).__name__}, not a string")


def _num(value: Any, what: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise InputError(f"{where}: {what} is {value!r}, not a finite number")


def _scores(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: scores must map labels to numbers")
    out = []
    for label, score in value.items():
        number = _num(score, f"the score of {label!r}", where)
        out.append((str(label), number if number is not None else 0.0))
    return tuple(out)


def _detection(value: Any, where: str) -> Detection:
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: a detection must be an object")
    bbox = value.get("bbox")
    if not isinstance(bbox, Sequence) or len(bbox) != 4:
        raise InputError(f"{where}: a detection's bbox must be [x, y, width, height]")
    x, y, w, h = (_num(v, "a bbox value", where) or 0.0 for v in bbox)
    label = _str(value.get("label"), "a detection's label", where)
    if not label:
        raise InputError(f"{where}: a detection has no label")
    return Detection(
        label=label,
        conf=_num(value.get("conf"), "a detection's conf", where) or 0.0,
        bbox=(x, y, w, h),
        classifications=_scores(value.get("classifications"), where),
    )


def records(document: Mapping[str, Any]) -> list[ImageRecord]:
    """The images of one results document (``GET /v1/batches/{id}/results``)."""
    batch_id = str(document.get("batch_id", ""))
    results = document.get("results")
    if not batch_id or not isinstance(results, list):
        raise InputError("not a results document: it needs batch_id and results[]")
    out = []
    for i, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise InputError(f"batch {batch_id}, result {i}: not an object")
        name = _str(r.get("name"), "name", f"batch {batch_id}, result {i}")
        if not name:
            raise InputError(f"batch {batch_id}, result {i}: no name")
        where = f"batch {batch_id}, {name}"
        detections = r.get("detections") or []
        if not isinstance(detections, list):
            raise InputError(f"{where}: detections must be a list")
        out.append(
            ImageRecord(
                file=name,
                batch_id=batch_id,
                app=str(document.get("app") or ""),
                app_version=str(document.get("app_version") or ""),
                runtime=_str(document.get("runtime"), "runtime", where),
                accepted_at=_num(document.get("created_at"), "created_at", where),
                classified_at=_num(document.get("finished_at"), "finished_at", where),
                deployment=_str(r.get("deployment"), "deployment", where),
                captured_at=_str(r.get("captured_at"), "captured_at", where),
                camera_make=_str(r.get("camera_make"), "camera_make", where),
                camera_model=_str(r.get("camera_model"), "camera_model", where),
                camera_serial=_str(r.get("camera_serial"), "camera_serial", where),
                label=_str(r.get("label"), "label", where),
                scores=_scores(r.get("scores"), where),
                error=_str(r.get("error"), "error", where),
                detections=tuple(_detection(d, where) for d in detections),
            )
        )
    return out
