"""The daemon's recorder: every measurement goes to the predictor, the metrics, the store.

The scheduling core hands each measured component (T_d, T_t, T_p) to a
:class:`~stoic.schedule.execute.recorder.Recorder` the moment it is taken; this is the one the
daemon gives it. In-memory consumers come first, so a database hiccup (logged by the
requester's ``MultiRecorder``) cannot stop the predictor from learning the measurement.
"""

from __future__ import annotations

import asyncio

from stoic.daemon.metrics import Metrics
from stoic.schedule.execute.recorder import PredictorLike
from stoic.store.store import Store
from stoic.values import DeploymentSample, ProcessingSample, TransferSample


class DaemonRecorder:
    """Predictor, metrics, then store."""

    def __init__(self, store: Store, predictor: PredictorLike, metrics: Metrics) -> None:
        self.store, self.predictor, self.metrics = store, predictor, metrics

    async def deployment(self, sample: DeploymentSample) -> None:
        self.predictor.observe_deployment(sample)
        self.metrics.observe_deployment(sample)
        await asyncio.to_thread(self.store.add_deployment_sample, sample)

    async def processing(self, sample: ProcessingSample) -> None:
        self.predictor.observe_processing(sample)
        self.metrics.observe_processing(sample)
        await asyncio.to_thread(self.store.add_processing_sample, sample)

    async def transfer(self, sample: TransferSample) -> None:
        self.predictor.observe_transfer(sample)
        self.metrics.observe_transfer(sample)
        await asyncio.to_thread(self.store.add_transfer_sample, sample)
