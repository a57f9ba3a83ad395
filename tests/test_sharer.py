"""Share mode's execution on fake backends and virtual time: the failure paths of
issue 11 (a cloud leg failing mid-batch, a pod never ready, the edge failing while a
cloud leg runs, an empty queue when a pod becomes ready), restarts and accounting."""

from __future__ import annotations

from typing import Any

import pytest

from stoic.backends.fake import DeployStep, FakeBackend, FakeSpec, InvokeStep
from stoic.errors import InvocationError
from stoic.schedule.probe.availability import Availability
from stoic.schedule.share.board import Chunk
from stoic.settings import Settings
from stoic.values import Component, Estimate, Job, Mode, SharePlan
from tests.support.core import ListRecorder, TablePredictor, leg_runner, requester_of

pytestmark = pytest.mark.looptime

N = 200
JOB = Job("s1", n_images=N, n_bytes=N * 1000)

# Truth: edge 1 s/image; gpu1 0.1 s/image after a 40 s deployment; cpu 0.5 s/image.
SPECS = {
    "edge": FakeSpec(per_image_s=1.0),
    "cpu": FakeSpec(deploy_s=20, upload_per_image_s=0.01, per_image_s=0.5),
    "gpu1": FakeSpec(deploy_s=40, upload_per_image_s=0.01, per_image_s=0.1, fixed_s=2.0),
    "gpu2": FakeSpec(deploy_s=60, upload_per_image_s=0.01, per_image_s=0.05),
}


def line(name: str, d: float, per_image: float, fixed: float = 0.0) -> Estimate:
    return Estimate(
        name,
        Component(0.0),
        Component(d),
        Component(per_image * N + fixed),
        processing_line=(per_image, fixed),
    )


ESTIMATES = {
    "edge": line("edge", 0, 1.0),
    "cpu": line("cpu", 20, 0.5),
    "gpu1": line("gpu1", 40, 0.1, 2.0),
    "gpu2": line("gpu2", 60, 0.05),
}


class World:
    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**settings)
        runtimes = {r.name: r for r in self.settings.runtime_list()}
        self.fake = FakeBackend(dict(SPECS))
        self.recorder = ListRecorder()
        self.availability = Availability(runtimes.values())
        legs = leg_runner(
            self.settings, {"local": self.fake}, runtimes, self.recorder, self.availability
        )
        self.requester = requester_of(self.settings, legs, TablePredictor())
        self.chunks: list[tuple[Chunk, str]] = []

    async def sink(self, chunk: Chunk, owner: str, results: Any) -> None:
        assert [r["index"] for r in results] == list(range(chunk.start, chunk.stop))
        self.chunks.append((chunk, owner))

    async def run(self, *clouds: str, job: Job = JOB, **kw: Any) -> Any:
        plan = SharePlan("edge", clouds, mode=Mode.SHARE, reason="test", estimates=dict(ESTIMATES))
        return await self.requester.run(job, plan, on_chunk=self.sink, **kw)


def labelled_once(out: Any, n: int = N) -> None:
    assert [r["index"] for r in out.results] == list(range(n))
    assert sum(out.shares.values()) == n


async def test_edge_and_gpu_share_and_each_image_is_labelled_once(looptime: Any) -> None:
    w = World()
    out = await w.run("gpu1")
    labelled_once(out)
    assert set(out.shares) == {"edge", "gpu1"} and out.shares["gpu1"] > out.shares["edge"]
    # Alone: edge 200 s, gpu1 40 + 2 + 20 + upload. Shared: well under both.
    assert out.total_s < 70
    # the edge takes from the front, the gpu from the back
    first_gpu = min(c.start for c, o in w.chunks if o == "gpu1")
    last_edge = max(c.stop for c, o in w.chunks if o == "edge")
    assert last_edge <= first_gpu
    # uploads happened while the pod deployed (before t=40), from the back
    uploads = w.fake.ops("upload", "gpu1")
    assert uploads and uploads[0].at < 40 and uploads[0].detail.endswith(f"-{N}")
    assert w.fake.live == {} and out.cloud_used_s > 0
    assert [s.runtime for s in w.recorder.deployments] == ["gpu1"]
    assert sorted(s.runtime for s in w.recorder.processings) == ["edge", "gpu1"]  # first calls


