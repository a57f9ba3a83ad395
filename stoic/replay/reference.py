"""Each mode's in-class reference: what its own action space could do on the same draws.

MIN-LAT (the least single-runtime total of each batch, in hindsight) is the paper's
yardstick, but it is no bound for the modes that use more than one runtime per batch,
and it asks of a selector what no selector can know. A mode is therefore also scored
against the best of *its own class*, computed from the batch's truth (the same draws
every mode replays):

=================================  ==============================================  =====
mode                               in-class reference, per batch                   bound
=================================  ==============================================  =====
share (and share:GAIN)             the fluid lower bound (:mod:`stoic.replay.bound`)  yes
duplicator-RUNTIME (fixed cloud)   the race of the edge and that cloud leg, kept   yes
                                   or cancelled in hindsight: min(edge total,
                                   max(T_t, T_d) + warm-up + T_p of the cloud)
duplicator (auto)                  the same race with the cloud leg an informed    no
                                   scheduler would pick (least expected race,
                                   ``SimEnvironment.expected_duplicates``)
every single-runtime mode:         the informed selector: the true total of the    no
selector*, threshold, edge-only,   runtime of least *expected* total under the
gpu1-only, oracle, informed        spec and its present state
                                   (``SimEnvironment.expected_totals``); a timeout
                                   then costs the next runtime's, as the
                                   requester falls back
selector+deadline, +pipelined      the informed selector of that action space: the  no
(and informed+…)                   runtime and deploy deadline of least expected
                                   total, the upload pipelined if asked
                                   (``SimEnvironment.expected_with_actions``)
a race of two cloud legs (and,     the race bound (:func:`~stoic.replay.bound.     yes
if it likes, the edge): no mode    race_lower_bound`): the least over runtimes of
of the replay races two yet        each leg's floor, max(upload, T_d + T_p) for a
                                   pod; every report carries it (``race_s``,
                                   ``vs_race``)
=================================  ==============================================  =====

One reference per action space, then: the paper's selector (``informed``, a replay
mode, so it runs through the same requester in the same worlds), the duplicator (the
informed duplicator, and the hindsight race for a fixed cloud leg), share (the fluid
bound) and a race of two cloud legs (the race bound, which also holds for the selector
and the duplicator: every race is one of legs, and ``tests/test_bound.py`` holds every
replayed batch of theirs to it). The sweep reports each mode's gap to its reference,
seed by seed, with its standard error (:func:`stoic.replay.sweep.learning_gaps`).

A *bound* no batch of the mode beats (the property tests hold the fluid bound to it);
the informed references are the best a scheduler of the class can *expect*, knowing the
environment but not the batch's dice: a lucky scheduler beats them on some batches, and
the hindsight ``oracle`` on most. The informed references replay the ``informed``
mode's stream (a fresh environment of the same spec and seed, asked batch by batch in
order), so the informed selector's reference is the informed mode's own picks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stoic.backends.simulated import BatchTruth, RuntimeTruth, SimEnvironment
from stoic.replay.bound import fluid_lower_bound
from stoic.replay.runner import ReplayResult, parse_mode, resolve_actions
from stoic.schedule.decide.policy import AUTO
from stoic.values import Job, Mode, fallback_after

INFORMED_SELECTOR = "informed selector"
INFORMED_DUPLICATOR = "informed duplicator"
#: The references that are the best of a class *in expectation*, not bounds.
INFORMED_REFERENCES = frozenset({INFORMED_SELECTOR, INFORMED_DUPLICATOR})


@dataclass(frozen=True, slots=True)
class Reference:
    """A mode's in-class reference: its name, whether it bounds every batch of the
    mode, and its seconds for each batch of ``ReplayResult.records``, in order."""

    name: str
    bound: bool
    per_batch: list[float]


def race_s(truth: BatchTruth, edge: str, cloud: str) -> float:
    """The duplicator's race on ``cloud`` decided in hindsight: the edge's total or the
    cloud leg's (uploading while it deploys), whichever is less; a timed-out deployment
    leaves the edge's."""
    e = truth.runtimes[edge].total_s
    t = truth.runtimes.get(cloud)
    if t is None or not t.attempts or t.attempts[-1] is None:
        return e
    return min(e, max(t.transfer_s, t.attempts[-1]) + t.warmup_s + t.processing_s)


def _fresh(env: SimEnvironment) -> SimEnvironment:
    """An environment whose informed stream starts where the replay's did."""
    return SimEnvironment(
        env.spec, env.runtimes.values(), seed=env.seed, fallback=env.fallback, warmup=env.warmup
    )


def _actions(result: ReplayResult) -> tuple[bool, bool, bool] | None:
    """The selector's actions beyond the paper's a single-runtime result ran with
    (deploy deadline, pipelined upload, fallback deadlines), as the runner resolves
    them; None: neither of the first two."""
    spec = parse_mode(result.config.mode, result.config.gpu)
    if not (spec.mode is Mode.SELECTOR or spec.informed):
        return None
    deadline, pipelined, fallback = resolve_actions(spec, result.config.settings)
    return (deadline, pipelined, fallback) if deadline or pipelined else None


