"""Lower bounds of a batch: the fluid bound (no schedule the simulator can run finishes
sooner) and the race bound (no schedule that races whole-batch legs finishes sooner).

MIN-LAT bounds the schedulers that put a batch on one runtime. Share mode, the
duplicator and a pipelined selector are not among them, so each batch is also scored
against a bound that holds for *every* schedule of the replay: :func:`fluid_lower_bound`,
computed from the batch's truth (what the simulator drew for it: each pod's deployment,
each runtime's seconds per image and first call's fixed cost, the batch's transfer
time). docs/scheduling.md ("The fluid lower bound") gives the same derivation in prose.

**The relaxed problem.** Time runs from the batch's start (the requester's ``since``;
the truth is drawn then). The ``n`` images are work that divides perfectly. Each runtime
``i`` labels at ``1 / a_i`` images a second; it labels only after its start ``s_i``:

* a *local* runtime (the edge: no deployment, no upload) from ``s_i = f_i``, its first
  call's fixed cost;
* a *pod* from ``s_i = d_i + f_i``, its deployment (the successful draw of this batch)
  plus its first call's fixed cost; a pod whose deployment timed out labels nothing;
* and a pod labels only images that have already crossed the uplink, which carries the
  batch's images to all pods together at no more than one image per ``u = T_t / n``
  seconds from the start.

The bound is the least ``T`` at which ``n`` images can be labelled. Each step from a
real schedule to this problem can only make it faster, so no real schedule beats it:

1. *Uploads start at the start.* A real upload starts at or after it (the selector's
   after the deployment, share's during it); data that arrives earlier never hurts.
2. *One shared uplink, at the batch's rate.* Share's chunks cross
   :class:`~stoic.backends.simulated.SharedUplink`, which moves at most ``n_bytes /
   T_t`` bytes a second in total however many are in flight (outages are averaged into
   that rate by the simulator); a whole-package upload delivers nothing before ``T_t``
   after its own start, when the cap already admits all ``n`` images. Chunks are
   priced pro rata (``Job.chunk``), and an image uploaded twice (a hedge, a stolen
   reservation) only spends more of the link. Where outages stall uploads
   (``uplink.outage_model: stall``) the cap is the link's cumulative capacity from the
   batch's start instead: the batch's drawn rate times the seconds the link was up
   (every upload, a package or a chunk, moves only then, at that rate in total).
3. *Divisible work, fixed cost paid once, up front.* A real call of ``k`` images starts
   once its images are uploaded and the pod is ready, and takes ``f + a·k`` (the first
   labelling call of a deployment, and every whole-batch call) or ``l + a·k`` (a later
   chunk, ``l ≥ 0``): map its images onto the fluid pod's interval ``[start + fixed,
   end]``, after the pod's ``d + f``, each after its upload. Later calls' overheads are
   dropped; calls on one runtime run one at a time in every executor.
4. *No warm-up call.* The selector and the duplicator warm a pod with a one-image call
   (``model_load_s``) before the timed one; share does not (its first chunk loads the
   model while it labels, paying ``f``), so the bound charges none, as share counts it.
5. *Each image once.* An image labelled twice (a hedge) counts once; the runtimes
   split the images as best suits them, in hindsight.
6. *Deployments start at the start,* once per runtime and batch: every executor deploys
   a runtime at most once per batch (a timeout is final, and the simulator never fails
   a deployment, so nothing is retried); a later one is only later (also where outages
   stall deployments: the instant a pod is seen ready never decreases with the
   instant it was requested).

**Its exact solution.** For a deadline ``T`` the local runtimes label ``E(T) = Σ max(0,
(T − s_i) / a_i)``. The pods together label at rate ``C(t) = Σ_{s_i ≤ t} 1 / a_i`` once
started, but by any time ``t`` no more than ``t / u`` images have reached them; the most
they can have labelled by ``T`` is ``min_{0 ≤ τ ≤ T} (τ/u + ∫_τ^T C)`` (label at full
rate, or as fast as the link feeds, whichever binds), and since ``∫_0^τ C`` is convex in
``τ`` the minimum is at an end: ``P(T) = min(T/u, Q(T))``, ``Q(T) = Σ_pods max(0, (T −
s_i) / a_i)``. Uploading in the order the pods will label (earliest need first) reaches
it, so this is the relaxed problem's optimum, not a looser figure. ``E + min(T/u, Q) ≥
n`` holds exactly when both ``E + Q ≥ n`` and ``E + T/u ≥ n`` hold, and both sides grow
with ``T``, so the bound is the later of two fluid finishes
(:func:`~stoic.schedule.share.fluid.fluid_bound`): every runtime without the uplink, and
the local runtimes with the uplink itself as one more runtime (from 0, ``u`` per image).

**With stalling outages** the link has delivered ``A(τ)`` images by ``τ``, piecewise
linear (flat in an outage), and the pods can have labelled at most ``min_τ (A(τ) + Q(T)
− Q(τ))`` by ``T``. ``A − Q`` falls wherever the link is down or the pods outrun it and
rises only at the link's rate, so its minimum over ``[0, T]`` is at ``0``, ``T`` or an
outage's end: the bound checks those and finds the least feasible ``T`` by bisection
(feasibility only grows with ``T``), returning the last infeasible ``T``, so it errs
low by less than a nanosecond.

**The race bound** (:func:`race_lower_bound`) is the floor of one action space: the
schedules that *race* legs, each leg labelling the whole batch on one runtime, the
batch done when the first leg finishes: a selector (one leg), the duplicator (the edge
and one cloud leg) and a race of two cloud legs against each other and, if it likes,
the edge (no mode of the replay runs one yet; the next issue's actions may). It is the
least over runtimes of a *leg bound*:

* the edge (a local runtime): ``f + a·n``, its whole-batch call, exactly its T_p;
* a pod: ``max(U, d + f + a·n)``, with ``d`` its deployment drawn for the batch (a
  timed-out one: no finish), ``f + a·n`` its whole-batch call and ``U`` the time the
  uplink takes to carry the whole batch from the batch's start (the batch's T_t, or
  with stalling outages the link's time to move ``n_bytes`` at the batch's rate).

*Proof.* Take any racing schedule and its winning leg on runtime ``i``. The batch takes
that leg's finish. A local leg labels ``n`` images in calls that each cost at least
``a`` an image and the first a fixed ``f`` (a later chunk's overhead and a partial
call's fill loss only add: ``RuntimeTruth.chunk_s``), so it finishes no sooner than
``f + a·n``. A pod leg computes only after its pod is ready, at ``d`` or later
(steps 6 of the fluid bound: one deployment per runtime and batch, requested no
earlier than the start, and seen ready no earlier for a later request), and its calls
take ``f + a·n`` at least as above: it finishes no sooner than ``d + f + a·n``. It
labels only images that have crossed the uplink, and the last of them crosses no
sooner than ``U`` (step 2: however the uploads are chunked or shared with the other
leg, the link moves the batch's bytes at no more than its rate; crediting each leg
the whole link only lowers the figure): it finishes no sooner than ``U``. A warm-up
call adds time; none is charged. So the winning leg finishes no sooner than its leg
bound, and the race no sooner than the least leg bound over all runtimes, whichever
pair it raced. A fallback after a timeout is a later leg (the edge from the timeout
on), which finishes no sooner than the edge's own bound.

It sits between the two other figures of a batch: no lower than the fluid bound (one
leg's schedule is a schedule of the fluid problem: the relaxed problem can do anything
a race does) and no higher than the hindsight best single runtime (the batch's
MIN-LAT term, ``T_t + T_d + warm-up + T_p`` for a pod: ``max ≤ sum``). The gap between
it and the fluid bound is what splitting the batch (share) can gain over any race.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stoic.backends.simulated import BatchTruth, RuntimeTruth
from stoic.schedule.share.fluid import Capacity, fluid_bound

BISECTIONS = 200
"""Enough halvings to pin any bound to a float's resolution."""


