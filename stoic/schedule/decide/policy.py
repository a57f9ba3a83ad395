"""Scheduling policies: pure functions from estimates to a :class:`~stoic.values.Plan`.

The daemon and the replay call exactly these functions (docs/architecture.md, "Two
worlds, one code path"), so a table of estimates is all a test needs.

* **selector** (paper §3.7): run where the objective is smallest. The paper's objective
  is the predicted total T_s = T_t + T_d + T_p (``mean``); the default, ``expected``,
  adds what the median window leaves out: the deployment's heavy tail and the chance
  of a timeout followed by the edge fallback (:meth:`~stoic.values.Estimate.expected_total`);
  ``quantile`` takes T_d at a high quantile. Ties go to the edge, then to the runtime
  listed first: the edge costs no shared cloud time. ``docs/scheduling.md`` explains the
  choice.
* **duplicator** (paper §4.3): start the edge at once and, in parallel, upload and deploy
  one cloud runtime; when its pod is ready, :func:`keep_cloud` decides on fresh
  estimates whether the cloud's processing beats what remains of the edge's work. With
  ``duplicator_runtime = "auto"`` (the default) the cloud runtime is chosen per batch:
  the one whose pod would finish the batch first (upload and deployment overlap in this
  mode, so ``max(T_t, T_d) + T_p``, risk priced in), and none at all when the edge is
  predicted to finish first by ``edge_margin``: no pod, no cloud time.
* **the cloud budget** (:mod:`stoic.schedule.decide.budget`): with a budget, a
  :class:`~stoic.schedule.decide.budget.Price` enters every decision. A cloud runtime
  whose run would hold more pod-seconds × GPUs than are left today is not offered (the
  edge takes the work); the selector minimises its objective + λ·pod-seconds, the
  duplicator deploys a leg only where the latency it expects to save exceeds λ times
  the pod time it expects to hold, share adds a leg only where its gain, less that
  price, still reaches ``share_min_gain_s``. Without a budget (:data:`FREE`) none of
  this runs.
* **deploy deadline** and **pipelined upload** (``policy.deploy_deadline``,
  ``policy.pipelined_upload``, off by default; ``selector-paper`` never): the selector
  scores each cloud runtime by its least expected total over its deadlines, its upload
  overlapping its deployment if asked (:mod:`stoic.schedule.decide.deadline`), and the
  plan carries the deadlines; the duplicator's cloud leg gets the deadline past which
  its pod could no longer beat the edge. The selector is one path whatever the price:
  with a budget each cloud runtime's least expected total *plus* the price of the
  pod-seconds it expects to hold is taken over its deadlines (a price moves a
  deadline, never turns an action off); :func:`keep_cloud`, the duplicator's decision
  at pod ready, weighs the pod-seconds it would hold at the price the plan carries.
  With ``policy.deploy_deadline_fallback`` (off by default) each fallback leg gets a
  deadline of its own too, priced as a fallback down the requester's chain
  (:func:`~stoic.values.fallback_after` on :func:`predicted_totals`, each runtime once,
  the edge last with none), and an
  abandonment is priced at that chain's expected total (:func:`_chain`).
* baselines for the replay: **edge-only**, **gpu1-only**, **threshold** (a fixed
  batch-size cut-over to a GPU runtime), **oracle** (MIN-LAT: needs the ground truth, so
  only the replay can use it), and **pinned** (the user names the runtime).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from stoic.errors import PredictorError
from stoic.schedule.decide.budget import FREE, Price
from stoic.schedule.decide.deadline import Deployments, cloud_choice, pod_s_at, race_deadline
from stoic.schedule.share.fluid import fluid_bound
from stoic.schedule.share.forecast import expected_finish, share_capacity
from stoic.settings import Settings
from stoic.values import (
    Component,
    Estimate,
    Job,
    Mode,
    Plan,
    RacePlan,
    RuntimeKind,
    SharePlan,
    SinglePlan,
    fallback_after,
)

Objective = Literal["mean", "expected", "quantile"]
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class PolicyOptions:
    """Knobs of the policies (``settings.policy``, the duplicator's in
    ``settings.requester``); the objective's default is ours, the rest follow the paper."""

    edge_runtime: str = "edge"
    duplicator_runtime: str = AUTO
    threshold_runtime: str = "gpu1"
    threshold_images: int = 35  # the paper's edge/GPU1 cross-over (section 4.2)
    objective: Objective = "expected"
    edge_margin: float = 0.1
    share_min_gain_s: float = 5.0
    share_max_clouds: int = 3
    oracle: Callable[[Job], Mapping[str, float]] | None = None
    """The oracle's ground truth: actual total seconds per runtime of a job (the replay
    supplies it; MIN-LAT cannot run without)."""
    oracle_deadlines: Callable[[Job], Mapping[str, float]] | None = None
    """The informed oracle's deploy deadlines per cloud runtime (the replay's
    ``informed+deadline``: the deadlines of least expected total under the spec)."""
    oracle_fallback_deadlines: Callable[[Job], Mapping[str, Mapping[str, float]]] | None = None
    """With ``fallback_deadline``, the informed oracle's deadlines of the fallback legs,
    per first choice (``SimEnvironment.expected_with_actions``'s ``fallbacks``)."""
    oracle_fallback_totals: Callable[[Job], Mapping[str, float]] | None = None
    """With those, the totals the informed oracle's requester ranks its fallbacks by:
    the spec's expected totals, by which the informed reference orders the chains it
    prices (``expected_with_actions``'s ``ranking``), not the predictor's estimates."""
    deploy_deadline: bool = False
    deadline_min_gain_s: float = 1.0
    fallback_deadline: bool = False
    """With ``deploy_deadline``: a fallback leg's own deadline, priced as a fallback."""
    pipelined_upload: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, edge_runtime: str | None = None) -> PolicyOptions:
        r = settings.requester
        edges = [x.name for x in settings.runtimes if x.kind is RuntimeKind.EDGE]
        return cls(
            edge_runtime=edge_runtime or (edges[0] if edges else "edge"),
            duplicator_runtime=r.duplicator_runtime,
            objective=settings.policy.objective,
            edge_margin=r.duplicator_edge_margin,
            share_min_gain_s=settings.policy.share_min_gain_s,
            share_max_clouds=settings.policy.share_max_cloud_runtimes,
            deploy_deadline=settings.policy.deploy_deadline,
            deadline_min_gain_s=settings.policy.deploy_deadline_min_gain_s,
            fallback_deadline=settings.policy.deploy_deadline_fallback,
            pipelined_upload=settings.policy.pipelined_upload,
        )


