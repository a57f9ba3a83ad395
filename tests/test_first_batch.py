"""A first batch that explains itself, and cloud cost that is complete (issue 25).

In-process daemons on the fake backend: what ``GET /v1/batches/{id}``, the operator page
and ``stoic submit --wait`` say while a new application version is bootstrapped (run n
of m, where), the end-to-end latency beside T_s, and the pod seconds of bootstrap runs
and probes in ``stoic_cloud_used_seconds_total{cause}`` and in the page's "Today".
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from stoic import client as client_module
from stoic.backends.base import Deployment, Invocation, Upload
from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.cli import app
from stoic.clock import ManualClock, local_midnight
from stoic.daemon.controller import Controller
from stoic.daemon.progress import Board, Phase
from stoic.values import BatchState, Job
from tests.support.controller import until
from tests.support.daemon import Daemon, files, start_daemon
from tests.support.html import dom
from tests.support.images import jpeg
from tests.support.settings import make_settings


@dataclass(slots=True)
class Gated(FakeBackend):
    """The fake backend, whose bootstrap calls wait for a permit each."""

    permits: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    waiting: list[str] = field(default_factory=list)  # bootstrap calls at the gate

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        if ":bootstrap:" in job.batch_id and not warmup:
            self.waiting.append(job.batch_id)
            try:
                await self.permits.acquire()
            finally:
                self.waiting.remove(job.batch_id)
        return await FakeBackend.invoke(self, deployment, job, upload, warmup=warmup)


@dataclass(frozen=True)
class Row:
    """What :meth:`Board.of` reads of a batch record."""

    id: str
    state: BatchState


async def submit(d: Daemon, n_images: int = 2) -> str:
    r = await d.client.post(
        "/v1/batches", files=files(*[(f"{i}.jpg", jpeg(i)) for i in range(n_images)])
    )
    assert r.status_code == 202, r.text
    batch_id: str = r.json()["id"]
    return batch_id


def bootstrap_call(fake: Gated) -> str | None:
    """The batch id of the bootstrap call waiting at the gate, if any."""
    return fake.waiting[0] if fake.waiting else None


# Progress ------------------------------------------------------------------------------


async def test_a_bootstrapping_batch_says_which_run_of_how_many(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, controller={"bootstrap": True, "bootstrap_scope": "all"})
    fake = Gated(default=FakeSpec(per_image_s=0.0))
    async with start_daemon(settings, fake) as d:
        batch_id = await submit(d)
        seen, calls = [], []
        for run in range(1, 9):  # two runs on each of the four runtimes, one at a time
            await until(lambda: bootstrap_call(fake) not in (None, *calls))
            calls.append(bootstrap_call(fake))
            body = (await d.client.get(f"/v1/batches/{batch_id}")).json()
            p = body["progress"]
            assert body["state"] == "running" and p["phase"] == "bootstrap"
            assert (p["run"], p["runs"]) == (run, 8)
            assert f"run {run} of 8" in p["message"] and p["runtime"] in p["message"]
            assert (
                bootstrap_call(fake)
                == f"{batch_id}:b{p['images']}:bootstrap:{p['runtime']}:{(run - 1) % 2}"
            )
            seen.append((p["runtime"], p["images"]))
            if run == 3:  # the page says it too: the batch's own page and the table
                page = dom((await d.client.get(f"/ui/batches/{batch_id}")).text)
                now = page.find("dd", class_="progress")
                assert now.attrs["data-phase"] == "bootstrap" and "run 3 of 8" in now.text()
                table = dom((await d.client.get("/ui/fragments/batches")).text)
                row = table.find("tr", data_batch=batch_id)
                assert "run 3 of 8" in row.find("small", class_="progress").text()
            fake.permits.release()
        assert seen == [(rt, n) for rt in ("edge", "cpu", "gpu1", "gpu2") for n in (1, 2)]
        done = await d.wait_done(batch_id)
    assert done["state"] == "done" and done["progress"] is None
    m = done["measured"]
    assert m["end_to_end_s"] == pytest.approx(done["finished_at"] - done["created_at"])
    assert m["end_to_end_s"] >= m["total_s"]  # the bootstrap came before T_s began


async def test_a_running_batch_says_where_it_runs(tmp_path: Path) -> None:
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    fake.script_invokes("gpu1", 3600.0)
    async with start_daemon(make_settings(tmp_path), fake) as d:
        r = await d.client.post(
            "/v1/batches", files=files(("a.jpg", jpeg(1))), params={"runtime": "gpu1"}
        )
        batch_id = r.json()["id"]
        await until(lambda: bool(fake.running))
        p = (await d.client.get(f"/v1/batches/{batch_id}")).json()["progress"]
        assert (p["phase"], p["runtime"], p["message"]) == ("processing", "gpu1", "running on gpu1")
        listed = (await d.client.get("/v1/batches")).json()["batches"]
        assert "progress" not in listed[0]  # only the batch's own answer carries it


def test_queued_batches_wait_for_the_demo_model_and_finished_ones_say_nothing() -> None:
    def record(state: BatchState) -> Row:
        return Row("b", state)

    ctl = Controller(make_settings(Path("/nonexistent")), clock=ManualClock(100.0))
    assert ctl.progress().of(record(BatchState.QUEUED)) is None
    ctl.model_status, ctl.model_building_since = "building", 40.0
    waiting = ctl.progress().of(record(BatchState.QUEUED))
    assert waiting is not None and waiting.phase is Phase.WAITING and waiting.since == 40.0
    assert "demo model" in waiting.message
    assert ctl.progress().of(record(BatchState.DONE)) is None
    assert Board().of(record(BatchState.RUNNING)) is None


async def test_the_page_shows_end_to_end_latency_beside_t_s(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    fake = FakeBackend(default=FakeSpec(per_image_s=0.0))
    async with start_daemon(make_settings(tmp_path), fake, clock=clock) as d:
        r = await d.client.post("/v1/batches", files=files(("a.jpg", jpeg(1))))
        batch_id = r.json()["id"]
        # Accepted now, finished 294 s later on this clock (queued, bootstrapped...).
        clock.advance(294.0)
        done = await d.wait_done(batch_id)
        assert done["measured"]["end_to_end_s"] == pytest.approx(294.0)
        page = dom((await d.client.get(f"/ui/batches/{batch_id}")).text)
        cell = page.find("dd", class_="end-to-end")
        assert cell.text().startswith("294.0 s") and "(T_s " in cell.text()
        table = dom((await d.client.get("/ui/fragments/batches")).text)
        row = table.find("tr", data_batch=batch_id)
        assert row.find("small", class_="end-to-end").text() == "294.0 s end to end"


# submit --wait -------------------------------------------------------------------------


def answers(*bodies: dict[str, Any]) -> httpx.MockTransport:
    """A daemon that accepts one batch and then answers its polls with ``bodies``."""
    polls = iter(bodies)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                202, json={"id": "b1", "n_images": 1, "n_bytes": 9, "skipped": []}
            )
        return httpx.Response(200, json=next(polls))

    return httpx.MockTransport(answer)


def polled(state: str, message: str | None = None, **rest: Any) -> dict[str, Any]:
    progress = {"phase": "bootstrap", "message": message, "since": 0.0} if message else None
    return {
        "id": "b1",
        "state": state,
        "n_images": 1,
        "mode": "selector",
        "progress": progress,
        **rest,
    }


BOOT = "bootstrapping classify 1 before its first batch: run {} of 2, 1 image on edge"
DONE = polled(
    "done",
    decision={"runtime": "edge", "reason": "fastest", "estimates": {}},
    measured={
        "transfer_s": 0.0, "deployment_s": 0.0, "processing_s": 0.04, "total_s": 0.05,
        "end_to_end_s": 294.0, "winner": "edge",
    },
    results=[{"name": "a.jpg", "label": "fox", "error": None}],
)  # fmt: skip


def test_submit_wait_prints_a_line_each_time_the_batch_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = answers(
        polled("queued"),
        polled("queued"),
        polled("running", BOOT.format(1)),
        polled("running", BOOT.format(1)),
        polled("running", BOOT.format(2)),
        DONE,
    )
    monkeypatch.setattr(
        client_module,
        "connect",
        lambda url, token, timeout=30.0: httpx.Client(transport=transport, base_url="http://d"),
    )
    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg(1))
    result = CliRunner().invoke(app, ["submit", str(photo), "--wait", "--poll", "0.05"])
    assert result.exit_code == 0, result.output
    lines = [re.sub(r" \(\d+ s\)$", "", line) for line in result.stderr.splitlines() if line]
    assert lines[1:] == [  # after "accepted 1 image(s), 9 bytes": one line per change
        "queued",
        f"running: {BOOT.format(1)}",
        f"running: {BOOT.format(2)}",
    ]
    assert "end to end (accepted to result): 294.00 s" in result.stdout
    assert "a.jpg\tfox" in result.stdout


def test_on_a_terminal_the_progress_line_rewrites_itself() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    shown: list[str] = []
    with client_module.ProgressLine(console) as line:
        status = line._status
        assert status is not None
        status.update = lambda text: shown.append(str(text))  # what the spinner shows
        with httpx.Client(
            transport=answers(polled("queued"), polled("queued"), DONE), base_url="http://d"
        ) as c:
            body = client_module.wait_for_batch(
                c, "b1", 0.0, line, sleep=lambda _s: None, clock=iter([0.0, 1.0, 65.0]).__next__
            )
    assert body["state"] == "done"
    assert shown == ["queued (1 s)", "queued (1 min 5 s)"]  # every poll: the time moves on


# Cloud cost ----------------------------------------------------------------------------


def scrape(ctl: Controller) -> dict[tuple[str, str], float]:
    """``stoic_cloud_used_seconds_total`` by (runtime, cause)."""
    text = ctl.metrics.render()[0].decode()
    pattern = r'stoic_cloud_used_seconds_total\{cause="(\w+)",runtime="(\w+)"\} (\S+)'
    return {(rt, cause): float(v) for cause, rt, v in re.findall(pattern, text)}


async def test_bootstrap_runs_and_probes_count_as_cloud_time_by_cause(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        controller={"bootstrap": True, "bootstrap_scope": "all", "inquisitor": True},
        inquisitor={"processing_probe_period_s": 5.0},
    )
    # gpu1 the fastest, so that it could win (Scheduler.worth_probing) and is probed.
    fake = FakeBackend(
        {"gpu1": FakeSpec(warmup_s=0.01, per_image_s=0.01)},
        default=FakeSpec(per_image_s=0.0, fixed_s=0.3),
    )
    clock = ManualClock(1_700_000_000.0)
    day = local_midnight(clock.now())
    async with start_daemon(settings, fake, clock=clock) as d:
        ctl = d.controller
        r = await d.client.post(
            "/v1/batches",
            files=files(("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))),
            params={"runtime": "edge"},
        )
        await d.wait_done(r.json()["id"])
        # Two bootstrap runs held gpu1 for their warm-up and call (1 and 2 images).
        used = scrape(ctl)
        assert used[("gpu1", "bootstrap")] >= 2 * 0.01 + 0.03
        assert {rt for rt, cause in used if cause == "bootstrap"} == {"cpu", "gpu1", "gpu2"}
        assert ("gpu1", "batch") not in used  # the batch itself ran on the edge

        clock.advance(10.0)  # gpu1's processing is due again: the probe times it
        assert ctl.inquisitor is not None
        await ctl.inquisitor.probe("gpu1")
        used = scrape(ctl)
        assert used[("gpu1", "probe")] == pytest.approx(ctl.inquisitor.cloud_s["gpu1"])
        assert used[("gpu1", "probe")] >= 0.01 + 0.01 * 2  # warm-up, then the 2-image probe

        # The store keeps the day's seconds per runtime and cause, for "Today".
        def stored() -> dict[tuple[str, str], float]:
            return {(u.runtime, u.cause): u.seconds for u in ctl.store.cloud_usage_on(day)}

        await until(lambda: set(stored()) == set(used))  # written in the background
        assert stored()[("gpu1", "bootstrap")] == pytest.approx(used[("gpu1", "bootstrap")])
        assert stored()[("gpu1", "probe")] == pytest.approx(used[("gpu1", "probe")])

        usage = dom((await d.client.get("/ui/fragments/usage")).text)
        causes = {
            s.attrs["data-cause"]: float(s.attrs["data-seconds"])
            for s in usage.find_all("span")
            if "data-cause" in s.attrs
        }
        assert causes["bootstrap"] == pytest.approx(
            sum(v for (_, c), v in used.items() if c == "bootstrap"), abs=1e-3
        )
        assert causes["probe"] == pytest.approx(used[("gpu1", "probe")], abs=1e-3)
        total = float(usage.find("dd").attrs["data-cloud-used"])
        # Each figure is shown to 1 ms, so the shown parts may miss the shown total by 1.5 ms.
        assert total == pytest.approx(sum(causes.values()), abs=2e-3)
        gpu1 = usage.find("tr", data_runtime="gpu1").find_all("td")
        assert [c.text() for c in gpu1[2:5]] == [
            "0.0 s",
            f"{stored()[('gpu1', 'bootstrap')]:.1f} s",
            f"{stored()[('gpu1', 'probe')]:.1f} s",
        ]
