"""The replay: the daemon's scheduling core driven by a workload in virtual time.

"Two worlds, one code path" (docs/architecture.md): the replay builds the *daemon's*
core with the daemon's :func:`~stoic.schedule.assembly.build_core` — the predictor, the
requester, the inquisitor, the scheduler (which calls
:func:`stoic.schedule.decide.policy.decide`) — and swaps in only the backends
(:class:`~stoic.backends.simulated.SimulatedBackend`) and the clock (a ``looptime`` event
loop, whose time jumps to the next timer, so a simulated day takes well under a second).

Timeline (loop seconds): ``[0, W)`` warm-up, where the inquisitor probes every cloud
runtime each period (as the daemon does before its first batch); at ``W`` the
scheduler bootstraps (two representative tasks per runtime, paper §3.7); batch ``i``
then starts at ``W + at_s`` (or when the previous one finishes: batches run one after
the other, so the predictor has learnt from every earlier batch). The environment's
clock reads ``loop time - W``, so simulated hours of day line up with the workload.

Each batch's ground truth on every runtime is drawn when it arrives (the audit) and is
what the simulated backend serves for that batch's calls: the outcome the scheduler
gets *is* the truth of the runtime it chose (for the duplicator, the race of the two).

Probes: ``full`` runs the inquisitor's own loop for the whole replay (1,440 probes per
runtime per simulated day; :attr:`~stoic.schedule.assembly.Probing.LOOP`). ``window``
(the default beyond a week; :attr:`~stoic.schedule.assembly.Probing.WARMUP`, the one way
its core differs from the daemon's) is the shortcut for long replays: between batches,
the probe ticks are walked with the inquisitor's own rules (a tick on the ``k·period``
grid, skipped while the previous probe of that runtime is still running), each probe's
T_d is the same counter-keyed draw the backend would have made, and only the probes that
can still be in the predictor's deployment window at the next batch (the last
``calibration_history + max_window``, its deque length, or ``deployment_tail_history``
where that is longer) are fed to it, through the same
recorder chain; the last finished probe sets availability. Because the model keeps only
that deque and calibrates lazily at the next estimate, the predictor reaches the same
state as with every probe fed (see docs/replay.md for the caveats).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import looptime
import numpy as np

from stoic.backends.base import RuntimeBackend, Upload
from stoic.backends.simulated import (
    BatchTruth,
    SimEnvironment,
    SimulatedBackend,
    current_truth,
    fresh_draws,
    load_env,
)
from stoic.errors import BackendError, InputError
from stoic.logging import get_logger
from stoic.predict.predictor import Predictor
from stoic.replay.workload import DEFAULT_PROFILE, WORKLOAD_DIR, Batch, WorkloadProfile, generate
from stoic.schedule.assembly import Core, Probing, build_core
from stoic.schedule.decide.policy import AUTO, Objective, PolicyOptions
from stoic.schedule.execute.legs import Placer
from stoic.schedule.execute.recorder import PredictorRecorder
from stoic.schedule.probe.availability import Availability
from stoic.settings import Settings
from stoic.values import (
    Job,
    Mode,
    Outcome,
    Plan,
    Runtime,
)

log = get_logger(__name__)

DEFAULT_ENV = WORKLOAD_DIR / "nautilus-2020.yaml"
#: 2020-05-01T00:00:00Z: simulated instants handed to the stores and the predictor.
EPOCH_S = 1_588_291_200.0

MODES = (
    "selector",
    "selector-mean",
    "selector-expected",
    "selector-quantile",
    "duplicator",
    "duplicator-auto",
    "duplicator-gpu1",
    "duplicator-gpu2",
    "duplicator-cpu",
    "share",
    "edge-only",
    "gpu1-only",
    "threshold",
    "oracle",
    "informed",
    "selector-paper",
)
#: Suffixes that switch the selector's actions beyond the paper's on (``selector+deadline``,
#: ``informed+deadline+pipelined``): ``policy.deploy_deadline``, ``policy.pipelined_upload``,
#: and, with ``deadline``, ``fallback``: ``policy.deploy_deadline_fallback``.
ACTIONS = ("deadline", "pipelined", "fallback")
OBJECTIVES = ("mean", "expected", "quantile")


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """A replay mode string, parsed: the policy, the duplicator's cloud runtime
    (a runtime name or ``auto``) and the selector's objective (None: the settings')."""

    mode: Mode
    cloud: str | None = None
    objective: Objective | None = None
    min_gain_s: float | None = None  # share: its policy.share_min_gain_s (None: the settings')
    informed: bool = False  # the oracle's policy on expected totals, not hindsight
    budget: float | None = None  # MODE@B: requester.cloud_budget_pod_s_per_day = B
    deadline: bool | None = None  # policy.deploy_deadline (None: the settings')
    pipelined: bool | None = None  # policy.pipelined_upload (None: the settings')
    fallback: bool | None = None  # policy.deploy_deadline_fallback (None: the settings')


def parse_budget(text: str, what: str) -> float:
    """A cloud budget, pod-seconds × GPUs a day (>= 0, finite); InputError naming ``what``."""
    try:
        budget = float(text)
    except ValueError:
        budget = -1.0
    if not (budget >= 0 and math.isfinite(budget)):
        raise InputError(f"{what} (pod-seconds a day >= 0), got {text!r}")
    return budget


def parse_mode(mode: str, gpu: str | None = None) -> ModeSpec:
    """``duplicator-gpu2`` (or ``duplicator`` with ``--gpu gpu2``) → DUPLICATOR on gpu2;
    ``duplicator`` alone → DUPLICATOR on ``auto``; ``selector-mean`` → SELECTOR with the
    paper's objective; a ``+deadline`` / ``+pipelined`` suffix (:data:`ACTIONS`) names
    the actions beyond the paper's exactly (the rest off, whatever the settings say);
    ``MODE@B`` → MODE with a cloud budget of B pod-seconds × GPUs a day (the sweep's
    ``--budgets``)."""
    if "@" in mode:
        base, _, amount = mode.rpartition("@")
        budget = parse_budget(amount, f"--mode: {mode!r}: expected MODE@BUDGET")
        return replace(parse_mode(base, gpu), budget=budget)
    base, *actions = mode.split("+")
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise InputError(
            f"--mode: unknown action {unknown[0]!r} in {mode!r}; choose from {', '.join(ACTIONS)}"
        )
    if "fallback" in actions and "deadline" not in actions:
        raise InputError(
            f"--mode: {mode!r}: +fallback gives fallback legs a deadline: add +deadline"
        )
    spec = _parse_base(base, gpu)
    if not actions:
        return spec
    return replace(
        spec,
        deadline="deadline" in actions,
        pipelined="pipelined" in actions,
        fallback="fallback" in actions,
    )


def resolve_actions(spec: ModeSpec, settings: Settings) -> tuple[bool, bool, bool]:
    """The selector's actions beyond the paper's a mode runs with: (deploy deadline,
    pipelined upload, fallback deadlines), the mode's suffixes over the settings'; the
    fallback legs' deadlines only with the deadline; MIN-LAT (the hindsight oracle)
    takes the paper's actions."""
    policy = settings.policy
    deadline = policy.deploy_deadline if spec.deadline is None else spec.deadline
    pipelined = policy.pipelined_upload if spec.pipelined is None else spec.pipelined
    fallback = policy.deploy_deadline_fallback if spec.fallback is None else spec.fallback
    if spec.mode is Mode.ORACLE and not spec.informed:
        return False, False, False
    return deadline, pipelined, fallback and deadline