async def test_a_wildly_optimistic_rate_does_not_take_the_whole_batch(looptime: Any) -> None:
    # The edge's T_p line says 0.0005 s per image (a degenerate fit; truly 1 s): the
    # fluid sizes would hand it all 200 images in its first chunk and leave the pod
    # nothing. No chunk exceeds 1/chunk_factor of the open work while the pod may help.
    w = World()
    estimates = dict(ESTIMATES, edge=line("edge", 0, 0.0005, 97.0))
    plan = SharePlan("edge", ("gpu1",), mode=Mode.SHARE, reason="test", estimates=estimates)
    out = await w.requester.run(JOB, plan, on_chunk=w.sink)
    labelled_once(out)
    # (Given everything, the edge would hold it all, the pod would be cancelled with
    # nothing left for it, and the batch would take the edge's 200 s.)
    assert out.shares.get("gpu1", 0) > N // 2 and out.total_s < 100


async def test_a_cloud_leg_failing_mid_batch_returns_its_chunks(looptime: Any) -> None:
    w = World()
    w.fake.script_invokes("gpu1", InvokeStep(3.0), InvokeStep(1.0, fail=True))
    out = await w.run("gpu1")
    labelled_once(out)
    assert "gpu1 failed" in out.reason and out.error is not None
    assert out.shares["edge"] > 0


async def test_a_pod_never_ready_leaves_the_batch_to_the_others(looptime: Any) -> None:
    w = World(predictor={"deploy_timeout_s": 100})
    w.fake.script_deploys("gpu2", DeployStep(float("inf")))
    out = await w.run("gpu1", "gpu2")
    labelled_once(out)
    assert "gpu2" not in out.shares or out.shares["gpu2"] == 0
    # gpu2's reservations were stolen or released: nobody waited for it
    assert out.total_s < 100
    assert w.fake.live == {}


async def test_the_edge_failing_while_a_cloud_leg_runs(looptime: Any) -> None:
    w = World()
    w.fake.script_invokes("edge", InvokeStep(5.0, fail=True))
    out = await w.run("gpu1")
    labelled_once(out)
    assert set(k for k, v in out.shares.items() if v) == {"gpu1"}
    assert "edge failed" in out.reason


async def test_every_participant_failing_fails_the_batch(looptime: Any) -> None:
    w = World()
    w.fake.script_invokes("edge", InvokeStep(5.0, fail=True))
    with pytest.raises(InvocationError):
        await w.run()
    assert w.fake.live == {}


async def test_an_empty_queue_when_a_pod_becomes_ready(looptime: Any) -> None:
    # 30 images: the edge is done at 30 s, before gpu2 (60 s) is ready: its deployment is
    # cancelled once nothing is left for it, and it labels nothing.
    w = World()
    job = Job("small", 30, 30 * 1000)
    out = await w.run("gpu2", job=job)
    labelled_once(out, 30)
    assert out.shares == {"edge": 30}
    assert w.fake.ops("deploy-cancelled", "gpu2")
    assert out.total_s == pytest.approx(30)
    assert out.cloud_used_s == 0


async def test_a_restart_labels_only_the_unfinished_images(looptime: Any) -> None:
    w = World()
    done = {i: {"index": i, "label": "before", "runtime": "edge"} for i in range(150)}
    out = await w.run(done=done)
    assert [r["index"] for r in out.results] == list(range(N))
    assert out.shares == {"edge": 50}
    assert out.results[0]["label"] == "before" and out.results[199]["label"] == "fake:edge"
    assert min(c.start for c, _ in w.chunks) == 150


async def test_a_straggler_is_hedged_once_and_the_first_result_wins(looptime: Any) -> None:
    # cpu is predicted at 0.5 s/image but really crawls on its first chunk (a congested
    # node): the idle edge duplicates it and wins; one hedge, counted as waste.
    w = World(share={"max_hedges": 1})
    w.fake.script_invokes("cpu", InvokeStep(500.0))
    out = await w.run("cpu")
    labelled_once(out)
    # The edge labels the crawling chunk itself; the cpu's call is cancelled once the
    # edge's copy lands (no duplicate result: the cpu's never came).
    assert out.shares["edge"] >= 190 and out.duplicate_images == 0
    assert out.total_s < 300
    assert w.fake.ops("invoke-cancelled", "cpu")


async def test_the_edge_steals_from_a_late_pod_instead_of_waiting_for_its_timeout(
    looptime: Any,
) -> None:
    """The only pod never becomes ready: its reservations do not strand the batch;
    once the pod is late the edge steals them and finishes without waiting for the
    600 s timeout."""
    w = World()
    w.fake.script_deploys("gpu1", DeployStep(float("inf")))
    out = await w.run("gpu1")
    labelled_once(out)
    assert out.shares == {"edge": N}
    assert out.total_s < 260  # the edge alone needs 200 s; no 600 s wait
