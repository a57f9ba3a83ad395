"""Results as a MegaDetector batch output file (format 1.6), the file Timelapse,
AddaxAI and camtrapR read.

The format (https://lila.science/megadetector-output-format, MegaDetector's
``megadetector-output-format.md``) is made for a detector followed by a classifier:
``images[]`` hold ``detections`` (a category, a confidence and a box), and
classifications belong to a detection. A whole-image classifier, stoic's default
application, has no boxes, so each labelled image is reported as the format allows
for it: one detection whose box is the whole frame (``[0, 0, 1, 1]``), in the
category its label means (animal, person or vehicle: :mod:`stoic.export.labels`),
with the classifier's confidence in the label as ``conf`` and every label's score as
its ``classifications`` (highest first; a label given without scores counts as
certain). A label that means an empty frame gives no detection (the format's
"processed, nothing found"), an image that failed its ``failure`` and null
detections. A detector application's own boxes are reported as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from stoic import __version__
from stoic.export.labels import Kind, LabelMap
from stoic.export.records import ImageRecord

FORMAT_VERSION = "1.6"

DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
"""MegaDetector's own categories, which downstream tools take a dependency on."""

_CATEGORY = {
    Kind.ANIMAL: "1",
    Kind.UNKNOWN: "1",
    Kind.UNCLASSIFIED: "1",
    Kind.HUMAN: "2",
    Kind.VEHICLE: "3",
}

FULL_FRAME = (0.0, 0.0, 1.0, 1.0)


def _conf(value: float) -> float:
    return round(min(max(float(value), 0.0), 1.0), 6)


def _classifications(scores: Sequence[tuple[str, float]], ids: dict[str, str]) -> list[list[Any]]:
    ranked = sorted(scores, key=lambda s: (-s[1], s[0]))
    return [[ids[label], _conf(score)] for label, score in ranked]


def _detections(r: ImageRecord, labels: LabelMap, ids: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    if r.detections:
        for d in r.detections:
            kind = labels.of(d.label).kind
            if kind is Kind.BLANK:
                continue
            det: dict[str, Any] = {
                "category": _CATEGORY[kind],
                "conf": _conf(d.conf),
                "bbox": [round(v, 6) for v in d.bbox],
            }
            if d.classifications:
                det["classifications"] = _classifications(d.classifications, ids)
            out.append(det)
        return out
    if r.label is None or labels.of(r.label).kind is Kind.BLANK:
        return out
    # A label given without scores is the application's only word: taken as certain.
    score = r.score if r.score is not None else 1.0
    return [
        {
            "category": _CATEGORY[labels.of(r.label).kind],
            "conf": _conf(score),
            "bbox": list(FULL_FRAME),
            "classifications": _classifications(r.scores or [(r.label, score)], ids),
        }
    ]


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def megadetector_document(
    recs: Sequence[ImageRecord], labels: LabelMap | None = None
) -> dict[str, Any]:
    """The batch output document of ``recs`` (``file`` is the name each image was sent
    under: relative to the folder it was sent from)."""
    labels = labels or LabelMap()
    names = sorted(
        {label for r in recs for label, _ in r.scores}
        | {r.label for r in recs if r.label is not None and r.error is None}
        | {label for r in recs for d in r.detections for label, _ in d.classifications}
    )
    ids = {name: str(i) for i, name in enumerate(names)}
    images: list[dict[str, Any]] = []
    for r in recs:
        if r.error is not None:
            images.append({"file": r.file, "failure": r.error, "detections": None})
        else:
            images.append({"file": r.file, "detections": _detections(r, labels, ids)})
    classifiers = sorted({r.classifier for r in recs})
    finished = [r.classified_at for r in recs if r.classified_at is not None]
    info: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "classifier": "; ".join(classifiers) if classifiers else "stoic",
        "classifier_metadata": {
            "producer": f"stoic {__version__}",
            "whole_image": "a whole-image label is one detection whose box is the frame",
        },
    }
    if finished:
        info["classification_completion_time"] = _utc(max(finished))
    return {
        "info": info,
        "detection_categories": dict(DETECTION_CATEGORIES),
        "classification_categories": {i: name for name, i in ids.items()},
        "images": images,
    }