def _parse_base(mode: str, gpu: str | None) -> ModeSpec:
    if mode == Mode.SELECTOR_PAPER:
        return ModeSpec(Mode.SELECTOR_PAPER)
    if mode == "duplicator":
        return ModeSpec(Mode.DUPLICATOR, gpu or AUTO)
    if mode.startswith("duplicator-"):
        return ModeSpec(Mode.DUPLICATOR, mode.split("-", 1)[1])
    if mode == "informed":
        return ModeSpec(Mode.ORACLE, informed=True)
    if mode.startswith("share:"):  # share:GAIN, share mode with policy.share_min_gain_s = GAIN
        try:
            gain = float(mode.split(":", 1)[1])
        except ValueError:
            gain = -1.0
        if not (gain >= 0 and math.isfinite(gain)):
            raise InputError(f"--mode: {mode!r}: expected share:SECONDS (a gain >= 0)")
        return ModeSpec(Mode.SHARE, min_gain_s=gain)
    if mode.startswith("selector-"):
        objective = mode.split("-", 1)[1]
        if objective not in OBJECTIVES:
            raise InputError(
                f"--mode: unknown objective {objective!r} in {mode!r}; "
                f"choose from {', '.join(OBJECTIVES)}"
            )
        return ModeSpec(Mode.SELECTOR, objective=cast(Objective, objective))
    try:
        return ModeSpec(Mode(mode))
    except ValueError:
        raise InputError(f"--mode: unknown mode {mode!r}; choose from {', '.join(MODES)}") from None


