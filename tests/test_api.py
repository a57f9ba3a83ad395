"""The REST API in-process (httpx ASGITransport), with the fake backend: no TF.

Every rejected upload is checked for its exact status and JSON body, and for leaving
nothing behind (no object, no row, no temporary file) while the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from PIL import Image

from stoic.api.uploads import READ_AHEAD_BYTES
from stoic.errors import StoreError
from stoic.ingest.builder import TMP_PREFIX
from stoic.values import BatchState, DeploymentSample
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.images import jpeg, png, tar_of, with_png_size, zip_of
from tests.support.settings import LIMITS, checked_settings, make_settings
from tests.support.uplink import far_side


def noisy_jpeg(seed: int, size: tuple[int, int] = (40, 40)) -> bytes:
    """Noise compresses badly: a JPEG whose size is predictable from its pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


async def assert_rejected(
    d: Daemon,
    response: httpx.Response,
    status: int,
    code: str,
    *,
    file: str | None = None,
    field: str | None = None,
) -> None:
    """Exact status and body; nothing left behind; the daemon still serves."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("file") == file
    assert error.get("field") == field
    assert error["message"]
    assert d.leftovers() == ([], 0, [])
    assert (await d.client.get("/healthz")).status_code == 200
    ok = await d.client.post("/v1/batches", files=files(("after.jpg", jpeg())))
    assert ok.status_code == 202, ok.text


# Accepted batches ----------------------------------------------------------------------


async def test_batch_is_stored_before_202_and_runs_to_done(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg(1)), ("b.png", png(2)), ("c.jpg", jpeg(3)))
    )
    assert r.status_code == 202
    body = r.json()
    assert r.headers["location"] == f"/v1/batches/{body['id']}" == body["location"]
    assert body["n_images"] == 3 and body["skipped"] == [] and body["mode"] == "selector"
    record = daemon.controller.store.get_batch(body["id"])
    assert record.n_images == 3 and record.n_bytes == body["n_bytes"]
    assert daemon.controller.objects.size(record.package_key) == record.n_bytes

    done = await daemon.wait_done(body["id"])
    assert done["state"] == "done", done
    assert done["decision"]["runtime"] == done["winner"] == "edge"
    assert set(done["decision"]["estimates"]) == {"edge", "cpu", "gpu1", "gpu2"}
    assert "selector" in done["decision"]["reason"]
    measured = done["measured"]
    assert measured["total_s"] is not None and measured["processing_s"] is not None
    assert len(done["results"]) == 3
    assert daemon.controller.objects.exists(done["results_key"])
    # The measured components went to the store as samples.
    samples = daemon.controller.store.processing_samples("classify", "1", "edge")
    assert [s.images for s in samples] == [3]
    assert daemon.leftovers()[2] == []


async def test_archives_are_expanded(daemon: Daemon) -> None:
    archive_tgz = tar_of({"x/a.jpg": jpeg(1), "x/b.jpg": jpeg(2)}, mode="w:gz")
    archive_zip = zip_of({"c.jpg": jpeg(3), "__MACOSX/._c.jpg": b"junk", "d/": b""})
    r1 = await daemon.client.post("/v1/batches", files=files(("imgs.tar.gz", archive_tgz)))
    r2 = await daemon.client.post("/v1/batches", files=files(("imgs.zip", archive_zip)))
    assert (r1.status_code, r1.json()["n_images"]) == (202, 2)
    assert (r2.status_code, r2.json()["n_images"]) == (202, 1)


async def test_duplicate_names_are_made_unique(daemon: Daemon) -> None:
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg(1)), ("a.jpg", jpeg(2))))
    assert r.status_code == 202
    done = await daemon.wait_done(r.json()["id"])
    assert len(done["results"]) == 2


async def test_skip_invalid_accepts_the_rest_and_lists_what_was_skipped(daemon: Daemon) -> None:
    truncated = jpeg(5)[:300]
    r = await daemon.client.post(
        "/v1/batches",
        files=files(("good.jpg", jpeg(1)), ("notes.txt", b"hello"), ("cut.jpg", truncated)),
        data={"skip_invalid": "true"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["n_images"] == 1
    assert [(s["file"], s["code"]) for s in body["skipped"]] == [
        ("notes.txt", "not_an_image"),
        ("cut.jpg", "corrupt_image"),
    ]
    stored = daemon.controller.store.get_batch(body["id"]).skipped
    assert [s["file"] for s in stored] == ["notes.txt", "cut.jpg"]
    got = (await daemon.client.get(f"/v1/batches/{body['id']}")).json()
    assert [s["file"] for s in got["skipped"]] == ["notes.txt", "cut.jpg"]


async def test_idempotency_key_returns_the_same_batch(daemon: Daemon) -> None:
    headers = {"Idempotency-Key": "upload-42"}
    sent = files(("a.jpg", jpeg()), ("b.jpg", jpeg(2)))
    r1 = await daemon.client.post("/v1/batches", files=sent, headers=headers)
    # The same request again (httpx picks a new multipart boundary): the same batch.
    r2 = await daemon.client.post("/v1/batches", files=sent, headers=headers)
    assert (r1.status_code, r2.status_code) == (202, 200)
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.headers["location"] == r1.headers["location"]
    assert daemon.controller.store.count_batches() == 1
    objects = daemon.controller.objects.list("batches/")
    packages = [k for k in objects if k.endswith("/package.tar")]
    assert len(packages) == 1


@pytest.mark.parametrize(
    ("changed", "extra"),
    [
        ("a different file", {"files": files(("a.jpg", jpeg()), ("b.jpg", jpeg(3)))}),
        ("one file fewer", {"files": files(("a.jpg", jpeg()))}),
        ("a renamed file", {"files": files(("a.jpg", jpeg()), ("c.jpg", jpeg(2)))}),
        ("other options", {"data": {"mode": "duplicator"}}),
    ],
)
async def test_idempotency_key_reused_for_another_request_is_409(
    daemon: Daemon, changed: str, extra: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": "upload-43"}
    first = {"files": files(("a.jpg", jpeg()), ("b.jpg", jpeg(2)))}
    r1 = await daemon.client.post("/v1/batches", headers=headers, **first)
    assert r1.status_code == 202, r1.text
    request = {**first, **extra}
    r2 = await daemon.client.post("/v1/batches", headers=headers, **request)
    assert r2.status_code == 409, changed
    error = r2.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["field"] == "Idempotency-Key"
    assert r1.json()["id"] in error["message"]
    # Nothing of the second request was kept; the first batch is intact.
    assert daemon.controller.store.count_batches() == 1
    objects = daemon.controller.objects.list("batches/")
    packages = [k for k in objects if k.endswith("/package.tar")]
    assert len(packages) == 1
    assert not list((daemon.data_dir / "tmp").glob(f"{TMP_PREFIX}*"))


async def test_pinned_runtime_and_duplicator_mode(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg())), params={"runtime": "gpu2"}
    )
    assert r.status_code == 202 and r.json()["pinned_runtime"] == "gpu2"
    done = await daemon.wait_done(r.json()["id"])
    assert done["winner"] == "gpu2" and done["decision"]["runtime"] == "gpu2"
    assert daemon.fake.ops("invoke", "gpu2")

    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg())), data={"mode": "duplicator"}
    )
    assert r.status_code == 202 and r.json()["mode"] == "duplicator"
    done = await daemon.wait_done(r.json()["id"])
    assert done["state"] == "done" and done["mode"] == "duplicator"


async def test_list_filters_by_state(daemon: Daemon) -> None:
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
    await daemon.wait_done(r.json()["id"])
    done = (await daemon.client.get("/v1/batches", params={"state": "done"})).json()
    queued = (await daemon.client.get("/v1/batches", params={"state": "queued"})).json()
    assert [b["id"] for b in done["batches"]] == [r.json()["id"]]
    assert queued["batches"] == []
    bad = await daemon.client.get("/v1/batches", params={"state": "exploded"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "state"


# Rejected uploads -------------------------------------------------------------------------


async def test_empty_batch(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches",
        content=b"--XyZ--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    await assert_rejected(daemon, r, 400, "empty_batch")


async def test_not_multipart(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", content=b"{}", headers={"Content-Type": "application/json"}
    )
    await assert_rejected(daemon, r, 422, "invalid_field", field="Content-Type")


async def test_non_image_file_names_the_file(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg()), ("notes.txt", b"just text"))
    )
    await assert_rejected(daemon, r, 415, "not_an_image", file="notes.txt")


async def test_truncated_jpeg_names_the_file(daemon: Daemon) -> None:
    data = jpeg(7, size=(200, 150))
    r = await daemon.client.post(
        "/v1/batches", files=files(("ok.jpg", jpeg()), ("cut.jpg", data[: len(data) // 2]))
    )
    await assert_rejected(daemon, r, 422, "corrupt_image", file="cut.jpg")


async def test_corrupt_jpeg_header_names_the_file(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("bad.jpg", b"\xff\xd8\xff" + b"\0" * 200))
    )
    await assert_rejected(daemon, r, 422, "corrupt_image", file="bad.jpg")


@pytest.mark.parametrize("kind", ["tar", "zip"])
async def test_archive_member_outside_its_root(daemon: Daemon, kind: str) -> None:
    members = {"ok.jpg": jpeg(), "../x.jpg": jpeg(2)}
    archive = tar_of(members) if kind == "tar" else zip_of(members)
    r = await daemon.client.post("/v1/batches", files=files((f"batch.{kind}", archive)))
    await assert_rejected(daemon, r, 400, "unsafe_path", file="../x.jpg")


async def test_archive_with_a_symlink(daemon: Daemon) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("evil.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    r = await daemon.client.post("/v1/batches", files=files(("b.tar", buf.getvalue())))
    await assert_rejected(daemon, r, 400, "unsafe_path", file="evil.jpg")


async def test_multipart_filename_with_dotdot(daemon: Daemon) -> None:
    r = await daemon.client.post("/v1/batches", files=files(("../../x.jpg", jpeg())))
    await assert_rejected(daemon, r, 400, "unsafe_path", file="../../x.jpg")


async def test_too_many_images(daemon: Daemon) -> None:
    n = LIMITS["max_batch_images"] + 1
    r = await daemon.client.post(
        "/v1/batches", files=files(*((f"{i}.jpg", jpeg(i)) for i in range(n)))
    )
    await assert_rejected(daemon, r, 413, "too_large")


async def test_image_over_the_per_image_limit(daemon: Daemon) -> None:
    big = jpeg(1) + b"\0" * LIMITS["max_image_bytes"]
    r = await daemon.client.post("/v1/batches", files=files(("big.jpg", big)))
    await assert_rejected(daemon, r, 413, "too_large", file="big.jpg")


async def test_declared_body_over_the_limit(daemon: Daemon) -> None:
    huge = str(10 * LIMITS["max_batch_bytes"])
    r = await daemon.client.post(
        "/v1/batches",
        content=b"--XyZ--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=XyZ", "Content-Length": huge},
    )
    assert r.status_code == 413


async def test_batch_over_the_byte_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"max_batch_bytes": 5_000, "max_image_bytes": 4_000})
    async with start_daemon(settings) as d:
        imgs = [noisy_jpeg(i) for i in range(4)]
        assert all(len(x) < 4_000 for x in imgs) and sum(map(len, imgs)) > 5_000
        r = await d.client.post(
            "/v1/batches", files=files(*((f"{i}.jpg", x) for i, x in enumerate(imgs)))
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert d.leftovers() == ([], 0, [])


@pytest.mark.parametrize(
    ("data", "field"),
    [({"runtime": "tpu9"}, "runtime"), ({"mode": "oracle"}, "mode"), ({"mode": "fastest"}, "mode")],
)
async def test_unknown_runtime_or_mode_names_the_field(
    daemon: Daemon, data: dict[str, str], field: str
) -> None:
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())), data=data)
    await assert_rejected(daemon, r, 422, "invalid_field", field=field)
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())), params=data)
    assert r.status_code == 422 and r.json()["error"]["field"] == field


async def test_unknown_form_field(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("a.jpg", jpeg())), data={"priority": "high"}
    )
    await assert_rejected(daemon, r, 422, "invalid_field", field="priority")


# Other resources ------------------------------------------------------------------------


async def test_unknown_batch_is_404(daemon: Daemon) -> None:
    r = await daemon.client.get("/v1/batches/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "batch_not_found"


async def test_runtimes_and_estimate(daemon: Daemon) -> None:
    rts = (await daemon.client.get("/v1/runtimes")).json()["runtimes"]
    assert [r["name"] for r in rts] == ["edge", "cpu", "gpu1", "gpu2"]
    edge, cpu = rts[0], rts[1]
    assert edge["available"] and edge["deployment_window"] == 0
    assert cpu["deployment_window"] >= 1 and cpu["recent_deployments"] == []
    assert {"slope", "intercept", "excess"} <= set(cpu["processing"])
    assert cpu["worth_probing"] and cpu["probe_cloud_s"] == 0.0  # no batch planned, no probe
    assert (await daemon.client.get("/v1/runtimes")).json()["uplink"] is None  # not checked

    est = (await daemon.client.get("/v1/estimate", params={"images": 100})).json()
    assert est["bytes"] == 100 * 212_000
    assert set(est["estimates"]) == {"edge", "cpu", "gpu1", "gpu2"}
    # The selector compares the expected totals (objective "expected", the default):
    # the edge's is its T_s; a cloud runtime with no deployment history carries the
    # prior timeout risk (1 %), priced at the timeout plus the fallback (the runtime
    # predicted soonest among the others).
    assert est["objective"] == "expected"
    e = est["estimates"]
    best = min(e, key=lambda n: e[n]["objective_s"])
    assert est["selector"] == best
    assert e["edge"]["objective_s"] == e["edge"]["total_s"] and e["edge"]["p_timeout"] == 0
    for n in ("cpu", "gpu1", "gpu2"):
        p = e[n]["p_timeout"]
        assert p == pytest.approx(0.01)
        fallback = min(e[m]["total_s"] for m in e if m != n)
        expected = (1 - p) * e[n]["total_s"] + p * (600 + fallback)
        assert e[n]["objective_s"] == pytest.approx(expected)
    bad = await daemon.client.get("/v1/estimate", params={"images": 0})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "images"


async def test_the_estimate_shows_the_deploy_deadline_and_the_pipelined_upload(
    tmp_path: Path,
) -> None:
    policy = {"deploy_deadline": True, "pipelined_upload": True}
    async with start_daemon(make_settings(tmp_path, policy=policy)) as d:
        # gpu1 ready in 5 s or in 500 s, half and half: worth giving up on at 5 s.
        for k, seconds in enumerate([5.0, 500.0] * 20):
            d.controller.predictor.observe_deployment(DeploymentSample("gpu1", k, seconds))
        est = (await d.client.get("/v1/estimate", params={"images": 300})).json()
    assert est["pipelined"] is True
    e = est["estimates"]
    assert e["gpu1"]["deadline_s"] == pytest.approx(5.0, abs=1.0)
    assert e["edge"]["deadline_s"] is None
    assert (est["selector"] == "gpu1") == ("deadline" in est["reason"])


async def test_unavailable_runtime_is_not_estimated(daemon: Daemon) -> None:
    daemon.controller.availability.mark_unavailable("gpu1", 1.0, "test")
    est = (await daemon.client.get("/v1/estimate", params={"images": 5})).json()
    assert "gpu1" not in est["estimates"]
    rts = {r["name"]: r for r in (await daemon.client.get("/v1/runtimes")).json()["runtimes"]}
    assert rts["gpu1"]["available"] is False
    await daemon.controller._side.wait()
    row = {r.name: r for r in daemon.controller.store.runtimes()}["gpu1"]
    assert row.available is False and row.unavailable_since == 1.0


async def test_runtimes_show_the_uplink_as_the_checks_see_it(tmp_path: Path) -> None:
    # The page's parts are rendered afresh for each request (no render_cache_s), so the
    # fragment shows what the API just said.
    fresh = {"ui": {"render_cache_s": 0.0}}
    async with (
        far_side() as link,
        start_daemon(checked_settings(tmp_path, link.url, **fresh)) as d,
    ):

        async def uplink_when(up: bool) -> dict[str, Any]:
            async with asyncio.timeout(10):
                for _ in itertools.count():
                    got = (await d.client.get("/v1/runtimes")).json()["uplink"]
                    if got is not None and got["up"] is up:
                        return cast(dict[str, Any], got)
                    await asyncio.sleep(0.02)
            raise AssertionError("unreachable")

        async def page() -> str:
            return (await d.client.get("/ui/fragments/status")).text

        got = await uplink_when(True)
        # (a check that times out on a loaded machine counts as an outage: count from here)
        seen = got["outages"]
        assert got["expected_wait_s"] == 0.0
        assert 'data-uplink="up"' in await page()
        await link.stop()
        got = await uplink_when(False)
        assert got["outages"] >= seen + 1 and got["down_since"] is not None
        assert got["expected_wait_s"] > 0.0
        assert 'data-uplink="down"' in await page() and "expected back in" in await page()


async def test_health_ready_metrics_openapi(daemon: Daemon) -> None:
    assert (await daemon.client.get("/healthz")).json() == {"status": "ok"}
    ready = await daemon.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
    await daemon.wait_done(r.json()["id"])
    await daemon.client.post("/v1/batches", files=files(("x.txt", b"nope")))
    text = (await daemon.client.get("/metrics")).text
    for line in (
        'stoic_batches{state="done"} 1.0',
        'stoic_batches_finished_total{runtime="edge",state="done"} 1.0',
        'stoic_decisions_total{mode="selector",runtime="edge"} 1.0',
        'stoic_ingest_rejected_total{code="not_an_image"} 1.0',
        "stoic_scheduling_overhead_seconds_count 1.0",
        'stoic_predicted_response_seconds_count{runtime="edge"} 1.0',
        'stoic_response_seconds_count{runtime="edge"} 1.0',
        'stoic_prediction_abs_error_seconds_count{runtime="edge"} 1.0',
        'stoic_runtime_available{runtime="gpu2"} 1.0',
    ):
        assert line in text, line
    spec = (await daemon.client.get("/openapi.json")).json()
    assert {"/v1/batches", "/v1/batches/{batch_id}", "/v1/runtimes", "/v1/estimate"} <= set(
        spec["paths"]
    )
    assert "multipart/form-data" in spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]
    assert (await daemon.client.get("/docs")).status_code == 200


async def assert_docs_load_offline(c: httpx.AsyncClient) -> None:
    """``/docs`` and ``/redoc`` load every script, style and icon from the daemon itself
    (an edge site may have no internet), and those load without a token too."""
    for page in ("/docs", "/redoc"):
        html = (await c.get(page)).text
        sources = re.findall(r"""(?:src|href)\s*[=:]\s*['"]([^'"]+)['"]""", html)
        assert sources, page
        for source in sources:
            assert source.startswith("/"), f"{page} loads {source}"
            r = await c.get(source)
            assert r.status_code == 200 and len(r.content) > 1000, source


async def test_unknown_route_has_the_error_shape(daemon: Daemon) -> None:
    r = await daemon.client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# Auth -----------------------------------------------------------------------------------


async def test_bearer_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"token": "s3cret"})
    async with start_daemon(settings) as d:
        c = d.client
        for path in ("/v1/batches", "/v1/runtimes", "/metrics", "/v1/estimate?images=1"):
            r = await c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post("/v1/batches", files=files(("a.jpg", jpeg())))
        assert r.status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await c.get("/v1/batches", headers=wrong)).status_code == 401
        assert d.leftovers() == ([], 0, [])
        # Health checks and the API description need no token.
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200
        await assert_docs_load_offline(c)
        good = {"Authorization": "Bearer s3cret"}
        assert (await c.get("/v1/batches", headers=good)).status_code == 200
        assert (await c.get("/metrics", headers=good)).status_code == 200
        r = await c.post("/v1/batches", files=files(("a.jpg", jpeg())), headers=good)
        assert r.status_code == 202


async def test_draining_daemon_refuses_batches_and_is_not_ready(daemon: Daemon) -> None:
    daemon.controller.request_stop()
    r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    ready = await daemon.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["controller"] == "draining"
    assert (await daemon.client.get("/healthz")).status_code == 200
    assert daemon.controller.store.count_batches(BatchState.QUEUED) == 0


# Hostile and careless uploads (issue 13) ---------------------------------------------


async def test_an_unknown_field_is_refused_before_the_rest_of_the_body_is_read(
    daemon: Daemon,
) -> None:
    boundary = "XyZ"
    sent = []

    async def flood() -> AsyncIterator[bytes]:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="f0"\r\n\r\nx\r\n'
        sent.append(len(head))
        yield head.encode()
        for i in range(1, 10_000):  # 10,000 distinct fields, never all read
            part = f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'
            chunk = (part + "x" * 1000 + "\r\n").encode()
            sent.append(len(chunk))
            yield chunk
        yield f"--{boundary}--\r\n".encode()

    r = await daemon.client.post(
        "/v1/batches",
        content=flood(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(daemon, r, 422, "invalid_field", field="f0")
    assert r.headers["connection"] == "close"
    # Refused at the first field: what was read is the reader's look-ahead, not 10 MB.
    assert sum(sent) <= READ_AHEAD_BYTES + 64 * 1024


async def test_a_repeated_field_is_refused_at_its_second_occurrence(daemon: Daemon) -> None:
    """A flood of one known field ends at its second copy (the last one no longer wins)."""
    boundary = "XyZ"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\nselector\r\n'
    body = (field * 50 + f"--{boundary}--\r\n").encode()
    r = await daemon.client.post(
        "/v1/batches",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(daemon, r, 422, "invalid_field", field="mode")
    assert "'mode' is given more than once" in r.json()["error"]["message"]


async def test_an_image_over_the_pixel_limit_is_refused_from_its_header(daemon: Daemon) -> None:
    huge = with_png_size(png(), 12_000, 12_000)
    r = await daemon.client.post("/v1/batches", files=files(("ok.jpg", jpeg()), ("huge.png", huge)))
    await assert_rejected(daemon, r, 413, "too_large", file="huge.png")
    assert "api.max_image_pixels" in r.json()["error"]["message"]


async def test_a_zip_of_junk_jpegs_stops_at_the_first(daemon: Daemon) -> None:
    real = jpeg(1)
    junk = real[: real.index(b"\xff\xda")] + b"\0" * 50_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(200):
            zf.writestr(f"junk-{i}.jpg", junk)
    r = await daemon.client.post("/v1/batches", files=files(("junk.zip", buf.getvalue())))
    await assert_rejected(daemon, r, 422, "corrupt_image", file="junk-0.jpg")


async def test_skip_invalid_skips_at_most_max_invalid_images(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"max_invalid_images": 2, "max_batch_images": 20})
    async with start_daemon(settings) as d:
        bad = [(f"{i}.txt", b"text") for i in range(3)]
        r = await d.client.post(
            "/v1/batches", files=files(("ok.jpg", jpeg()), *bad), params={"skip_invalid": "true"}
        )
        await assert_rejected(d, r, 422, "too_many_invalid", file="2.txt")
        r = await d.client.post(
            "/v1/batches", files=files(("ok.jpg", jpeg()), *bad[:2]), data={"skip_invalid": "1"}
        )
        assert r.status_code == 202 and len(r.json()["skipped"]) == 2


async def test_skip_invalid_after_the_files_does_not_rescue_them(daemon: Daemon) -> None:
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="t.txt"\r\n'
        f"\r\nhello\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="skip_invalid"\r\n\r\ntrue\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    r = await daemon.client.post(
        "/v1/batches",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    await assert_rejected(daemon, r, 415, "not_an_image", file="t.txt")


async def test_a_corrupt_image_message_shows_no_python_repr(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/v1/batches", files=files(("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64))
    )
    await assert_rejected(daemon, r, 422, "corrupt_image", file="x.png")
    message = r.json()["error"]["message"]
    assert " at 0x" not in message and "object" not in message and "<" not in message


async def test_a_store_failure_answers_503_without_internals(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kw: Any) -> Any:
        raise StoreError(
            "database sqlite:////srv/secret/stoic.db: (sqlite3.OperationalError) disk I/O "
            "error [SQL: SELECT batches.id FROM batches]"
        )

    monkeypatch.setattr(daemon.controller.store, "list_batches", broken)
    monkeypatch.setattr(daemon.controller.store, "count_batches", broken)
    r = await daemon.client.get("/v1/batches")
    assert r.status_code == 503
    assert r.json()["error"] == {
        "code": "store_unavailable",
        "message": "the database is unavailable; see the daemon's log",
    }
    ready = await daemon.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == "unavailable; see the daemon's log"
    for text in (r.text, ready.text):
        assert "secret" not in text and "SELECT" not in text and "sqlite" not in text
