"""One read model of the runtimes (:mod:`stoic.daemon.runtime_view`): ``GET /v1/runtimes``
and the operator page render the same record, so they cannot disagree."""

from __future__ import annotations

import re
from pathlib import Path

from stoic.storage.objectstore import make_object_store
from stoic.storage.package import model_key
from tests.test_api import Daemon, files, jpeg, make_settings, start_daemon


def page_fit(html: str, runtime: str) -> tuple[int, str]:
    """(samples, method) of the T_p fit the operator page shows for ``runtime``."""
    card = html.split(f'data-runtime="{runtime}"', 1)[1].split("</article>", 1)[0]
    found = re.search(r"T_p fit.*?\((\d+) samples, ([\w-]+)\)", card, re.DOTALL)
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
    settings = make_settings(tmp_path)
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