@dataclass(frozen=True)
class ReplayConfig:
    env_path: Path = DEFAULT_ENV
    mode: str = "selector"
    gpu: str | None = None
    hours: int | None = None
    batches: int | None = None
    days: int = 1
    counts: Path | None = None
    profile: Path = DEFAULT_PROFILE
    seed: int = 0
    probes: str = "auto"  # auto | full | window
    warmup_periods: int | None = None  # default: calibration_history + max_window
    threshold_images: int = 35
    bootstrap_sizes: tuple[int, ...] = (20, 200)
    settings: Settings = field(default_factory=Settings)


@dataclass
class ReplayedBatch:
    """Everything about one batch: the workload, the decision, the outcome, the truth."""

    batch: Batch
    plan: Plan
    outcome: Outcome
    truth: BatchTruth
    started_s: float


@dataclass
class ReplayResult:
    config: ReplayConfig
    mode: Mode
    cloud: str | None
    records: list[ReplayedBatch]
    env: SimEnvironment
    workload_name: str
    probes_mode: str
    probe_stats: dict[str, Any]
    wall_s: float
    timings: dict[str, float]
    sim_span_s: float
    core: Core  # what ran the batches, as build_core wired it (tests compare it)
    failed: list[ReplayedBatch] = field(default_factory=list)
    """Batches that failed (``outcome.error``; no runtime left to run on), in order:
    recorded as the daemon records them rather than ending the replay. The figures are
    of :attr:`records`, the batches that ran."""
    pod_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """Cloud pod seconds (not × GPUs) per kind and runtime, from each deployment's
    request to its teardown: ``batch`` (the batches' legs), ``learning`` (deployment
    and processing probes, the bootstrap; the probe shortcut's walked probes included)
    and, with ``keepalive.enabled``, ``warm`` (pods idling between batches)."""


@dataclass(frozen=True)
class _SimProbeWork:
    """The replay's :class:`~stoic.schedule.probe.inquisitor.ProbeWork`: a probe package of
    the replayed app, already in the (simulated) cloud store, so nothing crosses the
    uplink; the backend draws its T_p on the probe's own key."""

    app: str
    version: str
    bytes_per_image: float

    async def prepare(self, runtime: Runtime, place: Placer, n_images: int) -> tuple[Job, Upload]:
        n_bytes = round(n_images * self.bytes_per_image)
        job = Job(f"probe-{n_images}", n_images, n_bytes, self.app, self.version, "probe")
        return job, Upload("probe", n_bytes, 0.0)


DRAW_AHEAD = 4096
"""Probe ticks the replay's shortcut draws at once per runtime (about three days)."""


def probe_walk(steps: np.ndarray) -> tuple[np.ndarray, int]:
    """The ticks the inquisitor probes on, from tick 0, when the probe of tick ``k`` keeps
    it busy ``steps[k]`` ticks (at least 1: the next probe is on tick k + steps[k]), in
    ascending order, and the first tick it probes on after ``steps``'s last.

    Probes shorter than the period follow one another tick by tick, so the walk is runs
    of consecutive ticks, each ending on a probe that skips ticks (or on the last tick);
    Python steps from one such probe to the next and numpy lays the runs out: the loop
    turns a quarter as often as a tick-by-tick walk."""
    size = steps.size
    # run_end[k]: the first tick from k on whose probe skips ticks, else the last.
    skips = np.where(steps > 1, np.arange(size), size - 1)
    run_end = np.minimum.accumulate(skips[::-1])[::-1].tolist()
    step_of = steps.tolist()
    ends: list[int] = []
    k = 0
    while k < size:
        j = run_end[k]
        ends.append(j)
        k = j + step_of[j]
    to = np.array(ends, dtype=np.int64)
    since = np.concatenate([[0], to[:-1] + steps[to[:-1]]])
    n = to - since + 1
    walk = np.arange(n.sum()) + np.repeat(since - (np.cumsum(n) - n), n)
    return walk, k


