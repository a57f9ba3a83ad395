"""Where measurements go: the :class:`Recorder` protocol and the two recorders the core ships.

The requester (and the inquisitor) hand every measured component (T_d, T_t, T_p) to a
:class:`Recorder` the moment it is taken, so a batch that fails half-way still teaches
the predictor what it measured. What happens to a sample is not their business: the
daemon stores it, feeds the predictor and updates metrics
(:class:`stoic.daemon.recorder.DaemonRecorder`); the replay only feeds the predictor
(:class:`PredictorRecorder`); :func:`~stoic.schedule.assembly.build_core` chains the
scheduler's and the inquisitor's counting recorders behind either (:class:`MultiRecorder`).

:class:`PredictorLike` lives here too: it is the structural view of
``stoic.predict.predictor.Predictor`` that the scheduling core needs, both to record
samples into it and to ask it for estimates, so the core depends on what it uses, not on
the predictor's fitting code, and a test can hand it a table of estimates instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from stoic.logging import get_logger
from stoic.values import (
    Component,
    DeploymentSample,
    Estimate,
    ProcessingSample,
    TransferSample,
)

log = get_logger(__name__)

_Sample = TypeVar("_Sample", DeploymentSample, ProcessingSample, TransferSample)


class PredictorLike(Protocol):
    """What the scheduling core needs of ``stoic.predict.predictor.Predictor``.

    The ``observe_*`` results are ignored (the real one says whether it kept the sample)."""

    def observe_deployment(self, sample: DeploymentSample) -> object: ...

    def observe_processing(self, sample: ProcessingSample) -> object: ...

    def observe_transfer(self, sample: TransferSample) -> object: ...

    def estimate(
        self, runtime: str, n_images: int, n_bytes: int, *, app: str, app_version: str
    ) -> Estimate: ...

    def estimate_all(
        self,
        n_images: int,
        n_bytes: int,
        *,
        app: str,
        app_version: str,
        runtimes: list[str] | None = None,
    ) -> dict[str, Estimate]: ...

    def remaining_processing(
        self, runtime: str, n_images: int, elapsed_s: float, *, app: str, app_version: str
    ) -> Component: ...


class Recorder(Protocol):
    """Where every measured component goes (the daemon: store + predictor + metrics)."""

    async def deployment(self, sample: DeploymentSample) -> None: ...

    async def processing(self, sample: ProcessingSample) -> None: ...

    async def transfer(self, sample: TransferSample) -> None: ...


class PredictorRecorder:
    """Feeds every sample straight into the predictor (the replay needs no more)."""

    def __init__(self, predictor: PredictorLike) -> None:
        self.predictor = predictor

    async def deployment(self, sample: DeploymentSample) -> None:
        self.predictor.observe_deployment(sample)

    async def processing(self, sample: ProcessingSample) -> None:
        self.predictor.observe_processing(sample)

    async def transfer(self, sample: TransferSample) -> None:
        self.predictor.observe_transfer(sample)


class MultiRecorder:
    """Fans samples out to several recorders, in order. One failing recorder (a database
    hiccup) is logged and skipped: the batch and the other recorders carry on.

    The chain is fixed at construction (:func:`~stoic.schedule.assembly.build_core`), so
    each kind's bound methods are looked up once: a long replay feeds it hundreds of
    thousands of probe samples."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders: tuple[Recorder, ...] = recorders
        self._deployment = tuple(r.deployment for r in recorders)
        self._processing = tuple(r.processing for r in recorders)
        self._transfer = tuple(r.transfer for r in recorders)

    async def deployment(self, sample: DeploymentSample) -> None:
        await _fan_out(self._deployment, sample, "deployment")

    async def processing(self, sample: ProcessingSample) -> None:
        await _fan_out(self._processing, sample, "processing")

    async def transfer(self, sample: TransferSample) -> None:
        await _fan_out(self._transfer, sample, "transfer")


async def _fan_out(
    records: tuple[Callable[[_Sample], Awaitable[None]], ...], sample: _Sample, kind: str
) -> None:
    for record in records:
        try:
            await record(sample)
        except Exception:
            log.exception("recorder failed", sample=kind)
