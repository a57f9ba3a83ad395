"""Image metadata at ingest (EXIF capture time and camera, the deployment label) and a
done batch's results in the field's formats, through the REST API in-process.

The images carry real EXIF, written by Pillow (:func:`tests.support.images.camera_image`).
"""

from __future__ import annotations

import csv
import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.ingest.builder import validate_image
from stoic.ingest.exif import NO_META, read_meta
from stoic.ingest.options import IngestLimits
from stoic.storage.package import iter_package
from tests.support import formats
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.images import camera_image, jpeg
from tests.support.settings import make_settings

LIMITS = IngestLimits(max_images=8, max_batch_bytes=10**7, max_image_bytes=10**6)


def meta_of(data: bytes, name: str = "f.jpg"):
    return validate_image(name, io.BytesIO(data), len(data), LIMITS).meta


# EXIF --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_camera_traps_exif_is_read(fmt: str) -> None:
    data = camera_image(offset="+02:00", serial="H600HJ1234", fmt=fmt)
    meta = meta_of(data, f"f.{fmt.lower()}")
    assert meta.captured_at == "2024-05-01T06:12:33+02:00"
    assert (meta.camera_make, meta.camera_model) == ("RECONYX", "HC600 HYPERFIRE")
    assert meta.camera_serial == "H600HJ1234"


def test_a_capture_time_without_offset_stays_the_cameras_local_time() -> None:
    assert meta_of(camera_image()).captured_at == "2024-05-01T06:12:33"


def test_an_image_without_exif_has_null_fields() -> None:
    assert meta_of(jpeg()) == NO_META


@pytest.mark.parametrize(
    ("captured", "offset", "expected"),
    [
        ("0000:00:00 00:00:00", None, None),  # a camera whose clock was never set
        ("2024:13:01 06:12:33", None, None),
        ("yesterday", None, None),
        ("2024:05:01 06:12:33", "+25:00", "2024-05-01T06:12:33"),
        ("2024:05:01 06:12:33", "CET", "2024-05-01T06:12:33"),
    ],
)
def test_a_malformed_capture_time_or_offset_is_not_made_up(
    captured: str, offset: str | None, expected: str | None
) -> None:
    assert meta_of(camera_image(captured=captured, offset=offset)).captured_at == expected


def test_exif_text_is_cleaned_and_capped() -> None:
    meta = meta_of(camera_image(make="  Bush\x00nell\x07  ", model="M" * 500))
    assert meta.camera_make == "Bushnell"
    assert meta.camera_model == "M" * 64


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's, at open
@pytest.mark.parametrize(
    "block",
    [
        b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 40,  # an entry count past the end
        b"MM\x00*\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\xff\xff\xff\xff\x00\x00",
        b"garbage!" * 5,
    ],
)
def test_a_corrupt_exif_block_gives_nulls_not_a_rejected_image(block: bytes) -> None:
    payload = b"Exif\x00\x00" + block
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = jpeg()[:2] + app1 + jpeg()[2:]
    valid = validate_image("x.jpg", io.BytesIO(data), len(data), LIMITS)
    assert (valid.format, valid.meta) == ("JPEG", NO_META)


def test_a_png_is_not_decoded_to_look_for_exif() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    with Image.open(buf) as im:

        def refuse() -> None:
            raise AssertionError("the pixels were decoded")

        im.load = refuse  # type: ignore[method-assign,assignment]
        assert read_meta(im) == NO_META


# Through the daemon -----------------------------------------------------------------


async def done_batch(d: Daemon, sent: list[tuple[str, bytes]], **data: str) -> dict:
    r = await d.client.post("/v1/batches", files=files(*sent), data=data)
    assert r.status_code == 202, r.text
    body = await d.wait_done(r.json()["id"])
    assert body["state"] == "done", body
    return body


async def test_results_carry_capture_time_camera_and_deployment(daemon: Daemon) -> None:
    sent = [
        ("IMG_0001.JPG", camera_image(1, offset="-07:00", serial="S1")),
        ("IMG_0002.JPG", jpeg(2)),
    ]
    body = await done_batch(daemon, sent, deployment="North ridge 2024")
    by_name = {r["name"]: r for r in body["results"]}
    assert by_name["IMG_0001.JPG"] | {"label": None, "index": None} == {
        "name": "IMG_0001.JPG",
        "index": None,
        "label": None,
        "deployment": "North ridge 2024",
        "captured_at": "2024-05-01T06:12:33-07:00",
        "camera_make": "RECONYX",
        "camera_model": "HC600 HYPERFIRE",
        "camera_serial": "S1",
    }
    assert by_name["IMG_0002.JPG"]["deployment"] == "North ridge 2024"
    assert by_name["IMG_0002.JPG"]["captured_at"] is None
    doc = (await daemon.client.get(f"/v1/batches/{body['id']}/results")).json()
    assert doc["deployment"] == "North ridge 2024" and doc["app_version"] == "1"
    assert [r["captured_at"] for r in doc["results"]] == ["2024-05-01T06:12:33-07:00", None]
    # Nothing was stripped from the stored images.
    package = daemon.controller.objects.get_bytes(f"batches/{body['id']}/package.tar")
    assert dict(iter_package(io.BytesIO(package))) == dict(sent)