def _order(estimates: Mapping[str, Estimate], edge: str) -> list[str]:
    names = list(estimates)
    return sorted(names, key=lambda n: (n != edge, names.index(n)))


def _fallback_s(estimates: Mapping[str, Estimate], name: str, edge: str) -> float:
    """What a timed-out deployment of ``name`` still costs after the timeout: the
    predicted total of where the requester falls back (the runtime predicted soonest
    among the others, :meth:`Requester._fallback`), or, alone, a second try of it."""
    others = [e.total.mean for n, e in estimates.items() if n != name]
    return min(others) if others else estimates[name].total.mean


def score(
    estimates: Mapping[str, Estimate],
    name: str,
    objective: Objective = "expected",
    edge: str = "edge",
) -> float:
    """The selector's objective for running the batch on ``name`` alone."""
    e = estimates[name]
    if objective == "mean":
        return e.total.mean
    fallback = _fallback_s(estimates, name, edge)
    if objective == "expected":
        return e.expected_total(fallback)
    return e.quantile_total(fallback)


def race_score(
    estimates: Mapping[str, Estimate],
    cloud: str,
    objective: Objective = "expected",
    edge: str = "edge",
) -> float:
    """When the pod of ``cloud`` would finish the batch in the duplicator: the upload
    runs while the pod deploys, so ``max(T_t, T_d) + T_p``; a timed-out pod leaves the
    batch to the edge (its predicted total), which runs anyway."""
    e = estimates[cloud]
    r = e.risk
    # No uplink wait: the pod deploys meanwhile (docs/evaluation/README.md, "Uplink checks").
    transfer = e.transfer.mean - e.uplink_wait_s
    if objective == "mean":
        return max(transfer, e.deployment.mean) + e.processing.mean
    edge_total = estimates[edge].total.mean if edge in estimates else math.inf
    if objective == "quantile":
        if r.deployment_quantile_s is None:
            return edge_total if r.p_timeout > 0 else e.total.mean - e.uplink_wait_s
        return max(transfer, r.deployment_quantile_s) + e.processing.mean
    ready = max(transfer, e.deployment.mean + r.deployment_excess_s)
    # No processing tail on either side (docs/evaluation/README.md, "The processing tail").
    return (1.0 - r.p_timeout) * (ready + e.processing.mean) + r.p_timeout * edge_total


