"""The batch's metadata document: per image, its deployment and what its EXIF says.

The ingest learns each image's capture time and camera while it validates it
(:mod:`stoic.ingest.exif`), but the function that labels the images only sees the
package (image files, nothing else). So the ingest stores what it learnt beside the
package (``batches/<id>/metadata.json``), and when the batch is done the daemon joins
it into the results document, image by image, by name (the names in a package are
unique; a function may answer in any order), or by package position for a result
without a name. Every result then carries the fields of
:data:`IMAGE_FIELDS`, null where unknown: a batch ingested before metadata was kept
gets nulls too, so readers see one shape.

An image's deployment is the batch's ``deployment`` label when the client gave one;
otherwise the first folder of its name (``cam01/IMG_0001.JPG`` → ``cam01``), as
``stoic submit DIR`` sends a tree of one folder per camera; otherwise null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stoic.ingest.exif import ImageMeta
from stoic.ingest.options import DEPLOYMENT

IMAGE_FIELDS = ("deployment", "captured_at", "camera_make", "camera_model", "camera_serial")
"""What the results document adds to each image's result."""


def folder_deployment(name: str) -> str | None:
    """The first folder of a member name, when it has one that is a deployment label."""
    head, sep, _ = name.partition("/")
    return head if sep and DEPLOYMENT.fullmatch(head) else None


def metadata_document(
    deployment: str | None, images: Sequence[tuple[str, ImageMeta]]
) -> dict[str, Any]:
    """The document stored beside a package: the batch's label and one entry per image."""
    return {
        "deployment": deployment,
        "images": [
            {"name": name, "deployment": deployment or folder_deployment(name), **meta.as_dict()}
            for name, meta in images
        ],
    }


def parse_document(raw: bytes) -> dict[str, Any] | None:
    """A stored metadata document, or None when it is not one (nothing to join)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        return None
    return doc


def annotate(
    results: Sequence[Mapping[str, Any]], document: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Each result with the :data:`IMAGE_FIELDS` of its image: matched by name, or, for
    a result that has none, by ``index`` (its position in the package, whose order the
    document keeps), which then also gives it its name."""
    raw = document.get("images", []) if document is not None else []
    images = [i for i in raw if isinstance(i, dict) and isinstance(i.get("name"), str)]
    by_name = {i["name"]: i for i in images}
    out = []
    for r in results:
        name, index = r.get("name"), r.get("index")
        if name is not None:
            meta = by_name.get(name, {})
        elif isinstance(index, int) and 0 <= index < len(images):
            meta = images[index]
            r = {"name": meta["name"], **r}
        else:
            meta = {}
        out.append({**r, **{k: meta.get(k) for k in IMAGE_FIELDS}})
    return out
