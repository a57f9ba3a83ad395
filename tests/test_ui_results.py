"""The results view of the operator page, in-process (fake backend, no TensorFlow), and
the thumbnails the ingest makes for it.

The fake backend labels every image alike, so the test gives the batch a results
document of its own (three labels, one failed image) once the batch is done: the view
is what is under test, not the labelling. ``tests/test_ui_results_browser.py`` opens
the same view in a headless Chromium.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from stoic.api.ui import results
from stoic.storage.package import iter_package, results_key, thumbnails_key
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.html import dom
from tests.support.images import camera_image, png
from tests.support.settings import make_settings

TOKEN = "results-token"
HOSTILE = "cam1/<img src=x onerror=alert(1)>.jpg"
LABELS = {HOSTILE: "coyote", "cam1/b.jpg": "empty", "cam2/c.jpg": "coyote", "cam2/d.png": None}


def big_jpeg(seed: int) -> bytes:
    """A 1024 × 768 camera frame with EXIF (large enough that validation decodes it at
    1/8 scale)."""
    small = Image.open(io.BytesIO(camera_image(seed)))
    buf = io.BytesIO()
    small.resize((1024, 768)).save(buf, "JPEG", exif=small.getexif())
    return buf.getvalue()


@pytest.fixture
async def locked(tmp_path: Path):
    async with start_daemon(make_settings(tmp_path, api={"token": TOKEN})) as d:
        yield d


async def done_batch(d: Daemon) -> str:
    """A batch of two deployments (cam1, cam2) with EXIF, done, then given the results
    document of :data:`LABELS`."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    items = [
        (HOSTILE, big_jpeg(1)),
        ("cam1/b.jpg", camera_image(2, captured="2024:05:02 07:00:00", offset="+02:00")),
        ("cam2/c.jpg", camera_image(3, captured=None)),
        ("cam2/d.png", png(4)),
    ]
    r = await d.client.post("/v1/batches", files=files(*items), headers=bearer)
    assert r.status_code == 202, r.text
    batch_id: str = r.json()["id"]
    d.client.headers.update(bearer)
    body = await d.wait_done(batch_id)
    del d.client.headers["Authorization"]
    assert body["state"] == "done", body
    key = results_key(batch_id)
    stored = json.loads(d.controller.objects.get_bytes(key))
    for r in stored["results"]:
        label = LABELS[r["name"]]
        r["label"], r["scores"] = label, ({label: 0.875} if label else {})
        r["error"] = None if label else "cannot decode image: a test's failure"
    d.controller.objects.put_bytes(key, json.dumps(stored).encode())
    return batch_id


async def test_ingest_keeps_a_small_thumbnail_of_each_jpeg_beside_the_package(
    locked: Daemon,
) -> None:
    batch_id = await done_batch(locked)
    with locked.controller.objects.open_read(thumbnails_key(batch_id)) as f:
        thumbs = dict(iter_package(f))
    assert sorted(thumbs) == sorted(n for n in LABELS if n.endswith(".jpg"))  # no PNG
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in thumbs.items()}
    assert sizes[HOSTILE] == (128, 96)  # 1024 × 768, aspect kept
    assert sizes["cam1/b.jpg"] == (48, 36)  # never enlarged
    assert all(Image.open(io.BytesIO(d)).format == "JPEG" for d in thumbs.values())