def single_pod_s(e: Estimate) -> float:
    """Pod-seconds (not × GPUs) a run of the batch alone on ``e``'s runtime expects to
    hold, from its deployment's request to its teardown: T_d (its tail included), T_t,
    T_p; a timed-out deployment holds the pod for the timeout."""
    r = e.risk
    ran = e.deployment.mean + r.deployment_excess_s + e.transfer.mean + e.processing.mean
    return (1.0 - r.p_timeout) * ran + r.p_timeout * r.timeout_s


def race_pod_s(
    estimates: Mapping[str, Estimate],
    cloud: str,
    objective: Objective,
    edge: str,
    deadline: bool = False,
) -> float:
    """Pod-seconds the duplicator's ``cloud`` leg expects to hold: to the end of the
    batch where its pod is predicted to beat the edge (:func:`race_score`), else to
    its ready (the edge keeps the batch and the pod is torn down). With its deploy
    deadline (:func:`race_deadline`, ``deadline``) and ready samples to go on: a pod
    ready by the deadline to the end of the batch, any other to the deadline."""
    e = estimates[cloud]
    r = e.risk
    edge_total = estimates[edge].total.mean if edge in estimates else math.inf
    until = race_deadline(edge_total, e, r.timeout_s or math.inf) if deadline else None
    if until is not None and r.ready_s:
        dist = Deployments(r.ready_s, r.p_timeout, r.timeout_s or math.inf)
        transfer = e.transfer.mean - e.uplink_wait_s
        return pod_s_at(dist, until, overlap_s=transfer, after_s=e.processing.mean)
    ready = e.deployment.mean + r.deployment_excess_s
    finish = race_score(estimates, cloud, objective, edge)
    held = max(e.transfer.mean - e.uplink_wait_s, ready) + e.processing.mean
    return (1.0 - r.p_timeout) * (held if finish < edge_total else ready) + (
        r.p_timeout * r.timeout_s
    )


def predicted_totals(estimates: Mapping[str, Estimate]) -> dict[str, float]:
    """Each runtime's predicted total: what the requester ranks its fallbacks by
    (:func:`~stoic.values.fallback_after`, :meth:`Requester._fallback`)."""
    return {name: e.total.mean for name, e in estimates.items()}


def affordable(estimates: Mapping[str, Estimate], edge: str, price: Price) -> dict[str, Estimate]:
    """The runtimes a decision may use under ``price``: the edge, and each cloud runtime
    whose run alone (:func:`single_pod_s`) fits in what is left of today's budget."""
    return {n: e for n, e in estimates.items() if n == edge or price.affordable(n, single_pod_s(e))}


def select_min(
    estimates: Mapping[str, Estimate], edge: str = "edge", objective: Objective = "mean"
) -> str:
    """The runtime with the smallest objective (ties: edge first, then listed order)."""
    if not estimates:
        raise PredictorError("no runtime is available to estimate")
    order = _order(estimates, edge)
    return min(order, key=lambda n: (score(estimates, n, objective, edge), order.index(n)))


