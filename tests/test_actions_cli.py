"""``stoic batch cancel|retry``, ``stoic drain`` and ``stoic runtime disable|enable``
against the app under uvicorn on a loopback port (a real HTTP server, the fake backend),
with a token: each prints one line, and a refusal is one line naming the cause."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.cli import app as cli_app
from stoic.values import BatchState
from tests.support.daemon import http_daemon
from tests.support.images import jpeg
from tests.support.settings import make_settings

TOKEN = "tok"


async def stoic(url: str, *args: str) -> Any:
    """``stoic *args --url URL --token TOKEN``, in a thread (it blocks on HTTP)."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli_app, [*args, "--url", url, "--token", TOKEN])


async def test_the_operator_commands(tmp_path: Path) -> None:
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    fake.script_invokes("edge", InvokeStep(3600.0))
    settings = make_settings(tmp_path, api={"token": TOKEN})
    async with (
        http_daemon(settings, fake) as (url, ctl),
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
        ) as api,
    ):
        r = await api.post("/v1/batches", files=[("files", ("a.jpg", jpeg(1), "image/jpeg"))])
        batch_id = r.json()["id"]
        async with asyncio.timeout(20):
            while not fake.ops("invoke", "edge"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        drained = await stoic(url, "drain")
        assert drained.exit_code == 0, drained.output
        assert "drained since" in drained.output and "by token from 127.0.0.1" in drained.output
        assert "1 batch(es) still running" in drained.output
        shown = await stoic(url, "drain", "--status", "--json")
        assert shown.exit_code == 0 and '"drained": true' in shown.output

        cancelled = await stoic(url, "batch", "cancel", batch_id)
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.output.strip() == (
            f"batch {batch_id}: cancelled (cancelled by token from 127.0.0.1)"
        )
        assert fake.ops("invoke-cancelled", "edge") and not fake.live
        again = await stoic(url, "batch", "cancel", batch_id)
        assert again.exit_code != 0 and "HTTP 409 conflict" in str(again.exception)

        retried = await stoic(url, "batch", "retry", batch_id)
        assert retried.exit_code == 0, retried.output
        assert retried.output.strip() == f"batch {batch_id}: queued again"
        undrained = await stoic(url, "drain", "--off")
        assert undrained.exit_code == 0 and "claiming batches" in undrained.output
        async with asyncio.timeout(20):
            while ctl.store.get_batch(batch_id).state is not BatchState.DONE:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        out = await stoic(url, "runtime", "disable", "gpu2", "--reason", "quota spent")
        assert out.exit_code == 0, out.output
        assert out.output.startswith("runtime gpu2: out of service since ")
        assert out.output.rstrip().endswith("by token from 127.0.0.1: quota spent")
        status = await stoic(url, "status")
        assert "gpu2 (gpu, local): OUT OF SERVICE" in status.output
        back = await stoic(url, "runtime", "enable", "gpu2")
        assert back.exit_code == 0 and back.output.strip() == "runtime gpu2: in service (available)"
        edge = await stoic(url, "runtime", "disable", "edge")
        assert edge.exit_code != 0 and "HTTP 409 refused" in str(edge.exception)
        unknown = await stoic(url, "batch", "retry", "nope")
        assert "HTTP 404 batch_not_found" in str(unknown.exception)
