"""The default application version: ``PUT/GET /v1/models/default`` and ``stoic model
default``, with the fake backend (no TensorFlow: the daemon only checks that the
version's model is stored; the model's own checks are ``stoic model push``'s, in
tests/test_model_push.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.cli import app as cli_app
from stoic.storage.objectstore import make_object_store
from stoic.storage.package import model_key
from stoic.store import Store
from tests.support.daemon import Daemon, files, http_daemon, start_daemon
from tests.support.images import jpeg
from tests.support.settings import make_settings


def store_model(settings, version: str, app: str = "classify") -> str:
    """Stand in for ``stoic model push``: the daemon only looks at the key."""
    key = model_key(app, version)
    make_object_store(settings).put_bytes(key, b"a model")
    return key


async def submit(d: Daemon, name: str = "a.jpg") -> str:
    r = await d.client.post("/v1/batches", files=files((name, jpeg())))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def test_default_is_the_settings_until_set(tmp_path: Path) -> None:
    async with start_daemon(make_settings(tmp_path)) as d:
        r = await d.client.get("/v1/models/default")
        assert r.status_code == 200
        assert r.json() == {
            "app": "classify",
            "version": "1",
            "model_key": "models/classify/1/model.keras",
            "source": "settings",
            "updated_at": None,
            "previous": None,
        }


async def test_set_default_changes_the_version_of_new_batches_and_bootstraps_it(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, controller={"bootstrap": True, "bootstrap_scope": "all"})
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with start_daemon(settings, fake) as d:
        first = await d.wait_done(await submit(d))
        assert first["app_version"] == "1"
        assert d.controller.store.count_processing_samples("classify", "2") == 0

        store_model(settings, "2")
        r = await d.client.put("/v1/models/default", json={"version": "2"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == "2" and body["previous"] == "1"
        assert body["source"] == "store" and body["updated_at"] is not None
        assert body["model_key"] == "models/classify/2/model.keras"
        assert (await d.client.get("/v1/models/default")).json()["version"] == "2"

        second = await d.wait_done(await submit(d))
        assert second["state"] == "done" and second["app_version"] == "2"
        # The new version was bootstrapped (two runs per runtime) with sub-packages of
        # its first batch, before that batch, and its processing samples are its own.
        boot2 = [e for e in fake.ops("invoke") if e.batch_id.startswith(second["id"] + ":")]
        assert len(boot2) == 2 * 4 and all(":bootstrap:" in e.batch_id for e in boot2)
        for runtime in ("edge", "cpu", "gpu1", "gpu2"):
            assert d.controller.store.count_processing_samples("classify", "2", runtime) >= 2
        assert not d.controller.scheduler.needs_bootstrap("classify", "2")


async def test_the_default_survives_a_restart_and_is_not_bootstrapped_again(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, controller={"bootstrap": True})
    store_model(settings, "2")
    async with start_daemon(settings) as d:
        assert (await d.client.put("/v1/models/default", json={"version": "2"})).status_code == 200
        await d.wait_done(await submit(d))
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with start_daemon(settings, fake) as d:
        body = (await d.client.get("/v1/models/default")).json()
        assert body["version"] == "2" and body["source"] == "store"
        done = await d.wait_done(await submit(d))
        assert done["app_version"] == "2"
        assert not [e for e in fake.ops("invoke") if ":bootstrap:" in e.batch_id]
    with Store(settings.database_url) as store:
        stored = store.default_version("classify")
        assert stored is not None and stored.version == "2"


async def test_queued_batches_keep_their_version(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store_model(settings, "2")
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    fake.script_invokes("edge", InvokeStep(0.5))  # the first batch holds the only slot
    async with start_daemon(settings, fake) as d:
        blocker = await submit(d, "b.jpg")
        queued = await submit(d, "q.jpg")
        assert (await d.client.get(f"/v1/batches/{queued}")).json()["state"] == "queued"
        assert (await d.client.put("/v1/models/default", json={"version": "2"})).status_code == 200
        after = await submit(d, "n.jpg")
        versions = [(await d.wait_done(b))["app_version"] for b in (blocker, queued, after)]
        assert versions == ["1", "1", "2"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"),
    [
        ({"version": "9"}, 404, "model_not_found", None),
        ({"version": "../x"}, 422, "invalid_field", "version"),
        ({"version": "2", "app": "other"}, 422, "invalid_field", "app"),
        ({}, 422, "invalid_field", "version"),
    ],
)
async def test_refused_defaults_change_nothing(
    tmp_path: Path, payload: dict[str, str], status: int, code: str, field: str | None
) -> None:
    settings = make_settings(tmp_path)
    store_model(settings, "2")
    async with start_daemon(settings) as d:
        r = await d.client.put("/v1/models/default", json=payload)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code and error.get("field") == field
        if code == "model_not_found":
            assert "models/classify/9/model.keras" in error["message"]
            assert "stoic model push" in error["message"]
        assert (await d.client.get("/v1/models/default")).json()["version"] == "1"
        assert d.controller.store.default_version("classify") is None
        assert (await d.wait_done(await submit(d)))["app_version"] == "1"


async def test_needs_the_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"token": "s3cret"})
    store_model(settings, "2")
    async with start_daemon(settings, token=None) as d:
        r = await d.client.put("/v1/models/default", json={"version": "2"})
        assert r.status_code == 401
        assert (await d.client.get("/v1/models/default")).status_code == 401
        ok = await d.client.put(
            "/v1/models/default",
            json={"version": "2"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert ok.status_code == 200


# The command line, against a real HTTP server --------------------------------------------


async def test_model_default_command(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api={"token": "tok"})
    store_model(settings, "2")
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli_app, ["model", "default", *args, "--token", "tok"])

    async with http_daemon(settings) as (url, _ctl):
        shown = await asyncio.to_thread(run, "--url", url)
        assert shown.exit_code == 0, shown.output
        assert "classify version 1 (models/classify/1/model.keras)" in shown.output
        assert "from the settings" in shown.output

        changed = await asyncio.to_thread(run, "--url", url, "--version", "2")
        assert changed.exit_code == 0, changed.output
        assert "classify version 2" in changed.output and "was 1" in changed.output

        missing = await asyncio.to_thread(run, "--url", url, "--version", "3")
        assert missing.exit_code != 0
        assert "HTTP 404 model_not_found" in str(missing.exception)
