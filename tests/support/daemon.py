"""The daemon in-process: the controller on the fake backend and the app behind an httpx
client (ASGI transport, no socket), started and stopped through the app's lifespan as
``stoic serve`` does; or the same app under uvicorn on a loopback port
(:func:`http_daemon`), for the command line, which speaks real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from stoic.api.app import create_app
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.clock import Clock
from stoic.daemon.controller import Controller
from stoic.ingest.builder import TMP_PREFIX
from stoic.settings import Settings
from tests.support.net import free_port
from tests.support.settings import CLIENT_HOST


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The ``files`` fields of a multipart upload, one per (name, bytes)."""
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def instant() -> FakeBackend:
    """A fake backend on which every call takes no time."""
    return FakeBackend(default=FakeSpec(per_image_s=0.0))


@dataclass
class Daemon:
    client: httpx.AsyncClient
    controller: Controller
    fake: FakeBackend
    data_dir: Path
    app: FastAPI

    def client_from(self, host: str) -> httpx.AsyncClient:
        """Another client of the same app, as seen from ``host`` (close it after use)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(host, 123)),
            base_url=str(self.client.base_url),
        )

    def leftovers(self) -> tuple[list[str], int, list[str]]:
        """(package objects, batch rows, temporary files)."""
        objects = self.controller.objects.list("batches/")
        rows = self.controller.store.count_batches()
        tmp = self.data_dir / "tmp"
        temps = sorted(p.name for p in tmp.glob(f"{TMP_PREFIX}*")) if tmp.is_dir() else []
        return objects, rows, temps

    async def wait_done(self, batch_id: str) -> dict[str, Any]:
        """The batch's body once it is done or failed."""
        return await self.wait_state(batch_id, "done", "failed")

    async def wait_state(self, batch_id: str, *states: str) -> dict[str, Any]:
        """The batch's body once its state is one of ``states`` (bounded)."""
        async with asyncio.timeout(20):
            while True:
                body: dict[str, Any] = (await self.client.get(f"/v1/batches/{batch_id}")).json()
                if body["state"] in states:
                    return body
                await asyncio.sleep(0.01)


def operator_actions(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The operator's actions the daemon logged (``stoic.operator``), each with who did
    it from where, and on what (None where the action has no batch or runtime)."""
    return [
        {k: getattr(r, k, None) for k in ("action", "by", "client", "batch_id", "runtime")}
        for r in caplog.records
        if r.name == "stoic.operator" and r.getMessage() == "operator action"
    ]


@contextlib.asynccontextmanager
async def start_daemon(
    settings: Settings,
    fake: FakeBackend | None = None,
    token: str | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Daemon]:
    """The daemon of ``settings`` on ``fake`` (instant by default); ``token`` is sent as
    the client's bearer token; ``clock`` is the controller's (the wall clock if None)."""
    fake = fake or instant()
    ctl = Controller(settings, backends={"local": fake}, clock=clock)
    app = create_app(settings, controller=ctl)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=f"http://{CLIENT_HOST}",
            headers=headers,
        ) as client,
    ):
        yield Daemon(client, ctl, fake, settings.data_dir, app)


@contextlib.asynccontextmanager
async def http_daemon(
    settings: Settings, fake: FakeBackend | None = None
) -> AsyncIterator[tuple[str, Controller]]:
    """The daemon of ``settings`` on ``fake`` (instant by default) under uvicorn on a
    loopback port, in this event loop; yields (its URL, its controller)."""
    ctl = Controller(settings, backends={"local": fake or instant()})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, controller=ctl),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 (uvicorn has no started event)
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", ctl
    finally:
        server.should_exit = True
        await task