async def test_without_a_label_the_deployment_is_the_first_folder(daemon: Daemon) -> None:
    body = await done_batch(daemon, [("cam02/100RECNX/a.jpg", jpeg(1)), ("b.jpg", jpeg(2))])
    assert {r["name"]: r["deployment"] for r in body["results"]} == {
        "cam02/100RECNX/a.jpg": "cam02",
        "b.jpg": None,
    }


@pytest.mark.parametrize("label", ["=HYPERLINK(1)", "a/b", "x" * 65, "+cam"])
async def test_a_bad_deployment_label_names_the_field(daemon: Daemon, label: str) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg())), data={"deployment": label}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "deployment"
    assert daemon.leftovers() == ([], 0, [])


async def test_the_same_files_for_another_deployment_are_another_request(
    daemon: Daemon,
) -> None:
    headers = {"Idempotency-Key": "cam-batch-1"}
    sent = files(("a.jpg", jpeg()))
    r1 = await daemon.client.post(
        "/v1/batches", files=sent, data={"deployment": "cam01"}, headers=headers
    )
    r2 = await daemon.client.post(
        "/v1/batches", files=sent, data={"deployment": "cam01"}, headers=headers
    )
    r3 = await daemon.client.post(
        "/v1/batches", files=sent, data={"deployment": "cam02"}, headers=headers
    )
    assert (r1.status_code, r2.status_code, r3.status_code) == (202, 200, 409)


async def test_results_of_a_batch_not_done_are_409(tmp_path: Path) -> None:
    slow = FakeBackend(default=FakeSpec(per_image_s=3600.0))
    settings = make_settings(tmp_path, controller={"drain_grace_s": 0})
    async with start_daemon(settings, fake=slow) as d:
        r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
        got = await d.client.get(f"/v1/batches/{r.json()['id']}/results")
        assert got.status_code == 409 and got.json()["error"]["code"] == "not_done"
        missing = await d.client.get("/v1/batches/nope/results")
        assert missing.status_code == 404


async def test_results_in_the_fields_formats(daemon: Daemon) -> None:
    sent = [(f"IMG_{i:04d}.JPG", camera_image(i, offset="+02:00")) for i in range(3)]
    body = await done_batch(daemon, sent, deployment="cam01")
    url = f"/v1/batches/{body['id']}/results"

    md = await daemon.client.get(url, params={"format": "megadetector"})
    assert md.status_code == 200 and "attachment" in md.headers["content-disposition"]
    assert formats.megadetector_errors(md.json()) == []
    assert [i["file"] for i in md.json()["images"]] == [name for name, _ in sent]

    table = await daemon.client.get(url, params={"format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [(r["file"], r["deployment"], r["captured_at"]) for r in rows] == [
        (name, "cam01", "2024-05-01T06:12:33+02:00") for name, _ in sent
    ]
    assert {r["batch_id"] for r in rows} == {body["id"]}
    assert {(r["runtime"], r["model_version"]) for r in rows} == {("edge", "1")}

    package = await daemon.client.get(url, params={"format": "camtrap-dp"})
    assert package.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(package.content)) as zf:
        names = set(zf.namelist())
        media = list(csv.DictReader(io.StringIO(zf.read("media.csv").decode())))
        descriptor = json.loads(zf.read("datapackage.json"))
        headers = {
            n: next(csv.reader(io.StringIO(zf.read(f"{n}.csv").decode())))
            for n in ("deployments", "media", "observations")
        }
    assert names == {"datapackage.json", "deployments.csv", "media.csv", "observations.csv"}
    assert [m["timestamp"] for m in media] == ["2024-05-01T06:12:33+02:00"] * 3
    assert {n: formats.table_fields(n) for n in headers} == headers
    # Without the site's metadata the package lacks what only the site knows, and the
    # profile says so (stoic export --meta fills it in: tests/test_export.py).
    errors = " ".join(formats.profile_errors(descriptor))
    assert "'contributors' is a required property" in errors

    bad = await daemon.client.get(url, params={"format": "xlsx"})
    assert bad.status_code == 422