def decide(
    mode: Mode,
    job: Job,
    estimates: Mapping[str, Estimate],
    *,
    options: PolicyOptions = PolicyOptions(),
    pinned: str | None = None,
    price: Price = FREE,
) -> Plan:
    """Choose where ``job`` runs. ``estimates`` holds the *available* runtimes only;
    ``price`` is the cloud budget's (the module docstring)."""
    edge = options.edge_runtime
    if price.binds and edge in estimates:
        estimates = affordable(estimates, edge, price)
    has_edge = edge in estimates
    objective = options.objective

    def plan(
        runtime: str,
        reason: str,
        speculative: bool = False,
        scores: Mapping[str, float] | None = None,
    ) -> Plan:
        given, seen = dict(estimates), dict(scores or {})
        if speculative:
            return RacePlan(
                runtime,
                edge,
                pod_price=price.cost(runtime, 1.0),
                mode=mode,
                reason=reason,
                estimates=given,
                scores=seen,
            )
        return SinglePlan(runtime, mode=mode, reason=reason, estimates=given, scores=seen)

    def fallback(wanted: str) -> Plan:
        if has_edge:
            return plan(edge, f"{wanted} unavailable; fell back to {edge}")
        best = select_min(estimates, edge, objective)
        return plan(best, f"{wanted} and {edge} unavailable; fastest remaining is {best}")

    match mode:
        case Mode.SELECTOR:
            return _selector(estimates, options, price)
        case Mode.SELECTOR_PAPER:
            return _selector(
                estimates,
                replace(options, deploy_deadline=False, pipelined_upload=False),
                FREE,
                mode,
            )
        case Mode.SHARE:
            return _share(job, estimates, options, plan, price)
        case Mode.DUPLICATOR if options.duplicator_runtime == AUTO:
            return _auto_duplicator(job, estimates, options, plan, price)
        case Mode.DUPLICATOR:
            cloud = options.duplicator_runtime
            if cloud not in estimates:
                return fallback(cloud)
            if not has_edge:
                return plan(cloud, f"duplicator: {edge} unavailable; running {cloud} alone")
            if price.per_pod_s > 0:
                gain = estimates[edge].total.mean - race_score(estimates, cloud, objective, edge)
                held = race_pod_s(estimates, cloud, objective, edge, options.deploy_deadline)
                cost = price.cost(cloud, held)
                if gain <= cost:
                    return plan(
                        edge,
                        f"duplicator: {cloud} would save {gain:.1f} s for {cost:.1f} s of "
                        f"cloud price; {edge} alone",
                    )
            race = plan(
                cloud,
                f"duplicator: start {edge} now, deploy {cloud}, decide when its pod is ready",
                speculative=True,
            )
            return _with_race_deadline(race, estimates, options)
        case Mode.EDGE_ONLY:
            return plan(edge, "edge-only baseline") if has_edge else fallback(edge)
        case Mode.GPU1_ONLY:
            return plan("gpu1", "gpu1-only baseline") if "gpu1" in estimates else fallback("gpu1")
        case Mode.THRESHOLD:
            cut, gpu = options.threshold_images, options.threshold_runtime
            if job.n_images >= cut:
                if gpu in estimates:
                    return plan(gpu, f"threshold: {job.n_images} >= {cut} images")
                return fallback(gpu)
            return (
                plan(edge, f"threshold: {job.n_images} < {cut} images")
                if has_edge
                else fallback(edge)
            )
        case Mode.ORACLE:
            if options.oracle is None:
                raise PredictorError("the oracle policy needs the ground truth (replay only)")
            truth = options.oracle(job)
            known = {n: truth[n] for n in estimates if n in truth}
            if not known:
                raise PredictorError("the oracle has no ground truth for any available runtime")
            best = min(known, key=lambda n: known[n])
            # In hindsight (MIN-LAT), or in expectation (``informed``): the replay says which.
            reason = f"oracle: {best} has the least given total ({known[best]:.1f} s)"
            if options.oracle_deadlines is None and not options.pipelined_upload:
                return plan(best, reason)
            given = options.oracle_deadlines(job) if options.oracle_deadlines else {}
            chains, ranking = options.oracle_fallback_deadlines, options.oracle_fallback_totals
            ranks = ranking(job) if ranking else {}
            return SinglePlan(
                best,
                mode=mode,
                reason=reason,
                estimates=dict(estimates),
                deadlines=dict(given),
                pipelined=options.pipelined_upload,
                fallback_deadlines=dict(chains(job).get(best, {})) if chains else {},
                fallback_totals={n: t for n, t in ranks.items() if n in estimates},
            )
        case Mode.PINNED:
            if pinned is None:
                raise PredictorError("pinned mode needs a runtime")
            if pinned in estimates:
                return plan(pinned, f"pinned by the user to {pinned}")
            return fallback(pinned)
    raise PredictorError(f"unknown mode {mode!r}")  # pragma: no cover - exhaustive match