def _informed(result: ReplayResult, *, race: bool) -> list[float]:
    """The informed pick's seconds for each recorded batch: asked of every batch, the
    failed ones too, in order, as the ``informed`` mode asks (with the result's
    actions, as ``informed+deadline+pipelined`` asks)."""
    env = _fresh(result.env)
    edge = env.fallback
    acts = None if race else _actions(result)
    out: dict[int, float] = {}
    for rec in sorted([*result.records, *result.failed], key=lambda r: r.batch.index):
        t = rec.truth
        job = Job(f"b{rec.batch.index:06d}", t.n_images, t.n_bytes)
        if race and edge is not None:
            expected = env.expected_duplicates(job, rec.batch.at_s)
            pick = min(expected, key=lambda n: expected[n], default=edge)
            out[rec.batch.index] = race_s(t, edge, pick)
        elif acts is not None:
            deadline, pipelined, fallback = acts
            chains: dict[str, dict[str, float]] | None = {} if fallback else None
            ranks: dict[str, float] = {}
            expected, deadlines = env.expected_with_actions(
                job,
                rec.batch.at_s,
                deadline=deadline,
                pipelined=pipelined,
                fallbacks=chains,
                ranking=ranks,
            )
            chain = None if chains is None or edge is None else _Chain(edge, ranks, chains)
            out[rec.batch.index] = _with_actions(
                t, expected, deadlines, pipelined, env.timeout_s, chain
            )
        else:
            expected = env.expected_totals(job, rec.batch.at_s)
            out[rec.batch.index] = _with_fallback(t, expected, env.timeout_s)
    return [out[rec.batch.index] for rec in result.records]


def _with_fallback(truth: BatchTruth, expected: dict[str, float], timeout_s: float) -> float:
    """The true total of the runtime of least expected total; where its deployment
    timed out, the timeout and then the true total of the runtime of least expected
    total among the others, as the requester falls back (not the audit's rule of
    timeout + edge, which overcharges a site whose edge is slow for large batches)."""
    ranked = sorted(expected, key=lambda n: expected[n])
    t = truth.runtimes[ranked[0]]
    if not (t.attempts and t.attempts[-1] is None) or len(ranked) < 2:
        return t.total_s
    return timeout_s + truth.runtimes[ranked[1]].total_s


@dataclass(frozen=True, slots=True)
class _Chain:
    """How the informed requester falls back (``+fallback``): by the requester's rule on
    the expected totals ``ranks``, each fallback leg abandoned at its deadline in
    ``deadlines`` (per first choice), as ``expected_with_actions`` priced it."""

    edge: str
    ranks: dict[str, float]
    deadlines: dict[str, dict[str, float]]

    def after(self, first: str) -> list[str]:
        """The runtimes the requester falls back to after ``first``, in turn."""
        tried = [first]
        while (nxt := fallback_after(self.ranks, self.edge, tried)) is not None:
            tried.append(nxt)
        return tried[1:]


def _with_actions(
    truth: BatchTruth,
    expected: dict[str, float],
    deadlines: dict[str, float],
    pipelined: bool,
    timeout_s: float,
    chain: _Chain | None = None,
) -> float:
    """:func:`_with_fallback` with the actions: a deployment not ready by its deadline
    is abandoned then (the deadline, then the next runtime's true total); a pipelined
    cloud leg is ready at max(upload, T_d), then warms and processes. With ``chain``
    (``+fallback``) the batch falls back down the requester's chain, each fallback leg
    abandoned at its own deadline too (or timed out)."""
    ranked = sorted(expected, key=lambda n: expected[n])
    if chain is not None:
        first, own = ranked[0], chain.deadlines.get(ranked[0], {})
        after = chain.after(first)
        limits = [deadlines.get(first, timeout_s)] + [own.get(n, timeout_s) for n in after]
        return _down_the_chain(truth, [first, *after], limits, pipelined)
    t = truth.runtimes[ranked[0]]
    if not t.attempts:
        return t.total_s
    dep, limit = t.attempts[-1], deadlines.get(ranked[0], timeout_s)
    if (dep is None or dep >= limit) and len(ranked) >= 2:
        return limit + _ready_total(truth.runtimes[ranked[1]], pipelined)
    return _ready_total(t, pipelined)


def _down_the_chain(
    truth: BatchTruth, legs: list[str], limits: list[float], pipelined: bool
) -> float:
    """The true total of running ``legs`` in turn, each abandoned at its limit (its
    deadline, or the timeout), until one is ready in time or none is left."""
    spent = 0.0
    for name, limit in zip(legs[:-1], limits, strict=False):
        t = truth.runtimes[name]
        dep = t.attempts[-1] if t.attempts else 0.0  # the edge: no deployment
        if dep is not None and dep < limit:
            return spent + _ready_total(t, pipelined)
        spent += limit
    return spent + _ready_total(truth.runtimes[legs[-1]], pipelined)


def _ready_total(t: RuntimeTruth, pipelined: bool) -> float:
    """A runtime's true total, its upload overlapping its deployment if ``pipelined``."""
    dep = t.attempts[-1] if t.attempts else None
    if dep is None or not pipelined:
        return t.total_s
    return max(t.transfer_s, dep) + t.warmup_s + t.processing_s


def reference(result: ReplayResult) -> Reference:
    """The in-class reference of ``result``'s mode (the module docstring's table)."""
    if result.mode is Mode.SHARE:
        fluid = [fluid_lower_bound(r.truth) for r in result.records]
        return Reference("fluid lower bound", True, fluid)
    edge = result.env.fallback
    if result.mode is Mode.DUPLICATOR and edge is not None:
        cloud = result.cloud
        if cloud is None or cloud == AUTO:
            return Reference(INFORMED_DUPLICATOR, False, _informed(result, race=True))
        races = [race_s(r.truth, edge, cloud) for r in result.records]
        return Reference(f"race with {cloud} in hindsight", True, races)
    return Reference(INFORMED_SELECTOR, False, _informed(result, race=False))


def ratio(latency_s: float, ref_s: float) -> float | None:
    """``latency_s / ref_s`` where both are finite and ``ref_s`` positive, else None."""
    if ref_s > 0 and math.isfinite(ref_s) and math.isfinite(latency_s):
        return latency_s / ref_s
    return None