@dataclass(frozen=True)
class _Block:
    """Probes drawn ahead for one runtime (:meth:`_ProbeShortcut._draw`), ticks counted
    from ``start``: T_d (NaN: never ready), the seconds each holds its pod, the ticks
    the inquisitor's walk probes on (ascending) and the first it probes on after."""

    start: int
    values: np.ndarray
    busy: np.ndarray
    walk: np.ndarray
    beyond: int


class _ProbeShortcut:
    """Walks probe ticks with the inquisitor's rules and feeds the last ones (window mode).

    The samples go straight to the predictor, the one part of the recorder chain that
    reads deployment samples (the bootstrap counter and the processing clock count T_p
    only): a replay over years feeds millions of them, and a coroutine per sample per
    recorder was a third of its time."""

    def __init__(
        self,
        env: SimEnvironment,
        predictor: Predictor,
        availability: Availability,
        settings: Settings,
        warmup_s: float,
    ) -> None:
        self.env = env
        self.observe = predictor.observe_probes
        self.availability = availability
        self.period = settings.inquisitor.period_s
        p = settings.predictor
        self.keep = max(p.calibration_history + p.max_window, p.deployment_tail_history)
        self.timeout = settings.predictor.deploy_timeout_s
        self.warmup_s = warmup_s
        self.clouds = [r for r in env.runtimes.values() if not r.is_edge]
        self.next_tick: dict[str, int] = {}
        self.pending: dict[str, list[tuple[int, float]]] = {r.name: [] for r in self.clouds}
        self.walked = 0
        self.fed = 0
        self.pod_s: dict[str, float] = {}  # runtime -> the walked probes' pod seconds
        # Per runtime, the block drawn ahead: its first tick, T_d of its ticks, the
        # seconds each probe holds its pod, the ticks the inquisitor probes on (from the
        # first) and the first it probes on after the block (_Block).
        self._drawn: dict[str, _Block] = {}

    def _draw(self, name: str, first: int, last: int) -> _Block:
        """The probes of ticks ``first .. last`` at least, drawn ahead in blocks of
        :data:`DRAW_AHEAD` ticks. Each probe's T_d depends only on its own tick (its
        Philox block and its time), so a block drawn once serves the batches after it,
        and numpy's cost per call is paid once a block rather than once a batch.

        A probe busy past the next tick makes the inquisitor skip ticks: the next one
        starts at tick k + floor(duration / period) + 1. The walk (:func:`probe_walk`) is
        made once a block, from its first tick; a batch's walk resumes where the last
        one stopped, so the ticks it asks for are a stretch of the block's."""
        block = self._drawn.get(name)
        if block is not None and block.start <= first and last < block.start + block.values.size:
            return block
        ticks = np.arange(first, max(last, first + DRAW_AHEAD - 1) + 1)
        values = self.env.probe_deployments(name, first, ticks * self.period - self.warmup_s)
        busy = np.where(np.isnan(values) | (values >= self.timeout), self.timeout, values)
        steps = (busy // self.period).astype(np.int64) + 1
        walk, beyond = probe_walk(steps)
        block = _Block(first, values, busy, walk, beyond)
        self._drawn[name] = block
        return block

    def start(self, first_tick: int) -> None:
        for r in self.clouds:
            self.next_tick[r.name] = first_tick

    async def catch_up(self, loop_now: float) -> None:
        """Feed every probe that has finished by ``loop_now`` (the last ``keep`` only)."""
        last_tick = math.floor(loop_now / self.period + 1e-9)
        for r in self.clouds:
            name = r.name
            k0 = self.next_tick[name]
            done = self.pending[name]
            if last_tick >= k0:
                # probe_deployments draws consecutive keys; tick k is key k.
                block = self._draw(name, k0, last_tick)
                walk = block.walk
                lo = int(walk.searchsorted(k0 - block.start))
                hi = int(walk.searchsorted(last_tick - block.start, side="right"))
                at = walk[lo:hi]
                self.walked += at.size
                self.pod_s[name] = self.pod_s.get(name, 0.0) + float(block.busy[at].sum())
                # Only the last ``keep`` probes can still influence the predictor.
                tail = at[-(self.keep + 1) :]
                ticks = (tail + block.start).tolist()
                done.extend(zip(ticks, block.values[tail].tolist(), strict=True))
                after = int(walk[hi]) if hi < walk.size else block.beyond
                self.next_tick[name] = block.start + after
            # Only the last ``keep`` finished probes can influence the predictor.
            if len(done) > self.keep + 1:
                del done[: len(done) - self.keep - 1]
            # Probes of one runtime run one after another, so their finish times
            # increase: the finished ones are a prefix; the rest stay pending.
            cut = len(done)
            while (
                cut
                and done[cut - 1][0] * self.period + _dur(done[cut - 1][1], self.timeout) > loop_now
            ):
                cut -= 1
            ready, self.pending[name] = done[:cut], done[cut:]
            if not ready:
                continue
            fed = ready[-self.keep :]
            self.observe(
                name,
                [EPOCH_S + t * self.period - self.warmup_s for t, _ in fed],
                [v for _, v in fed],
            )
            self.fed += min(len(ready), self.keep)
            t, v = ready[-1]
            end = EPOCH_S + t * self.period + _dur(v, self.timeout) - self.warmup_s
            if math.isnan(v) or v >= self.timeout:
                self.availability.mark_unavailable(name, end, "probe: deployment timed out")
            else:
                self.availability.mark_available(name, end, "probe succeeded")


def _dur(v: float, timeout: float) -> float:
    return timeout if math.isnan(v) or v >= timeout else v


def build_workload(cfg: ReplayConfig) -> tuple[WorkloadProfile, list[Batch]]:
    profile = WorkloadProfile.load(cfg.profile)
    if cfg.counts is not None:
        profile = profile.with_counts(cfg.counts)
    hours, batches = cfg.hours, cfg.batches
    if hours is None and batches is None:
        batches = 162
    return profile, generate(profile, hours=hours, batches=batches, days=cfg.days, seed=cfg.seed)


def with_budget(settings: Settings, budget: float | None) -> Settings:
    """``settings`` with ``requester.cloud_budget_pod_s_per_day = budget``."""
    r = settings.requester.model_copy(update={"cloud_budget_pod_s_per_day": budget})
    return settings.model_copy(update={"requester": r})


async def _replay(cfg: ReplayConfig, progress: Callable[[int, int], None] | None) -> ReplayResult:
    t_wall = time.perf_counter()
    settings = cfg.settings
    spec = parse_mode(cfg.mode, cfg.gpu)
    if spec.budget is not None:
        settings = with_budget(settings, spec.budget)
    mode, cloud = spec.mode, spec.cloud
    runtimes = {r.name: r for r in settings.runtime_list()}
    if cloud is not None and cloud != AUTO and cloud not in runtimes:
        raise InputError(f"--gpu: unknown runtime {cloud!r}; configured: {list(runtimes)}")
    profile, batches = build_workload(cfg)
    env = load_env(
        cfg.env_path,
        runtimes.values(),
        seed=cfg.seed,
        warmup=settings.requester.warmup,
        fallback=next((n for n, r in runtimes.items() if r.is_edge), None),
    )
    p = settings.predictor
    period = settings.inquisitor.period_s
    warm_periods = (
        cfg.warmup_periods
        if cfg.warmup_periods is not None
        else p.calibration_history + p.max_window
    )
    warmup_s = warm_periods * period
    span = (batches[-1].at_s if batches else 0.0) + warmup_s
    probes = cfg.probes if cfg.probes != "auto" else ("full" if span <= 7 * 86_400 else "window")
    if probes not in ("full", "window"):
        raise InputError(f"--probes: expected auto, full or window, got {cfg.probes!r}")

    loop = asyncio.get_running_loop()
    origin = loop.time()

    class _Clock:
        def now(self) -> float:
            return EPOCH_S + (loop.time() - origin) - warmup_s

    clock = _Clock()
    backend = SimulatedBackend(
        env,
        now_s=lambda: loop.time() - origin - warmup_s,
        probe_key=lambda: round((loop.time() - origin) / period),
        # The inquisitor probes on its tick: loop time k·period, read as now_s() does.
        probe_time=lambda keys: keys * period - origin - warmup_s,
    )
    backends: dict[str, RuntimeBackend] = dict.fromkeys(runtimes, backend)
    app, version = settings.controller.app, settings.controller.app_version

    async def uplink_check() -> bool:  # a request across the link at the tick
        return env.uplink_up(loop.time() - origin - warmup_s)

    given: dict[str, Mapping[str, float]] = {}  # the batch's totals the oracle is given
    deadlines: dict[str, Mapping[str, float]] = {}  # and, informed, its deploy deadlines
    chains: dict[str, dict[str, dict[str, float]]] = {}  # and its fallback legs' (+fallback)
    ranks: dict[str, dict[str, float]] = {}  # and what its requester falls back by (+fallback)
    deadline, pipelined, fallback = resolve_actions(spec, settings)
    policy = replace(
        PolicyOptions.from_settings(settings),
        duplicator_runtime=cloud or settings.requester.duplicator_runtime,
        threshold_images=cfg.threshold_images,
        objective=spec.objective or settings.policy.objective,
        oracle=lambda job: given[job.batch_id],
        deploy_deadline=deadline,
        fallback_deadline=fallback,
        pipelined_upload=pipelined,
    )
    actions = spec.informed and (deadline or pipelined)
    if actions:
        policy = replace(policy, oracle_deadlines=lambda job: deadlines[job.batch_id])
    if actions and fallback:
        policy = replace(
            policy,
            oracle_fallback_deadlines=lambda job: chains[job.batch_id],
            oracle_fallback_totals=lambda job: ranks[job.batch_id],
        )
    if spec.min_gain_s is not None:
        policy = replace(policy, share_min_gain_s=spec.min_gain_s)
    core = build_core(
        settings,
        backends,
        clock,
        make_recorder=PredictorRecorder,
        runtimes=runtimes.values(),
        probe_work=_SimProbeWork(app, version, env.spec.uplink.bytes_per_image),
        uplink_check=uplink_check,
        policy=policy,
        probing=Probing.LOOP if probes == "full" else Probing.WARMUP,
    )
    scheduler, inquisitor = core.scheduler, core.inquisitor
    shortcut = _ProbeShortcut(env, core.predictor, core.availability, settings, warmup_s)
    timings = {"decide_s": 0.0, "probes_s": 0.0, "run_s": 0.0}

    # Warm-up: the inquisitor's own loop, as the daemon runs it before any batch.
    inq_task = asyncio.create_task(
        inquisitor.run() if inquisitor is not None else asyncio.sleep(0),
        name="replay:inquisitor",
    )
    records: list[ReplayedBatch] = []
    failed: list[ReplayedBatch] = []
    planned: list[Plan] = []  # the plan of the batch in hand: a failed one keeps it

    async def keep_plan(plan: Plan) -> None:
        planned[:] = [plan]

    try:
        await asyncio.sleep(warmup_s)
        if probes == "window":
            inq_task.cancel()
            await asyncio.gather(inq_task, return_exceptions=True)
            shortcut.start(math.floor(warmup_s / period + 1e-9) + 1)
        if settings.controller.bootstrap:
            reps = [
                Job(f"rep{n}", n, round(n * env.spec.uplink.bytes_per_image), app, version)
                for n in cfg.bootstrap_sizes
            ]
            token = fresh_draws.set(True)
            try:
                await scheduler.bootstrap(app, version, reps)
            finally:
                fresh_draws.reset(token)
        for i, b in enumerate(batches):
            start = origin + warmup_s + b.at_s
            if loop.time() < start:
                await asyncio.sleep(start - loop.time())
            t0 = time.perf_counter()
            if probes == "window":
                await shortcut.catch_up(loop.time() - origin)
            t1 = time.perf_counter()
            job = Job(
                f"b{b.index:06d}",
                b.images,
                round(b.images * env.spec.uplink.bytes_per_image),
                app,
                version,
            )
            started = loop.time() - origin - warmup_s
            truth = env.audit(b.index, job, b.at_s, start_s=started)
            token2 = current_truth.set(truth)
            try:
                # In hindsight (MIN-LAT) or, for the ``informed`` mode, in expectation.
                deadlines.clear()
                chains.clear()
                ranks.clear()
                if actions:
                    chains[job.batch_id], ranks[job.batch_id] = {}, {}
                    totals, deadlines[job.batch_id] = env.expected_with_actions(
                        job,
                        b.at_s,
                        deadline=deadline,
                        pipelined=pipelined,
                        available=core.availability.available(),
                        fallbacks=chains[job.batch_id] if fallback else None,
                        ranking=ranks[job.batch_id],
                    )
                else:
                    totals = env.expected_totals(job, b.at_s) if spec.informed else truth.totals()
                given.clear()
                given[job.batch_id] = totals
                plan, outcome = await scheduler.handle(job, mode=mode, on_plan=keep_plan)
            except BackendError as exc:  # nothing left to run on: failed, as in the daemon
                log.warning("batch failed", batch_id=job.batch_id, error=str(exc))
                failed.append(_failed(b, job, planned[0], exc, truth, started, clock.now()))
                continue
            finally:
                current_truth.reset(token2)
            timings["probes_s"] += t1 - t0
            timings["run_s"] += time.perf_counter() - t1
            timings["decide_s"] += outcome.decision_s
            records.append(ReplayedBatch(b, plan, outcome, truth, started))
            if progress is not None:
                progress(i + 1, len(batches))
    finally:
        if not inq_task.done():
            inq_task.cancel()
        await asyncio.gather(inq_task, return_exceptions=True)
        if core.legs.warm_pods is not None:
            await core.legs.warm_pods.aclose()
    stats = {
        "mode": probes,
        "period_s": period,
        "warmup_s": warmup_s,
        "inquisitor_probes": inquisitor.probes if inquisitor else 0,
        "inquisitor_skipped_ticks": inquisitor.skipped if inquisitor else 0,
        "processing_probes": inquisitor.processing_probes if inquisitor else 0,
        "processing_probe_cloud_s": dict(inquisitor.cloud_s) if inquisitor else {},
        "shortcut_probes_walked": shortcut.walked,
        "shortcut_probes_fed": shortcut.fed,
        "shortcut_window": shortcut.keep,
        "cloud_budget_pod_s_per_day": core.budget.limit,
        "cloud_spent_pod_s": core.budget.spent_total,
        "cloud_price_s_per_pod_s": core.budget.per_pod_s,
    }
    pod_s = {kind: dict(by) for kind, by in backend.pod_s.items()}
    for name, seconds in shortcut.pod_s.items():
        pod_s["learning"][name] = pod_s["learning"].get(name, 0.0) + seconds
    if core.legs.warm_pods is not None:  # the backend billed a kept pod's idle time to its batch
        pod_s["warm"] = dict(core.legs.warm_pods.held_s)
        for name, seconds in core.legs.warm_pods.held_s.items():
            pod_s["batch"][name] -= seconds
    return ReplayResult(
        cfg,
        mode,
        cloud,
        records,
        env,
        profile.name,
        probes,
        stats,
        time.perf_counter() - t_wall,
        timings,
        loop.time() - origin,
        core,
        failed,
        pod_s,
    )


def _failed(
    b: Batch, job: Job, plan: Plan, exc: BackendError, truth: BatchTruth, started: float, now: float
) -> ReplayedBatch:
    """A batch the requester could not run anywhere, recorded as the daemon's dispatcher
    records it: ``failed``, with its error (an Outcome on no runtime)."""
    outcome = Outcome(
        job.batch_id, "", plan.mode, started_at=EPOCH_S + started, finished_at=now, error=str(exc)
    )
    return ReplayedBatch(b, plan, outcome, truth, started)


def run_replay(
    cfg: ReplayConfig, progress: Callable[[int, int], None] | None = None
) -> ReplayResult:
    """Run a replay to completion on a fresh looptime event loop (virtual time)."""
    loop = looptime.new_event_loop(start=0.0, noop_cycles=0)
    # asyncio runs a timer when ``when < time() + _clock_resolution`` (1 ns). Past ~97
    # simulated days a float's spacing exceeds 1 ns, ``time() + 1e-9 == time()``, and a
    # timer due exactly now never fires: the loop spins forever. Looptime keeps its clock
    # in whole microseconds, so a 1 µs resolution is exact here.
    loop._clock_resolution = max(loop._clock_resolution, 1e-6)  # type: ignore[attr-defined]
    try:
        return loop.run_until_complete(_replay(cfg, progress))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