def _auto_duplicator(
    job: Job,
    estimates: Mapping[str, Estimate],
    options: PolicyOptions,
    plan: Callable[..., Plan],
    price: Price = FREE,
) -> Plan:
    """The duplicator with its cloud runtime chosen per batch (see the module doc)."""
    edge, objective = options.edge_runtime, options.objective
    clouds = [n for n in estimates if n != edge]
    if edge not in estimates:
        if not clouds:
            raise PredictorError("no runtime is available to estimate")
        best = select_min(estimates, edge, objective)
        return plan(best, f"duplicator: {edge} unavailable; running {best} alone")
    edge_total = estimates[edge].total.mean
    if not clouds:
        return plan(edge, f"duplicator: no cloud runtime available; {edge} alone")
    scores = {c: race_score(estimates, c, objective, edge) for c in clouds}
    scores[edge] = edge_total
    costs = {
        c: price.cost(c, race_pod_s(estimates, c, objective, edge, options.deploy_deadline))
        if price.per_pod_s > 0
        else 0.0
        for c in clouds
    }
    best = min(clouds, key=lambda c: (scores[c] + costs[c], clouds.index(c)))
    # No pod only if the edge wins by the margin without extrapolating (docs/scheduling.md).
    seen = estimates[edge].processing_seen
    known = seen is None or job.n_images <= seen
    if edge_total - scores[best] <= costs[best] and costs[best] > 0:
        return plan(
            edge,
            f"duplicator: best pod {best} would save {edge_total - scores[best]:.1f} s for "
            f"{costs[best]:.1f} s of cloud price: no pod deployed",
            scores=scores,
        )
    if known and edge_total <= (1.0 - options.edge_margin) * scores[best]:
        return plan(
            edge,
            f"duplicator: {edge} predicted first ({edge_total:.1f} s; best pod {best} "
            f"{scores[best]:.1f} s): no pod deployed",
            scores=scores,
        )
    race = plan(
        best,
        f"duplicator: start {edge} now ({edge_total:.1f} s), deploy {best} (would finish in "
        f"{scores[best]:.1f} s), decide when its pod is ready",
        speculative=True,
        scores=scores,
    )
    return _with_race_deadline(race, estimates, options)


def _with_race_deadline(
    race: Plan, estimates: Mapping[str, Estimate], options: PolicyOptions
) -> Plan:
    """The race's cloud leg with its deploy deadline (:func:`race_deadline`), if asked."""
    edge = options.edge_runtime
    if not (options.deploy_deadline and isinstance(race, RacePlan) and edge in estimates):
        return race
    cloud = estimates[race.cloud]
    d = race_deadline(estimates[edge].total.mean, cloud, cloud.risk.timeout_s or math.inf)
    if d is None:
        return race
    return replace(race, deadlines={race.cloud: d}, reason=f"{race.reason}; deadline {d:.3g} s")


