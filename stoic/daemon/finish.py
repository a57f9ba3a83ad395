"""How a batch ended, recorded however long the store takes to accept it.

Once a batch has run, what it came to (:class:`Done` or :class:`Failed`) is worth
minutes of pod time, and the only copy is in memory. :class:`Finisher` writes it out:
the decision if the store refused it when it was made, the results document, the
finish (``running`` → ``done`` | ``failed``; a batch an operator cancelled is only
counted), then the share chunk objects go, the
metrics count it and one "batch finished" line says so. Each write is retried with
back-off (:mod:`stoic.daemon.retry`) until it lands, so a database locked past its
busy timeout or a full disk delays the batch rather than stranding it ``running``
with no owner until a restart. Every failed try counts in
``stoic_store_write_failures_total{write}`` and logs "store write failed; retrying";
the dispatcher's claims are reported the same way (:meth:`Finisher.failed_write`).

Kept apart from the dispatcher, which decides what runs and when; this module only
makes sure that what ran is not lost.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from stoic.clock import Clock
from stoic.daemon import chunks
from stoic.daemon.metrics import Metrics
from stoic.daemon.retry import Backoff, until_written
from stoic.errors import BatchNotFound, BatchStateError, ObjectNotFound
from stoic.ingest.metadata import annotate, parse_document
from stoic.logging import get_logger
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import metadata_key, results_key
from stoic.store.store import BatchRecord, Store
from stoic.values import BatchState, Outcome, Plan, SharePlan

log = get_logger("stoic.controller")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Done:
    """A batch that ran to its end, held in memory until the store has it."""

    plan: Plan
    outcome: Outcome
    decision_stored: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """A batch that failed (``plan``: None when it failed before one was made)."""

    plan: Plan | None
    error: str
    decision_stored: bool


class Finisher:
    """Records how batches ended, in the store, the object store and the metrics."""

    def __init__(
        self,
        *,
        store: Store,
        objects: ObjectStore,
        metrics: Metrics,
        clock: Clock,
        backoff: Backoff,
    ) -> None:
        self.store, self.objects, self.metrics = store, objects, metrics
        self.clock, self.backoff = clock, backoff

    def failed_write(self, write: str, exc: BaseException, delay: float, **keys: Any) -> None:
        """Count and log one failed try of ``write``, retried after ``delay`` seconds."""
        self.metrics.store_write_failures.labels(write).inc()
        log.warning(
            "store write failed; retrying",
            write=write,
            error=f"{type(exc).__name__}: {exc}",
            retry_in_s=round(delay, 3),
            **keys,
        )

    async def write(self, write: str, record: BatchRecord, fn: Callable[[], T]) -> T:
        """``fn`` in a thread, retried with back-off until the store takes it."""
        return await until_written(
            fn,
            backoff=self.backoff,
            on_retry=functools.partial(self.failed_write, write, batch_id=record.id),
        )

    def store_decision(self, record: BatchRecord, plan: Plan) -> None:
        """The policy's choice for a running batch (blocking: call it in a thread)."""
        self.store.record_decision(
            record.id, plan.chosen, plan.reason, plan.estimates_as_dicts(), at=self.clock.now()
        )

    async def finish(self, record: BatchRecord, ran: Done | Failed) -> None:
        """Store what the run came to, retrying each write until it lands. A batch the
        store no longer has running (finished or re-queued elsewhere) is left as is."""
        try:
            if ran.plan is not None and not ran.decision_stored:
                plan = ran.plan
                await self.write(
                    "decision", record, functools.partial(self.store_decision, record, plan)
                )
            match ran:
                case Done():
                    await self._succeed(record, ran.plan, ran.outcome)
                case Failed():
                    await self._fail(record, ran.plan, ran.error)
        except (BatchStateError, BatchNotFound) as exc:
            log.error(
                "batch finished elsewhere; result not recorded", batch_id=record.id, error=str(exc)
            )

    async def _succeed(self, record: BatchRecord, plan: Plan, outcome: Outcome) -> None:
        key = results_key(record.id)
        metadata = await asyncio.to_thread(self._metadata, record.id)
        data = json.dumps(results_document(record, plan, outcome, metadata)).encode()
        await self.write("results", record, functools.partial(self.objects.put_bytes, key, data))
        then = f"{plan.reason}; then: {outcome.reason}" if outcome.reason else None
        await self._finish_row(
            record,
            BatchState.DONE,
            transfer_s=outcome.transfer_s,
            deployment_s=outcome.deployment_s,
            processing_s=outcome.processing_s,
            total_s=outcome.total_s,
            winner=outcome.winner or outcome.runtime,
            cloud_used_s=outcome.cloud_used_s,
            cloud_wasted_s=outcome.cloud_wasted_s,
            results_key=key,
            error=outcome.error,
            decision_reason=then,
        )
        winner = outcome.winner or outcome.runtime
        estimate = plan.estimates.get(winner)
        self.metrics.observe_outcome(
            outcome,
            BatchState.DONE,
            planned_runtime=plan.chosen,
            predicted_total_s=estimate.total.mean if estimate is not None else None,
        )
        log.info(
            "batch finished",
            batch_id=record.id,
            state="done",
            runtime=winner,
            total_s=round(outcome.total_s, 3),
            transfer_s=round(outcome.transfer_s, 3),
            deployment_s=round(outcome.deployment_s, 3),
            processing_s=round(outcome.processing_s, 3),
            decision_ms=round(outcome.decision_s * 1000, 3),
        )
        if isinstance(plan, SharePlan):  # the results document holds them all now
            await asyncio.to_thread(chunks.remove, self.objects, record)

    async def _finish_row(self, record: BatchRecord, state: BatchState, **fields: Any) -> None:
        """The batch's row moves to its final ``state`` with ``fields``
        (:meth:`~stoic.store.store.Store.finish_batch`), finished now."""
        await self.write(
            "finish",
            record,
            functools.partial(
                self.store.finish_batch,
                record.id,
                state=state,
                finished_at=self.clock.now(),
                **fields,
            ),
        )

    def _metadata(self, batch_id: str) -> dict[str, Any] | None:
        """What the ingest read of the batch's images (None for a batch without it)."""
        try:
            return parse_document(self.objects.get_bytes(metadata_key(batch_id)))
        except ObjectNotFound:
            return None

    async def _fail(self, record: BatchRecord, plan: Plan | None, error: str) -> None:
        await self._finish_row(record, BatchState.FAILED, error=error)
        self.metrics.batches_finished.labels("failed", plan.chosen if plan else "none").inc()
        log.warning("batch finished", batch_id=record.id, state="failed", error=error)
        await asyncio.to_thread(chunks.remove, self.objects, record)  # nothing reads them now

    async def cancelled(self, record: BatchRecord) -> None:
        """An operator cancelled the batch (the store says so already) and its task has
        unwound: count it, and its share chunk objects go (nothing reads them again; a
        retry labels the batch afresh)."""
        self.metrics.batches_finished.labels("cancelled", "none").inc()
        log.info("batch finished", batch_id=record.id, state="cancelled")
        await asyncio.to_thread(chunks.remove, self.objects, record)


def results_document(
    record: BatchRecord, plan: Plan, outcome: Outcome, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The batch's ``results.json``, self-contained: each image's result is joined with
    what the ingest read of it (deployment, EXIF capture time and camera:
    :mod:`stoic.ingest.metadata`), so the exports and the operator page read one object.
    In share mode, ``shares`` counts the images of ``results`` per runtime that labelled
    them, earlier runs' included (a resumed batch labelled only the rest this time), so
    it always adds up to the results."""
    results = annotate(outcome.results or [], metadata)
    document: dict[str, Any] = {
        "batch_id": record.id,
        "app": record.app,
        "app_version": record.app_version,
        "runtime": outcome.winner or outcome.runtime,
        "mode": str(plan.mode),
        "deployment": metadata.get("deployment") if metadata is not None else None,
        "n_images": record.n_images,
        "results": results,
    }
    if outcome.shares:
        document["shares"] = dict(
            Counter(
                str(r.get("runtime") or "earlier") if isinstance(r, dict) else "earlier"
                for r in results
            )
        )
        document["duplicate_images"] = outcome.duplicate_images
    return document