async def test_results_view_cards_filters_and_escaping(locked: Daemon) -> None:
    batch_id = await done_batch(locked)
    c = locked.client
    path = f"/ui/batches/{batch_id}/results"
    assert (await c.get(path)).status_code == 401  # the page's login, as for the rest
    login = await c.post("/ui/login", data={"token": TOKEN}, headers={"Origin": "http://stoic"})
    assert login.status_code == 303

    r = await c.get(path)
    assert r.status_code == 200
    assert "content-security-policy" in r.headers
    page = dom(r.text)
    cards = {card.find(class_="file").text(): card for card in page.find_all("li", class_="card")}
    assert set(cards) == set(LABELS)
    hostile = cards[HOSTILE]
    assert hostile.find("dd", class_="label").text() == "coyote"
    assert hostile.find("dd", class_="score").text() == "0.88"
    assert hostile.find("dd", class_="runtime").text() == "edge"
    assert hostile.find("dd", class_="captured").text() == "2024-05-01T06:12:33"
    assert hostile.find("dd", class_="deployment").text() == "cam1"
    assert cards["cam1/b.jpg"].find("dd", class_="captured").text() == "2024-05-02T07:00:00+02:00"
    assert cards["cam2/c.jpg"].find("dd", class_="captured").text() == "—"
    failed = cards["cam2/d.png"]
    assert failed.find("dd", class_="label").text() == "—"
    assert "a test's failure" in failed.find("p", class_="error").text()
    assert failed.find(class_="nothumb").text() == "no thumbnail"
    # The name is text and an attribute, never markup: the only images are the three
    # thumbnails, inline.
    imgs = page.find_all("img")
    assert len(imgs) == 3
    assert all(i.attrs["src"].startswith("data:image/jpeg;base64,") for i in imgs)
    assert hostile.find("img").attrs["alt"] == HOSTILE
    assert "<img src=x" not in r.text

    options = [o.attrs["value"] for o in page.find("select", name="label").find_all("option")]
    assert options == ["", "coyote", "empty", "-"]  # most frequent first
    deployments = [
        o.attrs["value"] for o in page.find("select", name="deployment").find_all("option")
    ]
    assert deployments == ["", "cam1", "cam2"]

    def shown(html: str) -> set[str]:
        return {n.find(class_="file").text() for n in dom(html).find_all("li", class_="card")}

    assert shown((await c.get(path, params={"label": "coyote"})).text) == {HOSTILE, "cam2/c.jpg"}
    assert shown((await c.get(path, params={"deployment": "cam2"})).text) == {
        "cam2/c.jpg",
        "cam2/d.png",
    }
    both = await c.get(path, params={"label": "coyote", "deployment": "cam2"})
    assert shown(both.text) == {"cam2/c.jpg"}
    assert "1 of 4 images" in both.text
    assert shown((await c.get(path, params={"label": "-"})).text) == {"cam2/d.png"}


async def test_results_view_pages(locked: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "PAGE_SIZE", 3)
    batch_id = await done_batch(locked)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    path = f"/ui/batches/{batch_id}/results"
    first = dom((await locked.client.get(path, headers=bearer)).text)
    assert len(first.find_all("li", class_="card")) == 3
    (link,) = first.find("p", class_="pages").find_all("a")
    assert link.attrs["href"] == "?page=2"
    second = await locked.client.get(path, params={"page": 2}, headers=bearer)
    assert len(dom(second.text).find_all("li", class_="card")) == 1
    assert "page 2 of 2" in second.text


async def test_download_buttons_use_the_page_login(locked: Daemon) -> None:
    batch_id = await done_batch(locked)
    c = locked.client
    for fmt in ("csv", "megadetector", "camtrap-dp"):
        assert (await c.get(f"/ui/batches/{batch_id}/download/{fmt}")).status_code == 401
    await c.post("/ui/login", data={"token": TOKEN}, headers={"Origin": "http://stoic"})
    page = dom((await c.get(f"/ui/batches/{batch_id}/results")).text)
    links = {a.attrs["data-format"]: a.attrs["href"] for a in page.find_all("a", class_="button")}
    assert set(links) == {"megadetector", "camtrap-dp", "csv"}

    csv = await c.get(links["csv"])
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert f'filename="stoic-{batch_id}.csv"' in csv.headers["content-disposition"]
    assert len(csv.text.strip().splitlines()) == 1 + len(LABELS)
    md = await c.get(links["megadetector"])
    assert md.status_code == 200 and len(md.json()["images"]) == len(LABELS)
    dp = await c.get(links["camtrap-dp"])
    assert dp.status_code == 200 and dp.headers["content-type"] == "application/zip"
    # The same bytes as the API's route, which wants the bearer token instead.
    assert (await c.get(f"/v1/batches/{batch_id}/results?format=csv")).status_code == 401
    api = await c.get(
        f"/v1/batches/{batch_id}/results?format=csv",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert api.content == csv.content
    assert (await c.get(f"/ui/batches/{batch_id}/download/pdf")).status_code == 404
    assert (await c.get("/ui/batches/nope/download/csv")).status_code == 404