def _selector(
    estimates: Mapping[str, Estimate],
    options: PolicyOptions,
    price: Price,
    mode: Mode = Mode.SELECTOR,
) -> Plan:
    """The selector, one path for every action and price: each runtime scored by its
    objective plus the price of the pod-seconds × GPUs it expects to hold (0 on the
    edge; :data:`FREE`: nothing); least wins (ties as :func:`select_min`).

    With the deploy deadline and/or the pipelined upload on, each cloud runtime's
    objective is its least expected total + price over its deadlines
    (:func:`~stoic.schedule.decide.deadline.cloud_choice`), its upload overlapping its
    deployment if asked, and the plan carries the deadlines: a price moves a deadline or
    the choice, it never turns an action off."""
    if not estimates:
        raise PredictorError("no runtime is available to estimate")
    edge, objective = options.edge_runtime, options.objective
    actions = options.deploy_deadline or options.pipelined_upload
    priced = price.per_pod_s > 0

    def cost(name: str, pod_s: float) -> float:
        return price.cost(name, pod_s) if priced and name != edge else 0.0

    def run_cost(name: str) -> float:  # a run alone, no deadline (unpriced: nothing to sum)
        return cost(name, single_pod_s(estimates[name])) if priced else 0.0

    scores: dict[str, float] = {}
    deadlines: dict[str, float] = {}
    after: dict[str, dict[str, float]] = {}  # each first choice's fallback deadlines
    if not actions:
        for name in estimates:
            scores[name] = score(estimates, name, objective, edge) + run_cost(name)
    else:
        # Where an abandoned deployment falls back, priced as the selector prices it (its
        # tail, timeouts and pod time in): at its bare mean, a runtime abandoned at once
        # would pass for its fallback with the fallback's risk left out.
        base = {n: score(estimates, n, "expected", edge) + run_cost(n) for n in estimates}
        chained = options.deploy_deadline and options.fallback_deadline and edge in estimates

        def leg(name: str, fallback_s: float) -> tuple[float, float | None]:
            choice = cloud_choice(
                estimates[name],
                fallback_s,
                deadline=options.deploy_deadline,
                pipelined=options.pipelined_upload,
                min_gain_s=options.deadline_min_gain_s,
                pod_price=cost(name, 1.0),
            )
            return choice.expected_s + cost(name, choice.pod_s), choice.deadline_s

        for name in estimates:
            if name == edge:
                scores[name] = base[name]
                continue
            if chained:
                fallback_s, after[name] = _chain(estimates, edge, name, base[edge], leg)
            else:
                others = [base[m] for m in estimates if m != name]
                fallback_s = min(others) if others else base[name]
            scores[name], d = leg(name, fallback_s)
            if d is not None:
                deadlines[name] = d
    order = _order(estimates, edge)
    best = min(order, key=lambda n: (scores[n], order.index(n)))
    t = estimates[best].total
    if actions:
        how = " pipelined," if options.pipelined_upload and best != edge else ""
        until = f" deadline {deadlines[best]:.3g} s," if best in deadlines else ""
        what, detail = "expected T_s", f"{how}{until}"
    else:
        what = "predicted T_s" if objective == "mean" else f"{objective} T_s"
        detail = ""
    if priced:
        what += f" + cloud price at {price.per_pod_s:.3f} s per pod-second"
    return SinglePlan(
        best,
        mode=mode,
        reason=f"selector: {best} has the smallest {what} ({scores[best]:.1f} s;{detail} "
        f"T_s {t.mean:.1f} ± {t.std:.1f} s)",
        estimates=dict(estimates),
        scores=scores,
        deadlines=deadlines,
        pipelined=options.pipelined_upload,
        fallback_deadlines=after.get(best, {}),
    )


