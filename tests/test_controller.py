"""The composition root without HTTP: start-up recovery, drain, supervision,
bootstrapping, failures and concurrency, with the fake backend."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stoic.backends.fake import FakeBackend, FakeSpec, InvokeStep
from stoic.daemon import controller as controller_module
from stoic.daemon.controller import Controller, TaskSpec, build_backends
from stoic.errors import ConfigError
from stoic.predict.predictor import Predictor
from stoic.settings import Settings
from stoic.storage.objectstore import make_object_store
from stoic.store import Store, migrate
from stoic.values import (
    BatchState,
    DeploymentSample,
    DeployOutcome,
    ProcessingSample,
    TransferSample,
)
from tests.support.controller import put_batch, started, until, wait_state
from tests.support.settings import checked_settings, make_settings
from tests.support.uplink import far_side


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(default=FakeSpec(per_image_s=0.0))


async def test_start_requeues_batches_left_running(tmp_path: Path, fake: FakeBackend) -> None:
    settings = make_settings(tmp_path, controller={"max_attempts": 2})
    crashed = put_batch(settings)
    poison = put_batch(settings)
    with Store(settings.database_url) as store:
        store.claim_next_queued(2.0)  # crashed: attempt 1
        store.claim_next_queued(2.0)  # poison: attempt 1 ...
        store.requeue_running(3.0)
        store.claim_next_queued(4.0)  # crashed: attempt 2 (oldest first)
        store.claim_next_queued(4.0)  # poison: attempt 2, running when the daemon "died"
    async with started(settings, fake) as ctl:
        a = await wait_state(ctl, crashed, BatchState.DONE, BatchState.FAILED)
        b = await wait_state(ctl, poison, BatchState.DONE, BatchState.FAILED)
    # Both had been claimed max_attempts times: failed rather than retried forever.
    assert a.state is BatchState.FAILED and "gave up after 2 attempt(s)" in (a.error or "")
    assert b.state is BatchState.FAILED

    settings = make_settings(tmp_path / "second")
    bid = put_batch(settings)
    with Store(settings.database_url) as store:
        store.claim_next_queued(2.0)
    async with started(settings, fake) as ctl:
        record = await wait_state(ctl, bid, BatchState.DONE)
    assert record.attempts == 2 and record.results_key is not None


async def test_drain_cancels_after_grace_and_the_batch_is_rerun(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, controller={"drain_grace_s": 0.05})
    slow = FakeBackend(default=FakeSpec(per_image_s=0.0))
    slow.script_invokes("edge", InvokeStep(3600.0))
    bid = put_batch(settings)
    ctl = Controller(settings, backends={"local": slow})
    await ctl.start()
    await wait_state(ctl, bid, BatchState.RUNNING)
    await until(lambda: bool(slow.running))
    await ctl.stop()
    assert ctl.state == "stopped" and not ctl.running
    assert slow.ops("invoke-cancelled", "edge")
    assert not slow.live  # everything torn down
    with Store(settings.database_url) as store:
        back = store.get_batch(bid)
    # Handed back to the queue, decided afresh at the next start; a drain is not the
    # batch's fault, so its attempt is not counted.
    assert (back.state, back.attempts, back.chosen_runtime) == (BatchState.QUEUED, 0, None)

    async with started(settings, FakeBackend(default=FakeSpec(per_image_s=0.0))) as ctl2:
        record = await wait_state(ctl2, bid, BatchState.DONE)
    assert record.attempts == 1


async def test_supervisor_restarts_a_crashed_task(tmp_path: Path, fake: FakeBackend) -> None:
    settings = make_settings(tmp_path, controller={"task_restart_initial_s": 0.001})
    calls = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")

    async with started(settings, fake) as ctl:
        await ctl._supervise(TaskSpec("flaky", flaky))
        assert len(calls) == 3
        text = ctl.metrics.render()[0].decode()
        assert 'stoic_task_restarts_total{task="flaky"} 2.0' in text


async def test_bootstrap_uses_sub_packages_of_the_first_batch(
    tmp_path: Path, fake: FakeBackend
) -> None:
    settings = make_settings(tmp_path, controller={"bootstrap": True, "bootstrap_scope": "all"})
    bid = put_batch(settings, n_images=12)
    async with started(settings, fake) as ctl:
        await wait_state(ctl, bid, BatchState.DONE)
        # Two representative runs per runtime (the paper's scope), then the batch itself.
        invokes = fake.ops("invoke")
        boot = [e for e in invokes if ":bootstrap:" in e.batch_id]
        assert len(boot) == 2 * 4
        assert {e.runtime for e in boot} == {"edge", "cpu", "gpu1", "gpu2"}
        sizes = {s.images for s in ctl.store.processing_samples("classify", "1", "gpu1")}
        assert sizes == {1, 10}
        assert not ctl.scheduler.needs_bootstrap("classify", "1")
        # The sub-packages were removed again.
        assert [k for k in ctl.objects.list(f"batches/{bid}/") if "bootstrap" in k] == []
        # A second batch does not bootstrap again.
        second = await asyncio.to_thread(put_batch, settings)
        ctl.notify()
        await wait_state(ctl, second, BatchState.DONE)
        assert len([e for e in fake.ops("invoke") if ":bootstrap:" in e.batch_id]) == 8


async def test_failed_batch_records_its_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    failing = FakeBackend(default=FakeSpec(per_image_s=0.0))
    failing.script_invokes("edge", InvokeStep(0.0, fail=True))
    bid = put_batch(settings)
    async with started(settings, failing) as ctl:
        record = await wait_state(ctl, bid, BatchState.FAILED)
        assert "InvocationError" in (record.error or "")
        assert 'stoic_batches_finished_total{runtime="edge",state="failed"} 1.0' in (
            ctl.metrics.render()[0].decode()
        )
        assert not ctl.objects.exists(f"batches/{bid}/results.json")


async def test_results_document(tmp_path: Path, fake: FakeBackend) -> None:
    settings = make_settings(tmp_path)
    bid = put_batch(settings, n_images=3)
    async with started(settings, fake) as ctl:
        record = await wait_state(ctl, bid, BatchState.DONE)
        doc = json.loads(ctl.objects.get_bytes(record.results_key))
    assert doc["batch_id"] == bid and doc["runtime"] == "edge" and len(doc["results"]) == 3
    assert record.chosen_runtime == "edge" and set(record.estimates) == {
        "edge",
        "cpu",
        "gpu1",
        "gpu2",
    }


async def test_concurrency_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, controller={"max_concurrent_batches": 2})
    gate = FakeBackend(default=FakeSpec(per_image_s=0.0))
    gate.script_invokes("edge", 3600.0, 3600.0, 3600.0)
    ids = [put_batch(settings) for _ in range(3)]
    ctl = Controller(settings, backends={"local": gate})
    await ctl.start()
    try:
        await until(lambda: len(gate.running) == 2)
        assert len(ctl.running) == 2
        with Store(settings.database_url) as store:
            states = sorted(store.get_batch(b).state.value for b in ids)
        assert states == ["queued", "running", "running"]
    finally:
        ctl.settings = ctl.settings.model_copy(
            update={"controller": ctl.settings.controller.model_copy(update={"drain_grace_s": 0.0})}
        )
        await ctl.stop()


async def test_predictor_is_primed_from_the_store(tmp_path: Path, fake: FakeBackend) -> None:
    settings = make_settings(tmp_path)
    migrate(settings.database_url)
    with Store(settings.database_url) as store:
        store.add_samples(
            [DeploymentSample("gpu1", float(t), 40.0 + t) for t in range(5)]
            + [
                ProcessingSample("classify", "1", "gpu1", n, 0, 1.0 + 0.5 * n, float(n))
                for n in (1, 10, 20)
            ]
            + [TransferSample(10_000_000, 1.0, 1.0, "gpu1")]
        )
        store.upsert_runtimes(settings.runtime_list(), at=0.0)
        store.set_availability("gpu2", False, 7.0)
    async with started(settings, fake) as ctl:
        assert [d.duration_s for d in ctl.predictor.recent_deployments("gpu1", 10)] == [
            40.0, 41.0, 42.0, 43.0, 44.0,
        ]  # fmt: skip
        assert ctl.scheduler.observed.count("classify", "1", "gpu1") == 3
        assert not ctl.availability.is_available("gpu2")
        estimates, plan = ctl.estimate(10, 1_000_000)
        assert "gpu2" not in estimates and plan.chosen in estimates


async def test_a_restart_keeps_the_processing_tail(tmp_path: Path, fake: FakeBackend) -> None:
    """The tail (ProcessingModel.excess) comes from the samples before the regression's
    window: priming loads them too, so a restart prices a congested runtime as before."""
    settings = make_settings(tmp_path)
    migrate(settings.database_url)
    samples = [
        ProcessingSample(
            "classify", "1", "edge", n, 0, (2.0 + 0.5 * n) * (3 if n % 5 == 0 else 1), n
        )
        for n in range(1, 81)
    ]
    with Store(settings.database_url) as store:
        store.add_samples(samples)
    fresh = Predictor.from_settings(settings)
    for ps in samples:
        fresh.observe_processing(ps)
    want = fresh.processing_model("edge", "classify", "1").excess
    assert want > 0.1  # one run in five at x3, shrunk
    async with started(settings, fake) as ctl:
        await ctl.prime_version("classify", "1")
        got = ctl.predictor.estimate("edge", 10, 0, app="classify", app_version="1")
        assert got.risk.processing_excess == pytest.approx(want)


async def test_a_restart_keeps_the_processing_shape(tmp_path: Path, fake: FakeBackend) -> None:
    """With ``predictor.processing_shape_history`` longer than the window and the tail's
    110 samples, priming loads that many, so a restart fits the line's shape on the same
    samples as the running daemon did (docs/predictor.md, "Where random-001's learning
    gap comes from")."""
    settings = make_settings(tmp_path, predictor={"processing_shape_history": 300})
    migrate(settings.database_url)
    rng = np.random.default_rng(5)
    samples = [
        ProcessingSample("classify", "1", "edge", n, 0, (26.0 + 0.5 * n) * e, float(t))
        for t, (n, e) in enumerate(
            zip(
                rng.integers(1, 150, 300).tolist(),
                np.exp(rng.normal(0, 0.2, 300)).tolist(),
                strict=True,
            )
        )
    ]
    with Store(settings.database_url) as store:
        store.add_samples(samples)
    fresh = Predictor.from_settings(settings)
    for ps in samples:
        fresh.observe_processing(ps)
    want = fresh.estimate("edge", 140, 0, app="classify", app_version="1").processing.mean
    async with started(settings, fake) as ctl:
        await ctl.prime_version("classify", "1")
        model = ctl.predictor.processing_model("edge", "classify", "1")
        got = ctl.predictor.estimate("edge", 140, 0, app="classify", app_version="1")
        assert model.fit.method == "scaled-shape"
        assert got.processing.mean == pytest.approx(want, rel=1e-9)


async def test_a_restart_keeps_the_deployment_tail_view(tmp_path: Path, fake: FakeBackend) -> None:
    """With ``predictor.deployment_tail_history`` longer than the window's 200 values,
    priming loads that many deployments, so a restart prices the timeouts outside the
    window as the running daemon did (docs/predictor.md, "The deployment tail")."""
    settings = make_settings(tmp_path, predictor={"deployment_tail_history": 400})
    migrate(settings.database_url)
    timeout = settings.predictor.deploy_timeout_s
    samples = [
        DeploymentSample("gpu1", float(t), timeout, DeployOutcome.TIMEOUT) for t in range(100)
    ] + [DeploymentSample("gpu1", float(t), 40.0) for t in range(100, 400)]
    with Store(settings.database_url) as store:
        store.add_samples(samples)
    fresh = Predictor.from_settings(settings)
    for d in samples:
        fresh.observe_deployment(d)
    want = fresh.deployment_model("gpu1").risk().p_timeout
    assert want > 0.2  # the 100 timeouts, all older than the window's 200 values
    async with started(settings, fake) as ctl:
        assert ctl.predictor.deployment_model("gpu1").risk().p_timeout == pytest.approx(want)


async def test_the_inquisitor_times_idle_runtimes_on_images_of_a_claimed_batch(
    tmp_path: Path, fake: FakeBackend
) -> None:
    """Processing probes in the daemon: once a batch has been claimed, runtimes no batch
    measured are timed on a package cut from its first images, uploaded once each."""
    settings = make_settings(
        tmp_path,
        controller={"inquisitor": True},
        inquisitor={"period_s": 0.05, "processing_probe_period_s": 0.2},
        local={"probe_period_s": 0.05},  # the fake stands in for the local backend
    )
    async with started(settings, fake) as ctl:
        # The first deployment probes come a period after the start; once they have
        # measured T_d, every cloud runtime could win the batch and is worth timing.
        await until(
            lambda ctl=ctl: all(
                ctl.store.count_deployment_samples(r) for r in ("cpu", "gpu1", "gpu2")
            )
        )
        bid = await asyncio.to_thread(put_batch, settings, 12)
        ctl.notify()
        await wait_state(ctl, bid, BatchState.DONE)

        def probed(runtime: str, ctl: Controller = ctl) -> set[int]:
            samples = ctl.store.processing_samples("classify", "1", runtime)
            return {s.images for s in samples}

        await until(lambda: all(probed(r) >= {10, 12} for r in ("cpu", "gpu1", "gpu2")))
        await until(lambda: 10 in probed("edge"))  # the batch ran there; then idle
        assert ctl.objects.exists("probes/classify/1/10/package.tar")
        assert ctl.objects.exists("probes/classify/1/12/package.tar")  # 100 > 12 images
        uploads = [e for e in fake.ops("upload") if e.batch_id.startswith("probe-")]
        assert len(uploads) == len({(e.runtime, e.batch_id) for e in uploads})  # once each
        scrape = ctl.metrics.render()[0].decode()
        assert 'stoic_probe_cloud_seconds_total{runtime="gpu1"}' in scrape


async def test_the_daemons_probe_ledger_stops_the_processing_probes(
    tmp_path: Path, fake: FakeBackend
) -> None:
    """``inquisitor.probe_share = 0`` in the daemon's settings: each cloud runtime gets
    its first processing probe (the ledger's allowance) and no more, however many probe
    periods pass; the same daemon without the ledger keeps timing them (test above)."""
    settings = make_settings(
        tmp_path,
        controller={"inquisitor": True},
        inquisitor={"period_s": 0.05, "processing_probe_period_s": 0.2, "probe_share": 0.0},
        local={"probe_period_s": 0.05},
    )
    clouds = ("cpu", "gpu1", "gpu2")
    async with started(settings, fake) as ctl:
        await until(lambda ctl=ctl: all(ctl.store.count_deployment_samples(r) for r in clouds))
        bid = await asyncio.to_thread(put_batch, settings, 12)
        ctl.notify()
        await wait_state(ctl, bid, BatchState.DONE)

        assert ctl.scheduler.ledger is not None

        def timed(ctl: Controller = ctl) -> int:
            return sum(len(ctl.store.processing_samples("classify", "1", r)) for r in clouds)

        # Each cloud runtime's first probe (the ledger's allowance), once it has images
        # to time, beside the batch's own sample where it ran in the cloud:
        ran = (await asyncio.to_thread(ctl.store.get_batch, bid)).chosen_runtime
        await until(lambda: timed() == len(clouds) + (ran in clouds))
        first = timed()
        ticks = {r: ctl.store.count_deployment_samples(r) for r in clouds}
        # Several processing-probe periods later (probe ticks every 0.05 s):
        await until(
            lambda ctl=ctl: all(
                ctl.store.count_deployment_samples(r) >= ticks[r] + 12 for r in clouds
            )
        )
        assert timed() == first
        assert ctl.scheduler.ledger.denied > 0


async def test_the_daemon_checks_its_uplink_and_prices_an_outage(
    tmp_path: Path, fake: FakeBackend
) -> None:
    """With ``inquisitor.uplink_check_url``, the inquisitor requests it every tick; while
    it goes unanswered the metric says so and cloud T_t includes the expected wait."""
    async with far_side() as link, started(checked_settings(tmp_path, link.url), fake) as ctl:

        def scrape(ctl: Controller = ctl) -> str:
            return ctl.metrics.render()[0].decode()

        await until(lambda: "stoic_uplink_up 1.0" in scrape())
        assert ctl.estimate(10, 1_000_000)[0]["gpu1"].uplink_wait_s == 0.0
        await link.stop()  # the link goes down
        await until(lambda: "stoic_uplink_up 0.0" in scrape())
        assert "stoic_uplink_outages_total 1.0" in scrape()
        gpu1 = ctl.estimate(10, 1_000_000)[0]["gpu1"]
        assert gpu1.uplink_wait_s > 0.0 and gpu1.transfer.mean >= gpu1.uplink_wait_s


def test_simulated_backend_is_refused_in_the_daemon(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        runtimes=[
            {"name": "edge", "kind": "edge"},
            {"name": "gpu1", "kind": "gpu", "gpus": 1, "backend": "simulated"},
        ],
    )
    with pytest.raises(ConfigError, match="simulated"):
        build_backends(settings, make_object_store(settings))


def test_importing_builds_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    ctl = Controller(settings)
    assert ctl.state == "created" and not ctl.backends and not settings.data_dir.exists()


def test_configuration_doc_is_in_sync() -> None:
    """docs/configuration.md is generated from the settings model: regenerate it with
    ``.venv/bin/python docs/gen_configuration.py > docs/configuration.md``."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "gen_configuration", root / "docs" / "gen_configuration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (root / "docs" / "configuration.md").read_text() == module.render()


@pytest.fixture
def queued(tmp_path: Path, fake: FakeBackend) -> tuple[Controller, str]:
    """A controller on ``fake``, not started, and the id of the one batch queued for it."""
    settings = make_settings(tmp_path)
    bid = put_batch(settings)
    return Controller(settings, backends={"local": fake}), bid


def wrap_claims(
    monkeypatch: pytest.MonkeyPatch, wrapper: Callable[[Callable[[], Any]], Any]
) -> None:
    """Every ``Store.claim_next_queued`` runs as ``wrapper(claim)``, ``claim`` being the
    real claim of that call: the wrapper decides what happens around it."""
    original = Store.claim_next_queued
    monkeypatch.setattr(
        Store, "claim_next_queued", lambda self, now: wrapper(lambda: original(self, now))
    )


async def test_a_claim_that_returns_after_the_stop_flag_is_handed_back(
    queued: tuple[Controller, str], fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl, bid = queued

    def claim_then_stop(claim: Callable[[], Any]) -> Any:
        record = claim()
        ctl.mark_draining()  # SIGTERM arrives while the claim is in flight
        return record

    wrap_claims(monkeypatch, claim_then_stop)
    await ctl.start()
    await until(lambda: ctl.draining)
    await ctl.stop()
    with Store(ctl.settings.database_url) as store:
        record = store.get_batch(bid)
    assert (record.state, record.attempts, record.started_at) == (BatchState.QUEUED, 0, None)
    assert not fake.ops("invoke")


async def test_a_claim_in_flight_when_the_dispatcher_is_cancelled_is_handed_back(
    queued: tuple[Controller, str], fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl, bid = queued
    entered, gate = threading.Event(), threading.Event()

    def slow_claim(claim: Callable[[], Any]) -> Any:
        entered.set()
        gate.wait(30)
        return claim()

    wrap_claims(monkeypatch, slow_claim)
    monkeypatch.setattr(controller_module, "DISPATCHER_EXIT_S", 0.01)
    await ctl.start()
    assert await asyncio.to_thread(entered.wait, 10)
    stopping = asyncio.create_task(ctl.stop())
    await until(lambda: ctl.state == "draining")
    await asyncio.sleep(0.1)  # the drain has cancelled the dispatcher mid-claim
    gate.set()
    await stopping
    with Store(ctl.settings.database_url) as store:
        record = store.get_batch(bid)
    assert (record.state, record.attempts) == (BatchState.QUEUED, 0)
    assert not fake.ops("invoke")


# Share mode through the daemon --------------------------------------------------------


async def test_share_mode_labels_each_image_once_and_resumes_from_stored_chunks(
    tmp_path: Path,
) -> None:
    """A share batch's results name the runtime of each image; the chunk objects a
    crashed attempt left are not labelled again."""
    from stoic.storage.package import chunk_results_key, results_key
    from stoic.values import Mode

    settings = make_settings(
        tmp_path, controller={"bootstrap": False}, policy={"share_min_gain_s": 0}
    )
    fake = FakeBackend(
        {
            "edge": FakeSpec(per_image_s=0.05),
            "gpu1": FakeSpec(deploy_s=0.05, per_image_s=0.005),
        },
        default=FakeSpec(deploy_s=30.0, per_image_s=1.0),
    )
    done_before = put_batch(settings, n_images=40, mode=Mode.SHARE)
    objects = make_object_store(settings)
    earlier = [{"index": i, "label": "earlier", "runtime": "edge"} for i in range(10)]
    objects.put_bytes(
        chunk_results_key(done_before, 0, 10),
        json.dumps({"start": 0, "stop": 10, "runtime": "edge", "results": earlier}).encode(),
    )
    objects.put_bytes(chunk_results_key(done_before, 10, 20), b"{truncated by a crash")
    async with started(settings, fake) as ctl:
        record = await wait_state(ctl, done_before, BatchState.DONE, BatchState.FAILED)
    assert record.state is BatchState.DONE, record.error
    doc = json.loads(objects.get_bytes(results_key(done_before)))
    results = doc["results"]
    assert [r["index"] for r in results] == list(range(40))
    assert all(r["runtime"] for r in results)
    assert [r["label"] for r in results[:10]] == ["earlier"] * 10
    # Every image of the results counts, the 10 an earlier run labelled too.
    assert sum(doc["shares"].values()) == 40 and doc["shares"]["edge"] >= 10
    labelled = [e.detail for e in fake.ops("invoke")]
    assert all(int(d.split("-")[0]) >= 10 for d in labelled)
    assert objects.list(f"batches/{done_before}/chunks/") == []  # merged into results


async def test_the_life_cycle_is_one_state_that_only_moves_forward(
    tmp_path: Path, fake: FakeBackend
) -> None:
    ctl = Controller(make_settings(tmp_path), backends={"local": fake})
    await ctl.start()
    assert ctl.state == "running" and not ctl.draining and not ctl.state.stopping
    ctl.mark_draining()  # a signal: the state moves, nothing else yet
    assert ctl.state == "draining" and ctl.draining and ctl.state.stopping
    await ctl.drain()
    await ctl.drain()  # once is all
    await ctl.stop()
    ctl.request_stop()  # a late signal does not bring it back
    assert ctl.state == "stopped" and not ctl.draining
    await ctl.stop()


async def test_a_stop_asked_for_before_the_start_leaves_it_draining(
    tmp_path: Path, fake: FakeBackend
) -> None:
    settings = make_settings(tmp_path)
    bid = put_batch(settings)
    ctl = Controller(settings, backends={"local": fake})
    ctl.mark_draining()
    await ctl.start()  # builds everything, claims nothing
    assert ctl.state == "draining"
    await ctl.stop()
    with Store(settings.database_url) as store:
        assert store.get_batch(bid).state is BatchState.QUEUED
    assert not fake.ops("invoke")
