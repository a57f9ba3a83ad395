"""One read model of the runtimes (:mod:`stoic.daemon.runtime_view`): ``GET /v1/runtimes``
and the operator page render the same record, so they cannot disagree."""

from __future__ import annotations

import re
from pathlib import Path

from stoic.api.ui.routes import fmt_when
from stoic.clock import local_midnight
from stoic.daemon.controller import Controller
from stoic.daemon.runtime_view import built, runtime_states, uplink_state
from stoic.storage.objectstore import make_object_store
from stoic.storage.package import model_key
from stoic.store import Store
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.images import jpeg
from tests.support.settings import make_settings


def page_fit(html: str, runtime: str) -> tuple[int, str]:
    """(samples, method) of the T_p fit the operator page shows for ``runtime``."""
    card = html.split(f'data-runtime="{runtime}"', 1)[1].split("</article>", 1)[0]
    found = re.search(r"T_p fit.*?\((\d+) samples, ([\w-]+)[;)]", card, re.DOTALL)
    assert found, card
    return int(found[1]), found[2]


async def api_fits(d: Daemon) -> dict[str, tuple[int, str]]:
    body = (await d.client.get("/v1/runtimes")).json()
    return {
        r["name"]: (r["processing"]["n_samples"], r["processing"]["method"])
        for r in body["runtimes"]
    }


async def page_fits(d: Daemon, names: list[str]) -> dict[str, tuple[int, str]]:
    html = (await d.client.get("/ui/fragments/runtimes")).text
    return {name: page_fit(html, name) for name in names}


async def test_the_api_and_the_page_show_the_fit_of_the_current_default_version(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, ui={"render_cache_s": 0.0})  # each request renders
    make_object_store(settings).put_bytes(model_key("classify", "2"), b"a model")
    async with start_daemon(settings) as d:
        r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
        assert (await d.wait_done(r.json()["id"]))["state"] == "done"
        before = await api_fits(d)
        assert before["edge"][0] == 1  # version 1's first processing sample
        assert await page_fits(d, list(before)) == before

        r = await d.client.put("/v1/models/default", json={"version": "2"})
        assert r.status_code == 200, r.text
        after = await api_fits(d)
        assert after["edge"][0] == 0  # version 2 has not run yet
        assert await page_fits(d, list(after)) == after
        assert 'data-version="2"' in (await d.client.get("/ui/fragments/runtimes")).text


async def test_an_unavailable_runtime_is_away_since_the_same_instant_in_both(
    tmp_path: Path,
) -> None:
    async with start_daemon(make_settings(tmp_path)) as d:
        d.controller.availability.mark_unavailable("gpu1", 1.0, "deployment timed out")
        rts = {r["name"]: r for r in (await d.client.get("/v1/runtimes")).json()["runtimes"]}
        assert (rts["gpu1"]["available"], rts["gpu1"]["unavailable_since"]) == (False, 1.0)
        assert all(rts[n]["unavailable_since"] is None for n in ("edge", "cpu", "gpu2"))
        html = (await d.client.get("/ui/fragments/runtimes")).text
        card = html.split('data-runtime="gpu1"', 1)[1].split("</article>", 1)[0]
        assert f"away since {fmt_when(1.0)}: deployment timed out" in card


async def test_the_page_shows_the_processing_probes_the_api_shows(tmp_path: Path) -> None:
    async with start_daemon(make_settings(tmp_path)) as d:
        states = {s.name: s for s in runtime_states(d.controller, deployments=1)}
        assert list(states) == ["edge", "cpu", "gpu1", "gpu2"]
        assert states["edge"].deployment_now_s is None and states["edge"].deployment_window == 0
        assert states["cpu"].deployment_now_s is not None
        api = {r["name"]: r for r in (await d.client.get("/v1/runtimes")).json()["runtimes"]}
        html = (await d.client.get("/ui/fragments/runtimes")).text
        for name in ("cpu", "gpu1", "gpu2"):
            card = html.split(f'data-runtime="{name}"', 1)[1].split("</article>", 1)[0]
            worth = re.search(r'data-worth-probing="(true|false)"', card)
            assert worth and worth[1] == str(api[name]["worth_probing"]).lower()
            assert f"{api[name]['probe_cloud_s']:.1f} s pod time" in card
        assert "probe" not in html.split('data-runtime="edge"', 1)[1].split("</article>")[0]


async def test_a_warm_pod_shows_in_both_and_its_seconds_are_cloud_usage_warm(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, keepalive={"enabled": True, "fixed_s": 600.0}, ui={"render_cache_s": 0.0}
    )
    async with start_daemon(settings) as d:
        r = await d.client.post(
            "/v1/batches", files=files(("a.jpg", jpeg())), data={"runtime": "gpu1"}
        )
        assert (await d.wait_done(r.json()["id"]))["state"] == "done"
        api = {r["name"]: r for r in (await d.client.get("/v1/runtimes")).json()["runtimes"]}
        (pod,) = api["gpu1"]["warm_pods"]
        assert pod["keep_alive_s"] == 600.0 and pod["until"] == pod["since"] + 600.0
        assert all(api[n]["warm_pods"] == [] for n in ("edge", "cpu", "gpu2"))
        html = (await d.client.get("/ui/fragments/runtimes")).text
        card = html.split('data-runtime="gpu1"', 1)[1].split("</article>", 1)[0]
        assert 'data-warm-pods="1"' in card and f"kept until {fmt_when(pod['until'])}" in card
        assert d.fake.live != {}
    assert d.fake.live == {}  # torn down at stop, its idle seconds counted as "warm"
    with Store(settings.database_url) as store:
        causes = {u.cause for u in store.cloud_usage_on(local_midnight(pod["since"]))}
    assert causes == {"warm"}


async def test_nothing_is_shown_before_the_controller_is_built(tmp_path: Path) -> None:
    c = Controller(make_settings(tmp_path))
    assert not built(c)
    assert runtime_states(c, deployments=10) == []
    assert uplink_state(c) is None