def _chain(
    estimates: Mapping[str, Estimate],
    edge: str,
    first: str,
    edge_s: float,
    leg: Callable[[str, float], tuple[float, float | None]],
) -> tuple[float, dict[str, float]]:
    """What abandoning ``first`` costs with each fallback leg given its own deadline
    (``policy.deploy_deadline_fallback``): the requester's chain of fallbacks
    (:func:`~stoic.values.fallback_after` on the predicted totals, each runtime tried
    once, the edge last), priced from its end,
    the edge's ``edge_s``, back: each cloud leg's least expected total over its
    deadlines (``leg``) with the rest of the chain as its fallback. Returns the chain's
    expected total and its cloud legs' deadlines."""
    chain, tried, ranks = [], [first], predicted_totals(estimates)
    while (nxt := fallback_after(ranks, edge, tried)) is not None:
        chain.append(nxt)
        tried.append(nxt)
    total, deadlines = edge_s, {}
    for name in reversed(chain[:-1]):  # the chain ends on the edge
        total, d = leg(name, total)
        if d is not None:
            deadlines[name] = d
    return total, deadlines


def _share(
    job: Job,
    estimates: Mapping[str, Estimate],
    options: PolicyOptions,
    plan: Callable[..., Plan],
    price: Price = FREE,
) -> Plan:
    """Share mode: the edge starts at once; add the cloud runtimes, greedily by gain,
    whose predicted contribution (with their timeout risk) finishes the batch at least
    ``share_min_gain_s`` sooner, at most ``share_max_clouds`` of them. A pod predicted to
    be ready only after the batch is done gains nothing and is not deployed."""
    edge, n = options.edge_runtime, job.n_images
    caps = {name: share_capacity(e, n, job.n_bytes, name == edge) for name, e in estimates.items()}
    chosen = [edge] if edge in estimates else []
    candidates = [c for c in estimates if c != edge]
    if not chosen:  # no edge: the best single cloud runtime carries the batch
        if not candidates:
            raise PredictorError("no runtime is available to estimate")
        first = min(candidates, key=lambda c: fluid_bound(n, [caps[c]]))
        chosen.append(first)
        candidates.remove(first)

    def expected(members: list[str]) -> float:
        return expected_finish(n, members, caps, estimates, edge)

    finish = expected(chosen)
    scores = {"alone": finish}
    while candidates and len(chosen) - (edge in chosen) < options.share_max_clouds:
        gains = {c: finish - expected([*chosen, c]) for c in candidates}
        if price.per_pod_s > 0:  # a leg holds its pod to the end of the batch
            gains = {c: g - price.cost(c, finish - g) for c, g in gains.items()}
        best = max(candidates, key=lambda c: (gains[c], -candidates.index(c)))
        scores[best] = gains[best]
        if gains[best] < options.share_min_gain_s:
            break
        chosen.append(best)
        candidates.remove(best)
        finish = expected(chosen)
    scores["shared"] = finish
    clouds = tuple(c for c in chosen if c != edge)
    lead = chosen[0]
    what = ", ".join(f"{c} (−{scores[c]:.1f} s)" for c in clouds) or "no cloud runtime"
    return SharePlan(
        lead,
        clouds,
        mode=Mode.SHARE,
        reason=f"share: {lead} starts now with {what}; predicted {finish:.1f} s",
        estimates=dict(estimates),
        scores=scores,
    )


def keep_cloud(
    edge_remaining: Component, cloud_processing: Component, pod_price: float = 0.0
) -> bool:
    """The duplicator's lagging decision (paper §3.7): when the cloud pod is ready, keep
    it (and cancel the edge) only if its predicted T_p beats the edge's predicted
    remaining time. On a tie the edge keeps the batch: it costs no shared cloud time.

    At a price (``pod_price``: latency seconds per pod-second of this pod, × GPUs; the
    plan's :attr:`~stoic.values.RacePlan.pod_price`) keeping the pod holds it T_p more,
    while the edge costs nothing: keep it only if T_p plus that price still wins."""
    p = cloud_processing.mean
    return p + pod_price * p < edge_remaining.mean
