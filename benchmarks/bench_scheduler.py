"""Scheduling overhead: estimate + decide with the real predictor, and the requester's
own cost per batch on a zero-latency fake backend (pure Python/asyncio overhead).

    .venv/bin/python benchmarks/bench_scheduler.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from stoic.backends.fake import FakeBackend, FakeSpec
from stoic.clock import WallClock
from stoic.schedule.assembly import build_core
from stoic.schedule.execute.recorder import PredictorRecorder
from stoic.settings import Settings
from stoic.values import DeploymentSample, Job, Mode, ProcessingSample

N = 2000


async def main() -> None:
    settings = Settings()
    runtimes = {r.name: r for r in settings.runtime_list()}
    zero = FakeSpec(per_image_s=0.0)
    fake = FakeBackend(dict.fromkeys(runtimes, zero))
    core = build_core(settings, {"local": fake}, WallClock(), make_recorder=PredictorRecorder)
    predictor, scheduler = core.predictor, core.scheduler
    for i in range(40):  # some history so the models are fitted, not priors
        for name in runtimes:
            predictor.observe_processing(
                ProcessingSample("classify", "1", name, 10 + i, 0, 5.0 + 0.5 * (10 + i), i)
            )
            if name != "edge":
                predictor.observe_deployment(DeploymentSample(name, i, 20.0 + i % 7))

    decide = []
    for i in range(N):
        plan = scheduler.plan(
            Job(f"p{i}", 1 + i % 500, 212_000 * (1 + i % 500)), mode=Mode.SELECTOR
        )
        decide.append(plan.decision_s)
    median, p99 = statistics.median(decide), sorted(decide)[int(0.99 * N)]
    print(
        f"estimate+decide (4 runtimes, real predictor): median {median * 1e6:.0f} µs,"
        f" p99 {p99 * 1e6:.0f} µs over {N} batches"
    )

    for mode in (Mode.SELECTOR, Mode.DUPLICATOR):
        t = time.perf_counter()
        for i in range(N // 4):
            await scheduler.handle(Job(f"{mode}-{i}", 40, 40 * 212_000), mode=mode)
        per = (time.perf_counter() - t) / (N // 4)
        print(
            f"handle() end to end on a zero-latency fake, {mode}: {per * 1e3:.2f} ms/batch"
            " (includes the predictor refitting T_p after each new sample)"
        )


if __name__ == "__main__":
    asyncio.run(main())
