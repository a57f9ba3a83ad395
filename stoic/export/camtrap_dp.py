"""Results as a Camtrap DP 1.0.2 package: the TDWG standard behind GBIF and Agouti.

A package is four files: ``datapackage.json`` (the descriptor, validated against the
Camtrap DP profile), ``deployments.csv`` (one row per camera placement),
``media.csv`` (one row per image) and ``observations.csv`` (what is in each image).
stoic's observations are the machine's: ``observationLevel`` ``media``,
``classificationMethod`` ``machine``, ``classifiedBy`` the model's name and version,
``classificationProbability`` its score; a label's ``observationType`` and
``scientificName`` come from the site's label map (:mod:`stoic.export.labels`).
An image that failed is ``unclassified``, with the error as its comment.

Camtrap DP needs instants with a UTC offset. A camera that wrote one
(``OffsetTimeOriginal``) is taken at its word; a capture time without one gets the
deployment's (or the site's) time zone from the meta file (:mod:`stoic.export.meta`),
or else is read as UTC and its deployment marked ``timestampIssues``; an image without
a capture time gets the instant stoic accepted it, with a comment saying so. A
deployment's start and end are its first and last image, and its ``cameraModel``
(``make-model``) and ``cameraID`` (serial number) the EXIF's, unless the meta file
says otherwise.

What stoic cannot know (coordinates, the project, the contributors) comes from the
meta file; what is still missing for a valid package is listed in
:attr:`CamtrapPackage.warnings`, with the file written all the same, so a person can
fill it in: nothing is made up.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import mimetypes
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from stoic import __version__
from stoic.export.labels import Kind
from stoic.export.meta import DEPLOYMENT_FIELDS, ExportMeta
from stoic.export.records import ImageRecord

VERSION = "1.0.2"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}/"
PROFILE_URL = BASE_URL + "camtrap-dp-profile.json"
RESOURCES = ("deployments", "media", "observations")

MEDIA_FIELDS = (
    "mediaID",
    "deploymentID",
    "captureMethod",
    "timestamp",
    "filePath",
    "filePublic",
    "fileName",
    "fileMediatype",
    "exifData",
    "favorite",
    "mediaComments",
)

OBSERVATION_FIELDS = (
    "observationID",
    "deploymentID",
    "mediaID",
    "eventID",
    "eventStart",
    "eventEnd",
    "observationLevel",
    "observationType",
    "cameraSetupType",
    "scientificName",
    "count",
    "lifeStage",
    "sex",
    "behavior",
    "individualID",
    "individualPositionRadius",
    "individualPositionAngle",
    "individualSpeed",
    "bboxX",
    "bboxY",
    "bboxWidth",
    "bboxHeight",
    "classificationMethod",
    "classifiedBy",
    "classificationTimestamp",
    "classificationProbability",
    "observationTags",
    "observationComments",
)

UNASSIGNED = "unassigned"
"""The deploymentID of images that came without one (no label, no folder)."""


def schema_url(resource: str) -> str:
    return f"{BASE_URL}{resource}-table-schema.json"


@dataclass(frozen=True, slots=True)
class CamtrapPackage:
    """The package's files (name → bytes) and what it still lacks to be valid."""

    files: Mapping[str, bytes]
    warnings: tuple[str, ...]

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (directory / name).write_bytes(data)

    def zip_bytes(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.files.items():
                zf.writestr(name, data)
        return buf.getvalue()


def _iso(dt: datetime) -> str:
    text = dt.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if isinstance(value, list | tuple):
        return "|".join(str(v) for v in value)
    return str(value)


def _csv(fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(fields)
    for row in rows:
        w.writerow([_cell(row.get(f)) for f in fields])
    return out.getvalue().encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Media:
    record: ImageRecord
    media_id: str
    deployment: str
    timestamp: datetime
    issue: str | None


def _timestamp(r: ImageRecord, meta: ExportMeta, deployment: str) -> tuple[datetime, str | None]:
    captured = None
    if r.captured_at:
        try:
            captured = datetime.fromisoformat(r.captured_at)
        except ValueError:
            captured = None
    if captured is None:
        accepted = datetime.fromtimestamp(r.accepted_at or 0.0, UTC).replace(microsecond=0)
        return accepted, "no capture time in its EXIF: the instant stoic accepted it"
    if captured.tzinfo is not None:
        return captured, None
    zone = meta.zone(deployment)
    if zone is None:
        return captured.replace(tzinfo=UTC), "capture time without a UTC offset: read as UTC"
    return captured.replace(tzinfo=zone), None


def _media(recs: Sequence[ImageRecord], meta: ExportMeta) -> list[_Media]:
    out = []
    for r in recs:
        deployment = r.deployment or UNASSIGNED
        media_id = hashlib.sha256(f"{r.batch_id}/{r.file}".encode()).hexdigest()[:16]
        ts, issue = _timestamp(r, meta, deployment)
        out.append(_Media(r, media_id, deployment, ts, issue))
    return out


def _file_path(m: _Media, meta: ExportMeta) -> str:
    name = m.record.file
    if m.deployment != UNASSIGNED and not name.startswith(m.deployment + "/"):
        name = f"{m.deployment}/{name}"
    return meta.media_base + name


def _exif(r: ImageRecord) -> str:
    tags = {
        "Make": r.camera_make,
        "Model": r.camera_model,
        "BodySerialNumber": r.camera_serial,
        "DateTimeOriginal": r.captured_at,
    }
    present = {k: v for k, v in tags.items() if v is not None}
    return json.dumps(present) if present else ""


def _media_row(m: _Media, meta: ExportMeta) -> dict[str, Any]:
    name = PurePosixPath(m.record.file).name
    return {
        "mediaID": m.media_id,
        "deploymentID": m.deployment,
        "timestamp": _iso(m.timestamp),
        "filePath": _file_path(m, meta),
        "filePublic": False,
        "fileName": name,
        "fileMediatype": mimetypes.guess_type(name)[0] or "image/unknown",
        "exifData": _exif(m.record),
        "mediaComments": m.issue,
    }


def _utc(t: float | None) -> str | None:
    return _iso(datetime.fromtimestamp(t, UTC).replace(microsecond=0)) if t is not None else None


def _observation_rows(m: _Media, meta: ExportMeta) -> list[dict[str, Any]]:
    r = m.record
    base = {
        "deploymentID": m.deployment,
        "mediaID": m.media_id,
        "eventStart": _iso(m.timestamp),
        "eventEnd": _iso(m.timestamp),
        "observationLevel": "media",
    }
    machine = {
        "classificationMethod": "machine",
        "classifiedBy": r.classifier,
        "classificationTimestamp": _utc(r.classified_at),
    }
    if r.error is not None:
        return [
            {
                **base,
                "observationID": f"{m.media_id}-1",
                "observationType": Kind.UNCLASSIFIED.value,
                "observationComments": r.error,
            }
        ]
    found: list[tuple[str, float | None, tuple[float, float, float, float] | None]]
    if r.detections:
        found = [
            (d.label, d.conf, d.bbox)
            for d in r.detections
            if meta.labels.of(d.label).kind is not Kind.BLANK
        ]
        if not found:  # a detector that saw nothing
            return [
                {
                    **base,
                    **machine,
                    "observationID": f"{m.media_id}-1",
                    "observationType": Kind.BLANK.value,
                }
            ]
    elif r.label is not None:
        found = [(r.label, r.score, None)]
    else:
        return [
            {**base, "observationID": f"{m.media_id}-1", "observationType": Kind.UNCLASSIFIED.value}
        ]
    rows = []
    for k, (label, conf, bbox) in enumerate(found, start=1):
        info = meta.labels.of(label)
        row = {
            **base,
            **machine,
            "observationID": f"{m.media_id}-{k}",
            "observationType": info.kind.value,
            "scientificName": info.scientific_name if info.kind is Kind.ANIMAL else None,
            "classificationProbability": None
            if conf is None
            else round(min(max(conf, 0.0), 1.0), 6),
            "observationTags": f"label:{label}",
        }
        if bbox is not None and bbox[2] > 0 and bbox[3] > 0:
            x, y, w, h = (min(max(v, 0.0), 1.0) for v in bbox)
            row.update(bboxX=x, bboxY=y, bboxWidth=w or None, bboxHeight=h or None)
        rows.append(row)
    return rows


def _camera(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


def _deployment_rows(
    media: Sequence[_Media], meta: ExportMeta, warnings: list[str]
) -> list[dict[str, Any]]:
    by: dict[str, list[_Media]] = defaultdict(list)
    for m in media:
        by[m.deployment].append(m)
    rows = []
    missing = []
    for name in sorted(by):
        items = by[name]
        records = [m.record for m in items]
        models = (
            "-".join(p for p in (r.camera_make, r.camera_model) if p) or None for r in records
        )
        row: dict[str, Any] = {
            "deploymentID": name,
            "deploymentStart": _iso(min(m.timestamp for m in items)),
            "deploymentEnd": _iso(max(m.timestamp for m in items)),
            "cameraID": _camera(r.camera_serial for r in records),
            "cameraModel": _camera(models),
            "timestampIssues": any(m.issue for m in items),
        }
        given = meta.deployments.get(name)
        if given is not None:
            row.update(given.columns)
        row["deploymentID"] = name
        if row.get("latitude") is None or row.get("longitude") is None:
            missing.append(name)
        rows.append(row)
    if missing:
        warnings.append(
            "deployments.csv: no latitude/longitude for "
            + ", ".join(missing)
            + " (give them under deployments: in --meta); the package is not valid without"
        )
    return rows


def _spatial(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    points = [
        (float(r["longitude"]), float(r["latitude"]))
        for r in rows
        if r.get("latitude") is not None and r.get("longitude") is not None
    ]
    if not points:
        return None
    if len(set(points)) == 1:
        return {"type": "Point", "coordinates": list(points[0])}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "bbox": [x0, y0, x1, y1], "coordinates": [ring]}


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).date()


def _descriptor(
    meta: ExportMeta,
    deployments: Sequence[Mapping[str, Any]],
    observations: Sequence[Mapping[str, Any]],
    created: float,
    warnings: list[str],
) -> dict[str, Any]:
    project: dict[str, Any] = {"individualAnimals": False, "observationLevel": ["media"]}
    project.update(meta.package.get("project") or {})
    names = sorted({o["scientificName"] for o in observations if o.get("scientificName")})
    descriptor: dict[str, Any] = {
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": schema_url(name),
            }
            for name in RESOURCES
        ],
        "profile": PROFILE_URL,
        "name": "stoic-export",
        "created": _utc(created),
        "sources": [{"title": "stoic", "version": __version__}],
        "temporal": {
            "start": min(_day(d["deploymentStart"]) for d in deployments).isoformat(),
            "end": max(_day(d["deploymentEnd"]) for d in deployments).isoformat(),
        }
        if deployments
        else None,
        "taxonomic": [{"scientificName": n} for n in names],
    }
    spatial = _spatial(deployments)
    if spatial is not None:
        descriptor["spatial"] = spatial
    descriptor.update({k: v for k, v in meta.package.items() if k != "project"})
    descriptor["project"] = project
    if descriptor.get("temporal") is None:
        del descriptor["temporal"]
    lacking = [k for k in ("contributors", "spatial", "temporal") if not descriptor.get(k)]
    lacking += [
        f"project.{k}" for k in ("title", "samplingDesign", "captureMethod") if k not in project
    ]
    if lacking:
        warnings.append(
            "datapackage.json: no "
            + ", ".join(lacking)
            + " (give them under package: in --meta); the package is not valid without"
        )
    return descriptor