def _timed_out(t: RuntimeTruth) -> bool:
    return bool(t.attempts) and t.attempts[-1] is None


def fluid_lower_bound(truth: BatchTruth) -> float:
    """The least time in which any schedule the replay can run labels ``truth``'s batch
    (the module docstring derives it); ``inf`` if no runtime could label it."""
    n = truth.n_images
    if n <= 0:
        return 0.0
    local: list[Capacity] = []
    pods: list[Capacity] = []
    upload_s = math.inf  # T_t of the batch's package: one draw, the same for every pod
    for t in truth.runtimes.values():
        if not t.attempts:
            local.append(Capacity(0.0, t.first_call_s, t.per_image_s))
        elif not _timed_out(t):
            ready = t.attempts[-1] or 0.0
            pods.append(Capacity(ready, t.first_call_s, t.per_image_s))
            upload_s = min(upload_s, t.transfer_s)
    compute = fluid_bound(n, local + pods)
    if not pods or not math.isfinite(compute):
        return compute
    if truth.link is not None:
        return _stalled(truth, local, pods, compute)
    uplink = Capacity(0.0, 0.0, upload_s / n)  # the link as one more runtime, from 0
    return max(compute, fluid_bound(n, [*local, uplink]))


def _labelled(caps: Sequence[Capacity], since: float, until: float) -> float:
    """Images the runtimes ``caps`` label from ``since`` to ``until``, at full rate."""
    out = 0.0
    for c in caps:
        begin = max(since, c.start_s)
        if until > begin:
            out += (until - begin) / c.per_image_s if c.per_image_s > 0 else math.inf
    return out


