"""The operator page in-process (httpx ASGITransport, fake backend, no TensorFlow).

What a browser would see is parsed into a small tree (:mod:`tests.support.html`), so
the assertions are about elements and their text, not about substrings of markup.
``tests/test_ui_browser.py`` loads the page in a real headless Chromium.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from stoic.api.app import create_app
from stoic.api.ui import charts, session, views
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.store.store import CloudUsage, UsageRow
from stoic.values import BatchState
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.html import dom
from tests.support.images import jpeg, zip_of
from tests.support.settings import make_settings

TOKEN = "s3cret-token"
XSS = "<script>window.stoicXss=1</script>.jpg"

# Fixtures ------------------------------------------------------------------------------


def fake_backend() -> FakeBackend:
    return FakeBackend(
        {
            "edge": FakeSpec(per_image_s=0.0),
            "cpu": FakeSpec(deploy_s=0.02, per_image_s=0.0),
            "gpu1": FakeSpec(deploy_s=0.03, per_image_s=0.0),
            "gpu2": FakeSpec(deploy_s=0.04, per_image_s=0.0),
        }
    )


@pytest.fixture
async def daemon(tmp_path: Path):
    async with start_daemon(make_settings(tmp_path), fake_backend()) as d:
        yield d


@pytest.fixture
async def locked(tmp_path: Path):
    """A daemon with ``api.token`` set; its client sends no credentials."""
    async with start_daemon(make_settings(tmp_path, api={"token": TOKEN}), fake_backend()) as d:
        yield d


async def submit(d: Daemon, *items: tuple[str, bytes], **params: str) -> str:
    r = await d.client.post("/v1/batches", files=files(*items), params=params)
    assert r.status_code == 202, r.text
    batch_id: str = r.json()["id"]
    return batch_id


def assert_page_headers(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"].startswith("text/html")


# The page ------------------------------------------------------------------------------


async def test_page_shows_batches_runtimes_and_usage(daemon: Daemon) -> None:
    first = await submit(daemon, ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)))
    pinned = await submit(daemon, ("c.jpg", jpeg(3)), runtime="gpu1")
    for batch_id in (first, pinned):
        assert (await daemon.wait_done(batch_id))["state"] == "done"

    r = await daemon.client.get("/ui")
    assert r.status_code == 200
    assert_page_headers(r)
    page = dom(r.text)

    # Status: health, readiness, the queue, the mode.
    status = page.find("section", id="status")
    assert status.find("dd", data_ready="true").text() == "ready"
    assert "selector" in status.text() and "0 queued" in status.text()
    assert "uplink" not in status.text()  # no uplink checks configured
    assert status.attrs["data-refresh"] == "/ui/fragments/status"

    # Batches, newest first, with where they ran and predicted against measured T_s.
    rows = page.find("section", id="batches").find_all("tr", data_batch=pinned)
    assert len(rows) == 1 and rows[0].attrs["data-runtime"] == "gpu1"
    assert rows[0].find("td", class_="runtime").text() == "gpu1"
    assert "pinned by the user to gpu1" in rows[0].find("td", class_="reason").text()
    assert rows[0].find("a").attrs["href"] == f"/ui/batches/{pinned}"
    order = [tr.attrs["data-batch"] for tr in page.find_all("tr") if "data-batch" in tr.attrs]
    assert order == [pinned, first]

    # Runtimes: gpu1 deployed once (a chart point) and produced one result (two points:
    # predicted and actual); gpu2 never ran: its charts say so.
    gpu1 = page.find("article", data_runtime="gpu1")
    deploy_chart, accuracy_chart = gpu1.find_all("svg", class_="chart")
    assert len(deploy_chart.find("g", data_series="ok").find_all("circle")) == 1
    assert len(accuracy_chart.find("g", data_series="predicted").find_all("circle")) == 1
    assert len(accuracy_chart.find("g", data_series="actual").find_all("circle")) == 1
    gpu2 = page.find("article", data_runtime="gpu2")
    assert all("empty" in svg.attrs["class"] for svg in gpu2.find_all("svg"))
    assert "available" in gpu2.find("p", class_="avail").text()

    # Usage today: two batches, one per runtime, in the share chart and the table.
    usage = page.find("section", id="usage")
    shares = {g.attrs["data-series"] for g in usage.find_all("g", class_="series-share")}
    assert shares == {"edge", "gpu1"}
    facts = {div.find("dt").text(): div.find("dd").text() for div in usage.find_all("div")}
    assert facts["batches finished"] == "2"
    assert float(usage.find("dd").attrs["data-cloud-used"]) > 0  # gpu1 was held

    # The upload form offers the modes and runtimes the API accepts.
    form = page.find("section", id="upload").find("form")
    assert form.attrs["action"] == "/ui/batches"
    assert form.attrs["enctype"] == "multipart/form-data"
    mode = form.find("select", name="mode")
    assert [o.attrs["value"] for o in mode.find_all("option")] == [
        "selector",
        "selector-paper",
        "duplicator",
        "share",
    ]
    runtime = form.find("select", name="runtime")
    assert [o.attrs["value"] for o in runtime.find_all("option")] == [
        "",
        "edge",
        "cpu",
        "gpu1",
        "gpu2",
    ]


async def test_fragments_are_the_parts_of_the_page(daemon: Daemon) -> None:
    batch_id = await submit(daemon, ("a.jpg", jpeg(1)))
    await daemon.wait_done(batch_id)
    for part in ("status", "batches", "runtimes", "usage"):
        r = await daemon.client.get(f"/ui/fragments/{part}", headers={"X-Stoic-Fragment": "1"})
        assert r.status_code == 200, part
        assert_page_headers(r)
        assert "<html" not in r.text  # a fragment, not a page
    r = await daemon.client.get("/ui/fragments/batches", params={"batches": 1})
    assert len(dom(r.text).find_all("tr", data_batch=batch_id)) == 1
    r = await daemon.client.get("/ui/fragments/nothing")
    assert r.status_code == 404
    r = await daemon.client.get("/ui/fragments/batches", params={"batches": 0})
    assert r.status_code == 422


async def test_batch_page_has_the_estimate_table_and_results(daemon: Daemon) -> None:
    batch_id = await submit(daemon, ("a.jpg", jpeg(1)), ("b.jpg", jpeg(2)), mode="duplicator")
    body = await daemon.wait_done(batch_id)
    r = await daemon.client.get(f"/ui/batches/{batch_id}")
    assert r.status_code == 200
    assert_page_headers(r)
    page = dom(r.text)
    section = page.find("section", id="batch")
    assert "data-refresh" not in section.attrs  # finished: nothing left to refresh
    table = page.find("table", class_="estimates")
    runtimes = [tr.find("td").text() for tr in table.find("tbody").find_all("tr")]
    assert set(runtimes[:-1]) == set(body["decision"]["estimates"])
    assert runtimes[-1].startswith("measured")
    results = page.find("table", class_="results").find("tbody").find_all("tr")
    assert [tr.find("td", class_="label").text() for tr in results] == ["fake:edge", "fake:edge"]
    assert page.find("p", class_="labels").text().strip() == "fake:edge × 2"
    assert body["decision"]["reason"] in page.find("p", class_="reason").text()

    r = await daemon.client.get("/ui/batches/no-such-batch")
    assert r.status_code == 404 and "no-such-batch" in dom(r.text).find("p", class_="error").text()


async def test_a_queued_batch_page_keeps_refreshing(daemon: Daemon) -> None:
    daemon.fake.script_invokes("edge", 30.0)  # the batch stays running
    batch_id = await submit(daemon, ("a.jpg", jpeg(1)))
    page = dom((await daemon.client.get(f"/ui/batches/{batch_id}")).text)
    section = page.find("section", id="batch")
    assert section.attrs["data-refresh"] == f"/ui/fragments/batch/{batch_id}"
    assert "results appear when it is done" in section.text()
    fragment = await daemon.client.get(f"/ui/fragments/batch/{batch_id}")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    status = dom((await daemon.client.get("/ui/fragments/status")).text)
    assert "1 running" in status.text()
    for task in list(daemon.controller.running.values()):
        task.cancel()


async def test_user_supplied_names_are_escaped(daemon: Daemon) -> None:
    """File names, archive member names and the reasons built from them are text."""
    evil = "<img src=x onerror=alert(1)>.txt"
    batch_id = await submit(
        daemon, ("ok.jpg", jpeg(1)), (XSS, b"not an image"), (evil, b"nope"), skip_invalid="true"
    )
    await daemon.wait_done(batch_id)
    r = await daemon.client.get(f"/ui/batches/{batch_id}")
    assert "<script>window.stoicXss" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;window.stoicXss=1&lt;/script&gt;.jpg" in r.text
    page = dom(r.text)
    names = [td.text() for td in page.find("table", class_="skipped").find_all("td", class_="file")]
    assert names == [XSS, evil]
    # The only script is the page's own, and no element came from a file name.
    assert [s.attrs.get("src") for s in page.find_all("script")] == ["/ui/static/ui.js"]
    assert page.find_all("img") == []


async def test_the_upload_form_submits_a_batch(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/ui/batches",
        files=files(("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))),
        data={"mode": "duplicator", "runtime": "", "skip_invalid": "true"},
        headers={"Origin": "http://stoic"},
    )
    assert r.status_code == 303, r.text
    batch_id = r.headers["location"].rsplit("/", 1)[1]
    assert r.headers["location"] == f"/ui/batches/{batch_id}"
    record = daemon.controller.store.get_batch(batch_id)
    assert (record.n_images, record.mode.value, record.pinned_runtime) == (2, "duplicator", None)

    r = await daemon.client.post(
        "/ui/batches", files=files(("a.jpg", jpeg(1))), data={"mode": "selector", "runtime": "gpu2"}
    )
    assert r.status_code == 303
    pinned = daemon.controller.store.get_batch(r.headers["location"].rsplit("/", 1)[1])
    assert pinned.pinned_runtime == "gpu2"

    archive = zip_of({"cam/<x>.jpg": jpeg(4), "cam/y.jpg": jpeg(5)})
    r = await daemon.client.post("/ui/batches", files=files(("hour-11.zip", archive)))
    assert r.status_code == 303
    zipped = await daemon.wait_done(r.headers["location"].rsplit("/", 1)[1])
    assert zipped["n_images"] == 2 and zipped["state"] == "done"


@pytest.mark.parametrize(
    ("upload", "data", "status", "needle"),
    [
        ([("a.jpg", jpeg(1))], {"runtime": "<b>nope</b>"}, 422, "unknown runtime '<b>nope</b>'"),
        ([(XSS, b"plain text")], {}, 415, XSS),
        ([("a.jpg", jpeg(1))], {"mode": "baseline"}, 422, "unknown mode"),
        # the form sent with no file chosen: the browser's empty file part
        ([("", b"")], {"mode": "selector"}, 422, "choose at least one image"),
    ],
)
async def test_a_refused_upload_says_why_as_text(
    daemon: Daemon, upload, data, status: int, needle: str
) -> None:
    r = await daemon.client.post("/ui/batches", files=files(*upload), data=data)
    assert r.status_code == status
    assert_page_headers(r)
    assert needle in dom(r.text).find("p", class_="error").text()
    assert "<b>nope" not in r.text and "<script>window" not in r.text
    assert daemon.controller.store.count_batches() == 0


async def test_a_form_posted_from_another_site_is_refused(daemon: Daemon) -> None:
    r = await daemon.client.post(
        "/ui/batches", files=files(("a.jpg", jpeg(1))), headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert daemon.controller.store.count_batches() == 0


async def test_landing_page_links_the_operator_page(daemon: Daemon) -> None:
    r = await daemon.client.get("/")
    assert r.status_code == 200
    hrefs = [a.attrs["href"] for a in dom(r.text).find_all("a")]
    assert "/ui" in hrefs and "/docs" in hrefs and "/metrics" in hrefs
    # Without a token there is nothing to log into.
    login = await daemon.client.get("/ui/login")
    assert (login.status_code, login.headers["location"]) == (303, "/ui")
    assert (await daemon.client.get("/ui/static/ui.js")).status_code == 200


async def test_the_page_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ui={"enabled": False})
    async with start_daemon(settings, fake_backend()) as d:
        assert (await d.client.get("/ui")).status_code == 404
        assert (await d.client.get("/ui/static/ui.css")).status_code == 404
        r = await d.client.get("/")
        assert r.status_code == 200 and "/ui" not in [
            a.attrs["href"] for a in dom(r.text).find_all("a")
        ]


# Auth ----------------------------------------------------------------------------------


async def test_with_a_token_the_page_refuses_requests_without_it(locked: Daemon) -> None:
    c = locked.client
    r = await c.get("/ui")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="stoic"'
    form = dom(r.text).find("form", class_="login")
    assert form.attrs["method"] == "post" and form.attrs["action"] == "/ui/login"
    assert form.find("input", name="token").attrs["type"] == "password"
    assert TOKEN not in r.text
    for path in ("/ui/fragments/status", "/ui/fragments/batches", "/ui/batches/x"):
        r = await c.get(path, headers={"X-Stoic-Fragment": "1"})
        assert (r.status_code, r.text) == (401, "login required"), path
    r = await c.post("/ui/batches", files=files(("a.jpg", jpeg(1))))
    assert r.status_code == 401
    assert locked.controller.store.count_batches() == 0
    assert (await c.get("/ui", headers={"Authorization": "Bearer wrong"})).status_code == 401
    # Open without a token: the landing page, the stylesheet and script, the login form.
    for path in ("/", "/ui/static/ui.css", "/ui/login"):
        assert (await c.get(path)).status_code == 200, path


async def test_a_bearer_token_opens_the_page_for_scripts(locked: Daemon) -> None:
    r = await locked.client.get("/ui", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert TOKEN not in r.text


async def test_login_sets_a_strict_http_only_cookie_that_is_not_the_token(locked: Daemon) -> None:
    c = locked.client
    wrong = await c.post("/ui/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    assert "set-cookie" not in wrong.headers

    r = await c.post("/ui/login", data={"token": TOKEN}, headers={"Origin": "http://stoic"})
    assert (r.status_code, r.headers["location"]) == (303, "/ui")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert TOKEN not in value
    # httpx keeps the cookie: the page, its parts and the upload form open ...
    assert (await c.get("/ui")).status_code == 200
    assert (await c.get("/ui/fragments/status")).status_code == 200
    up = await c.post("/ui/batches", files=files(("a.jpg", jpeg(1))))
    assert up.status_code == 303
    # ... but the JSON API keeps to bearer tokens.
    assert (await c.get("/v1/batches")).status_code == 401
    # Log out: the cookie is cleared, the page asks again.
    out = await c.post("/ui/logout")
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    assert (await c.get("/ui")).status_code == 401


async def test_forged_cookies_are_refused(locked: Daemon) -> None:
    """A session id the daemon did not hand out opens nothing (tests/test_ui_access.py
    has logout, expiry and throttling)."""
    cases = {
        "made up": "A" * 43,
        "the token itself": TOKEN,
        "empty": "",
        "garbage": "x.y",
    }
    for name, value in cases.items():
        r = await locked.client.get("/ui", headers={"Cookie": f"{session.COOKIE}={value}"})
        assert r.status_code == 401, name


# Charts and views ----------------------------------------------------------------------


def test_time_chart_draws_every_finite_point_and_escapes_text() -> None:
    svg = charts.time_chart(
        "<title> & co",
        [
            charts.Series("a<b>", "predicted", [(0.0, 1.0), (60.0, 2.0), (120.0, float("nan"))]),
            charts.Series("act", "actual", [(30.0, 5.0)], tips=["<script>tip</script>"]),
        ],
    )
    tree = dom(str(svg)).find("svg")
    assert tree.attrs["class"] == "chart"
    assert tree.attrs["aria-label"] == "<title> & co"
    assert len(tree.find("g", data_series="a<b>").find_all("circle")) == 2
    assert len(tree.find("g", data_series="a<b>").find_all("polyline")) == 1
    assert tree.find("g", data_series="act").find("title").text() == "<script>tip</script>"
    assert "<script>" not in str(svg) and "<b>" not in str(svg)
    # The y axis starts at 0 and its top tick is above the largest value.
    ticks = [
        float(re.sub(r"[^\d.]", "", t.text()))
        for t in tree.find("g", class_="axes").find_all("text")[:-3]
    ]
    assert ticks[0] == 0 and ticks[-1] >= 5.0


def test_empty_charts_say_why() -> None:
    svg = dom(str(charts.time_chart("T_d", [charts.Series("ok", "ok", [])], empty="none yet")))
    node = svg.find("svg")
    assert "empty" in node.attrs["class"].split()
    assert node.find("text", class_="chart-empty").text() == "none yet"
    share = dom(str(charts.share_chart("share", [])))
    assert "empty" in share.find("svg").attrs["class"].split()


def test_share_chart_bars_are_proportional() -> None:
    tree = dom(str(charts.share_chart("s", [("edge", 3), ("gpu1", 1)])))
    widths = {
        g.attrs["data-series"]: float(g.find("rect").attrs["width"])
        for g in tree.find_all("g", class_="series-share")
    }
    assert widths["edge"] == pytest.approx(3 * widths["gpu1"])
    assert "75%" in tree.find("g", data_series="edge").text()


@pytest.mark.parametrize(
    ("span", "step"), [(1.0, 0.5), (7.3, 2.0), (45.0, 20.0), (900.0, 500.0), (0.0, 1.0)]
)
def test_nice_steps(span: float, step: float) -> None:
    assert charts.nice_step(span) == step


def test_usage_view_counts_results_and_cloud_seconds() -> None:
    rows = [
        UsageRow("gpu1", "gpu1", BatchState.DONE, 3, 90.0, 0.0),
        UsageRow("gpu1", "edge", BatchState.DONE, 1, 40.0, 40.0),  # duplicator, edge won
        UsageRow("edge", "edge", BatchState.DONE, 2, 0.0, 0.0),
        UsageRow("cpu", None, BatchState.FAILED, 1, 0.0, 0.0),
    ]
    outside = [  # the store's day rows: bootstrap runs and probes
        CloudUsage("gpu1", "bootstrap", 12.0),
        CloudUsage("gpu1", "probe", 3.0),
        CloudUsage("gpu2", "probe", 5.0),
    ]
    u = views.usage_view(rows, 0.0, ["edge", "cpu", "gpu1"], outside)
    assert (u.batches, u.failed, u.cloud_used_s, u.cloud_wasted_s) == (7, 1, 150.0, 40.0)
    assert u.by_cause == {"batch": 130.0, "bootstrap": 12.0, "probe": 8.0}
    assert [
        (r.name, r.results, r.batch_s, r.bootstrap_s, r.probe_s, r.wasted_s) for r in u.per_runtime
    ] == [
        ("edge", 3, 0.0, 0.0, 0.0, 0.0),
        ("cpu", 0, 0.0, 0.0, 0.0, 0.0),
        ("gpu1", 3, 130.0, 12.0, 3.0, 40.0),
        ("gpu2", 0, 0.0, 0.0, 5.0, 0.0),  # probed only: still on the page
    ]
    assert u.per_runtime[2].used_s == 145.0
    shares = {g.attrs["data-series"] for g in dom(str(u.share_chart)).find_all("g")}
    assert shares == {"edge", "gpu1", "failed"}


def test_local_midnight() -> None:
    now = time.time()
    midnight = views.local_midnight(now)
    assert 0 <= now - midnight < 25 * 3600
    assert time.localtime(midnight)[3:6] == (0, 0, 0)


def test_the_page_is_not_part_of_the_rest_api(tmp_path: Path) -> None:
    paths = create_app(make_settings(tmp_path)).openapi()["paths"]
    assert "/v1/batches" in paths
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


async def test_a_store_failure_is_a_page_not_json(daemon: Daemon, monkeypatch) -> None:
    from stoic.errors import StoreError

    def broken(*_args, **_kw):
        raise StoreError("database sqlite:///x: disk I/O error")

    monkeypatch.setattr(daemon.controller.store, "list_batches", broken)
    monkeypatch.setattr(daemon.controller.store, "get_batch", broken)
    for path in ("/ui", "/ui/fragments/batches", "/ui/batches/x"):
        r = await daemon.client.get(path)
        assert r.status_code == 503, path
        assert "disk I/O error" in dom(r.text).find("p", class_="error").text()
    assert (await daemon.client.get("/ui/fragments/status")).status_code == 200
