"""The exports, checked by the formats' own validators (vendored: tests/data/README.md):
MegaDetector's ``validate_batch_results``, the Camtrap DP profile (jsonschema), and the
whole Camtrap DP package with ``frictionless`` where it is installed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stoic.client import export_records, parse_since
from stoic.errors import InputError
from stoic.export.camtrap_dp import MEDIA_FIELDS, OBSERVATION_FIELDS, camtrap_package
from stoic.export.csvfile import csv_text
from stoic.export.labels import Kind, LabelMap
from stoic.export.megadetector import megadetector_document
from stoic.export.meta import DEPLOYMENT_FIELDS, ExportMeta, load_meta, meta_from_mapping
from stoic.export.records import ImageRecord, records
from tests.support import formats

ACCEPTED = 1_714_550_000.0  # 2024-05-01T07:53:20Z


def result(name: str, label: str | None, **extra: Any) -> dict[str, Any]:
    scores = {"fox": 0.05, "empty": 0.05, "human": 0.05}
    if label is not None:
        scores = {k: (0.85 if k == label else v) for k, v in scores.items()}
    return {
        "name": name,
        "label": label,
        "scores": scores if label is not None else {},
        "error": None if label is not None else "cannot decode",
        "deployment": "cam01",
        "captured_at": "2024-05-01T06:12:33+02:00",
        "camera_make": "RECONYX",
        "camera_model": "HC600 HYPERFIRE",
        "camera_serial": "H600HJ1234",
        **extra,
    }


def document(*results: dict[str, Any], batch_id: str = "b1") -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "app": "classify",
        "app_version": "v3",
        "runtime": "edge",
        "created_at": ACCEPTED,
        "finished_at": ACCEPTED + 60,
        "results": list(results),
    }


RECS = records(
    document(
        result("IMG_0001.JPG", "fox"),
        result("IMG_0002.JPG", "empty"),
        result("IMG_0003.JPG", "human"),
        result("IMG_0004.JPG", None),
    )
)

SITE = {
    "package": {
        "title": "stoic test export",
        "contributors": [{"title": "Jane Doe", "role": "contact", "email": "jane@example.org"}],
        "project": {
            "title": "Test traps",
            "samplingDesign": "targeted",
            "captureMethod": ["activityDetection"],
        },
        "licenses": [{"name": "CC0-1.0", "scope": "data"}, {"name": "CC-BY-4.0", "scope": "media"}],
    },
    "timezone": "Europe/Brussels",
    "deployments": {
        "cam01": {"latitude": 51.05, "longitude": 3.72, "locationName": "Gent"},
        "cam02": {"latitude": 51.06, "longitude": 3.73},
    },
    "labels": {"fox": "Vulpes vulpes"},
}


# MegaDetector ------------------------------------------------------------------------


def test_megadetector_output_passes_the_formats_validator() -> None:
    doc = megadetector_document(RECS)
    assert formats.megadetector_errors(doc) == []
    assert doc["info"]["format_version"] == "1.6"
    assert doc["info"]["classifier"] == "classify v3"
    classes = doc["classification_categories"]
    fox, empty, human, failed = doc["images"]
    # A whole-image label: one full-frame detection in its category, carrying every
    # label's score, highest first.
    [det] = fox["detections"]
    assert (det["category"], det["conf"], det["bbox"]) == ("1", 0.85, [0.0, 0.0, 1.0, 1.0])
    assert [classes[c] for c, _ in det["classifications"]] == ["fox", "empty", "human"]
    assert [s for _, s in det["classifications"]] == [0.85, 0.05, 0.05]
    assert empty["detections"] == []
    assert [d["category"] for d in human["detections"]] == ["2"]
    assert failed == {"file": "IMG_0004.JPG", "failure": "cannot decode", "detections": None}


def test_a_detectors_boxes_are_reported_as_they_are() -> None:
    boxes = [
        {"label": "animal", "conf": 0.93, "bbox": [0.1, 0.2, 0.3, 0.4]},
        {"label": "vehicle", "conf": 0.4, "bbox": [0.5, 0.5, 0.2, 0.1]},
    ]
    [rec] = records(document(result("a.jpg", "animal", detections=boxes, scores={})))
    doc = megadetector_document([rec])
    assert formats.megadetector_errors(doc) == []
    assert doc["images"][0]["detections"] == [
        {"category": "1", "conf": 0.93, "bbox": [0.1, 0.2, 0.3, 0.4]},
        {"category": "3", "conf": 0.4, "bbox": [0.5, 0.5, 0.2, 0.1]},
    ]
    package = camtrap_package([rec], meta_from_mapping(SITE), created=ACCEPTED)
    obs = list(csv.DictReader(io.StringIO(package.files["observations.csv"].decode())))
    assert [(o["observationType"], o["bboxX"], o["bboxWidth"]) for o in obs] == [
        ("animal", "0.1", "0.3"),
        ("vehicle", "0.5", "0.2"),
    ]


def test_the_megadetector_validator_is_not_a_rubber_stamp() -> None:
    doc = megadetector_document(RECS)
    doc["images"][0]["detections"][0]["conf"] = 1  # an int, not a float
    assert formats.megadetector_errors(doc) != []
    doc = megadetector_document(RECS)
    doc["images"][0]["detections"][0]["category"] = "7"
    assert formats.megadetector_errors(doc) != []


def test_the_megadetector_package_accepts_it_too_where_installed() -> None:
    validator = pytest.importorskip(
        "megadetector.postprocessing.validate_batch_results",
        reason="the megadetector package is not installed (tests/data vendors its validator)",
    )
    report = validator.validate_batch_results(megadetector_document(RECS))
    assert report["validation_results"]["errors"] == []


# Camtrap DP --------------------------------------------------------------------------


def test_camtrap_dp_columns_are_the_standards() -> None:
    assert list(DEPLOYMENT_FIELDS) == formats.table_fields("deployments")
    assert list(MEDIA_FIELDS) == formats.table_fields("media")
    assert list(OBSERVATION_FIELDS) == formats.table_fields("observations")


def rows(package_files: dict[str, bytes] | Any, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(package_files[f"{name}.csv"].decode())))


def test_a_camtrap_dp_package_with_the_sites_metadata_is_valid(tmp_path: Path) -> None:
    package = camtrap_package(RECS, meta_from_mapping(SITE), created=ACCEPTED + 3600)
    assert package.warnings == ()
    descriptor = json.loads(package.files["datapackage.json"])
    assert formats.profile_errors(descriptor) == []
    assert descriptor["taxonomic"] == [{"scientificName": "Vulpes vulpes"}]
    assert descriptor["temporal"] == {"start": "2024-05-01", "end": "2024-05-01"}
    assert descriptor["spatial"]["type"] == "Point"
    [deployment] = rows(package.files, "deployments")
    assert deployment["cameraModel"] == "RECONYX-HC600 HYPERFIRE"
    assert deployment["cameraID"] == "H600HJ1234"
    assert deployment["timestampIssues"] == "false"
    media = rows(package.files, "media")
    assert [m["filePath"] for m in media] == [f"cam01/IMG_000{i}.JPG" for i in range(1, 5)]
    assert json.loads(media[0]["exifData"])["Model"] == "HC600 HYPERFIRE"
    obs = rows(package.files, "observations")
    assert [(o["observationType"], o["scientificName"]) for o in obs] == [
        ("animal", "Vulpes vulpes"),
        ("blank", ""),
        ("human", ""),
        ("unclassified", ""),
    ]
    fox = obs[0]
    assert (fox["classificationMethod"], fox["classifiedBy"]) == ("machine", "classify v3")
    assert (fox["classificationProbability"], fox["observationLevel"]) == ("0.85", "media")
    assert fox["mediaID"] == media[0]["mediaID"]
    assert obs[3]["observationComments"] == "cannot decode"
    if formats.HAVE_FRICTIONLESS:
        package.write(tmp_path / "pkg")
        assert formats.frictionless_errors(tmp_path / "pkg") == []


@pytest.mark.skipif(
    not formats.HAVE_FRICTIONLESS, reason="frictionless is not installed (the dev extra has it)"
)
def test_frictionless_catches_a_broken_package(tmp_path: Path) -> None:
    camtrap_package(RECS, meta_from_mapping(SITE), created=ACCEPTED).write(tmp_path)
    table = tmp_path / "observations.csv"
    table.write_text(table.read_text().replace(",0.85,", ",1.5,"))
    assert any("maximum" in e for e in formats.frictionless_errors(tmp_path))


def test_without_the_sites_metadata_the_package_says_what_it_lacks() -> None:
    package = camtrap_package(RECS, created=ACCEPTED)
    text = " ".join(package.warnings)
    assert "no latitude/longitude for cam01" in text
    for missing in ("contributors", "spatial", "project.title", "project.samplingDesign"):
        assert missing in text
    assert "without a scientificName" in text
    errors = " ".join(formats.profile_errors(json.loads(package.files["datapackage.json"])))
    assert "'contributors' is a required property" in errors
    assert "'spatial' is a required property" in errors


@pytest.mark.parametrize(
    ("captured", "zone", "timestamp", "issue"),
    [
        ("2024-05-01T06:12:33+02:00", None, "2024-05-01T06:12:33+02:00", False),
        ("2024-05-01T06:12:33", "Europe/Brussels", "2024-05-01T06:12:33+02:00", False),
        ("2024-01-01T06:12:33", "Europe/Brussels", "2024-01-01T06:12:33+01:00", False),
        ("2024-05-01T06:12:33", "-07:00", "2024-05-01T06:12:33-07:00", False),
        ("2024-05-01T06:12:33", None, "2024-05-01T06:12:33Z", True),
        (None, None, "2024-05-01T07:53:20Z", True),
    ],
)
def test_camtrap_dp_timestamps_have_an_offset_and_unknown_ones_are_flagged(
    captured: str | None, zone: str | None, timestamp: str, issue: bool
) -> None:
    recs = records(document(result("a.jpg", "fox", captured_at=captured)))
    meta = meta_from_mapping({**SITE, "timezone": zone})
    package = camtrap_package(recs, meta, created=ACCEPTED)
    [media] = rows(package.files, "media")
    [deployment] = rows(package.files, "deployments")
    assert media["timestamp"] == timestamp == deployment["deploymentStart"]
    assert deployment["timestampIssues"] == ("true" if issue else "false")
    assert bool(media["mediaComments"]) is issue


# CSV -----------------------------------------------------------------------------------


def test_the_csv_has_one_row_per_image() -> None:
    table = list(csv.DictReader(io.StringIO(csv_text(RECS))))
    assert [r["file"] for r in table] == [r.file for r in RECS]
    first = table[0]
    assert first == {
        "file": "IMG_0001.JPG",
        "deployment": "cam01",
        "captured_at": "2024-05-01T06:12:33+02:00",
        "camera_make": "RECONYX",
        "camera_model": "HC600 HYPERFIRE",
        "camera_serial": "H600HJ1234",
        "label": "fox",
        "score": "0.85",
        "runtime": "edge",
        "batch_id": "b1",
        "app": "classify",
        "model_version": "v3",
        "accepted_at": "2024-05-01T07:53:20Z",
        "error": "",
    }
    assert (table[3]["label"], table[3]["score"], table[3]["error"]) == ("", "", "cannot decode")


# Inputs ------------------------------------------------------------------------------


def test_a_label_map_names_kinds_and_taxa() -> None:
    labels = LabelMap.from_mapping(
        {"fox": "Vulpes vulpes", "nothing_here": "blank", "misfire": {"observationType": "unknown"}}
    )
    assert labels.of("fox").scientific_name == "Vulpes vulpes"
    assert labels.of("nothing_here").kind is Kind.BLANK
    assert labels.of("misfire").kind is Kind.UNKNOWN
    assert labels.of("Empty").kind is Kind.BLANK  # the defaults, for the labels not named
    assert labels.of("person").kind is Kind.HUMAN
    assert (labels.of("rodent").kind, labels.of("rodent").scientific_name) == (Kind.ANIMAL, None)
    with pytest.raises(InputError, match="labels: x: observationType 'cat'"):
        LabelMap.from_mapping({"x": {"observationType": "cat"}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"colour": "red"}, "unknown key"),
        ({"deployments": {"cam01": {"lattitude": 1}}}, "deployments.cam01: \\['lattitude'\\]"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"package": {"resources": []}}, "package.resources is written by stoic"),
        ({"labels": {"fox": 3}}, "labels: fox"),
    ],
)
def test_a_bad_meta_file_names_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        meta_from_mapping(raw)


def test_a_meta_file_is_yaml(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    # Unquoted, YAML 1.1 reads -07:00 as the number -420 (minutes): still a zone.
    path.write_text("timezone: -07:00\ndeployments:\n  cam01: {latitude: 1.5, longitude: 2}\n")
    meta = load_meta(path)
    assert (
        meta.zone("cam01") is not None
        and meta.zone("cam01").utcoffset(None).total_seconds() == -25200
    )  # type: ignore[union-attr]
    assert meta.deployments["cam01"].columns == {"latitude": 1.5, "longitude": 2}
    assert load_meta(tmp_path / "site.yaml") != ExportMeta()
    with pytest.raises(InputError, match="cannot read"):
        load_meta(tmp_path / "missing.yaml")


def test_a_malformed_results_document_names_the_image() -> None:
    with pytest.raises(InputError, match=r"batch b1, a\.jpg: the score of 'fox'"):
        records(document(result("a.jpg", "fox", scores={"fox": "high"})))
    with pytest.raises(InputError, match="not a results document"):
        records({"results": []})


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("90m", now) == now - 5400
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2024-05-01T00:00:00+00:00", now) == 1_714_521_600.0
    with pytest.raises(InputError, match="--since 'soon'"):
        parse_since("soon", now)


def test_export_gathers_the_done_batches_since_and_filters_deployments() -> None:
    docs = {
        "old": document(result("o.jpg", "fox"), batch_id="old"),
        "new": document(
            result("n1.jpg", "fox"), result("n2.jpg", "fox", deployment="cam02"), batch_id="new"
        ),
    }
    listed = [
        {"id": "new", "created_at": ACCEPTED},
        {"id": "old", "created_at": ACCEPTED - 7200},
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/batches":
            assert request.url.params["state"] == "done"
            return httpx.Response(200, json={"batches": listed})
        batch_id = request.url.path.split("/")[3]
        return httpx.Response(200, json=docs[batch_id])

    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://d") as client:
        recent = export_records(client, since=ACCEPTED - 3600, batch_ids=[], deployments=[])
        every = export_records(client, since=None, batch_ids=[], deployments=["cam01"])
        named = export_records(client, since=None, batch_ids=["old"], deployments=[])
    assert [r.file for r in recent] == ["n1.jpg", "n2.jpg"]
    assert [r.file for r in every] == ["o.jpg", "n1.jpg"]
    assert [r.file for r in named] == ["o.jpg"]


def test_records_keep_what_the_formats_need() -> None:
    rec: ImageRecord = RECS[0]
    assert (rec.score, rec.classifier, rec.deployment) == (0.85, "classify v3", "cam01")
    assert rec.classified_at == ACCEPTED + 60


def test_a_label_without_scores_is_kept() -> None:
    [rec] = records(document(result("a.jpg", "fox", scores={})))
    doc = megadetector_document([rec])
    assert formats.megadetector_errors(doc) == []
    [det] = doc["images"][0]["detections"]
    assert det["conf"] == 1.0
    assert [doc["classification_categories"][c] for c, _ in det["classifications"]] == ["fox"]
    package = camtrap_package([rec], meta_from_mapping(SITE), created=ACCEPTED)
    [obs] = rows(package.files, "observations")
    assert (obs["scientificName"], obs["classificationProbability"]) == ("Vulpes vulpes", "")