def _stalled(
    truth: BatchTruth, local: list[Capacity], pods: list[Capacity], compute: float
) -> float:
    """The bound where outages stall uploads (module docstring): the least ``T`` at which
    the local runtimes and the pods, fed by the link's capacity from the batch's start,
    can label the batch; ``compute`` (no link at all) is a lower bound of it."""
    link, bps, n = truth.link, truth.bps, truth.n_images
    start = truth.start_s if truth.start_s is not None else truth.at_s
    assert link is not None and bps is not None
    if truth.n_bytes <= 0 or not math.isfinite(bps):
        return compute

    def crossed(tau: float) -> float:  # images the link has carried by ``tau``
        return bps * link.uptime(start, start + tau) * n / truth.n_bytes

    def feasible(t: float) -> bool:
        taus = [0.0, t, *(e - start for e in link.ends_between(start, start + t))]
        fed = min(crossed(tau) + _labelled(pods, tau, t) for tau in taus)
        return _labelled(local, 0.0, t) + fed >= n

    lo = compute
    if feasible(lo):
        return lo
    hi = lo + max(lo, 1.0)
    while not feasible(hi):
        lo, hi = hi, hi + 2 * (hi - lo)
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if not lo < mid < hi:
            break
        if feasible(mid):
            hi = mid
        else:
            lo = mid
    return lo


def _upload_s(truth: BatchTruth) -> float:
    """The least time the uplink takes to carry the whole batch from its start: the
    batch's T_t (one draw for every pod), or with stalling outages the link's own."""
    pods = [t for t in truth.runtimes.values() if t.attempts]
    if truth.link is not None and truth.bps is not None and math.isfinite(truth.bps):
        start = truth.start_s if truth.start_s is not None else truth.at_s
        return truth.link.finish(start, truth.n_bytes, truth.bps) - start
    return min((t.transfer_s for t in pods), default=math.inf)


def race_lower_bound(truth: BatchTruth) -> float:
    """The least time in which any schedule that races whole-batch legs (the module
    docstring: a selector, the duplicator, a race of two cloud legs) labels
    ``truth``'s batch; ``inf`` if no runtime could label it."""
    n = truth.n_images
    if n <= 0:
        return 0.0
    upload = _upload_s(truth)
    legs = [math.inf]
    for t in truth.runtimes.values():
        whole = t.chunk_s(n, first=True)
        if not t.attempts:
            legs.append(whole)
        elif not _timed_out(t):
            legs.append(max(upload, (t.attempts[-1] or 0.0) + whole))
    return min(legs)