def camtrap_package(
    recs: Sequence[ImageRecord], meta: ExportMeta | None = None, *, created: float
) -> CamtrapPackage:
    """The package of ``recs``; ``created`` (seconds since the epoch) is its creation
    instant (the caller's clock)."""
    meta = meta or ExportMeta()
    warnings: list[str] = []
    media = _media(recs, meta)
    issues = sum(1 for m in media if m.issue)
    if issues:
        warnings.append(
            f"media.csv: {issues} image(s) without a capture time or its time zone "
            "(see mediaComments; give timezone: in --meta); their deployments are "
            "marked timestampIssues"
        )
    deployments = _deployment_rows(media, meta, warnings)
    observations = [o for m in media for o in _observation_rows(m, meta)]
    if any(m.record.label and not _named(m, meta) for m in media):
        warnings.append(
            "observations.csv: animal labels without a scientificName (map them under "
            "labels: in --meta)"
        )
    descriptor = _descriptor(meta, deployments, observations, created, warnings)
    files = {
        "datapackage.json": (json.dumps(descriptor, indent=2) + "\n").encode(),
        "deployments.csv": _csv(DEPLOYMENT_FIELDS, deployments),
        "media.csv": _csv(MEDIA_FIELDS, (_media_row(m, meta) for m in media)),
        "observations.csv": _csv(OBSERVATION_FIELDS, observations),
    }
    return CamtrapPackage(files, tuple(warnings))


def _named(m: _Media, meta: ExportMeta) -> bool:
    assert m.record.label is not None
    info = meta.labels.of(m.record.label)
    return info.kind is not Kind.ANIMAL or info.scientific_name is not None
