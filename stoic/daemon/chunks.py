"""Share mode's results in the object store, one object per finished chunk.

A share batch stores each chunk's results as it lands (``batches/<id>/chunks/``), so
that a restart labels only the images without one. Four parties use these objects,
and the format lives here, once: the dispatcher writes them and reads them back when
a batch resumes; crash recovery at start-up asks whether the run that was cut short
made progress; and whoever ends the batch removes them.

* **Each object names the run that wrote it** (``claimed_at``: the batch's
  ``started_at`` when that run claimed it). A run cut short by a crash that stored a
  chunk moved the batch forward, and is not counted against ``controller.max_attempts``
  (:func:`progressed`, ``Store.requeue_running(progressed=...)``): a share batch
  killed after every few chunks would otherwise fail while it was nearly done.
* **An unreadable object counts as not labelled** (a store without atomic writes may
  keep a truncated one after a crash): its images are labelled again.
* **A batch that ends takes its objects along** (:func:`remove`): done, they are merged
  into the results document; failed, nothing will read them again. The sub-packages
  cut for the cloud runtimes (``parts/``) go with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from stoic.errors import StoicError
from stoic.logging import get_logger
from stoic.schedule.share.board import Chunk
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import chunk_results_key, chunks_prefix, parts_prefix
from stoic.store.store import BatchRecord

log = get_logger("stoic.controller")


def store_chunk(
    objects: ObjectStore,
    record: BatchRecord,
    chunk: Chunk,
    runtime: str,
    results: Sequence[Any],
) -> None:
    """Write one finished chunk's results (each tagged with ``runtime``) as one object."""
    document = {
        "start": chunk.start,
        "stop": chunk.stop,
        "runtime": runtime,
        "claimed_at": record.started_at,
        "results": [{**r, "runtime": runtime} for r in results],
    }
    key = chunk_results_key(record.id, chunk.start, chunk.stop)
    objects.put_bytes(key, json.dumps(document).encode())


def load_chunks(objects: ObjectStore, record: BatchRecord) -> dict[int, Any]:
    """The images earlier runs labelled (index → result)."""
    done: dict[int, Any] = {}
    for stored in _stored(objects, record.id):
        for i, r in enumerate(stored.results, start=stored.start):
            if 0 <= i < record.n_images:
                done.setdefault(i, r)
    return done


def progressed(objects: ObjectStore, record: BatchRecord) -> bool:
    """Whether the run that claimed ``record`` (at its ``started_at``) stored a chunk.
    An object store that cannot be read shows no progress: the run counts."""
    if record.started_at is None:
        return False
    try:
        return any(s.claimed_at == record.started_at for s in _stored(objects, record.id))
    except (StoicError, OSError) as exc:
        log.warning("share: chunk objects unreadable", batch_id=record.id, error=str(exc))
        return False


def remove(objects: ObjectStore, record: BatchRecord) -> None:
    """Delete the batch's chunk objects and share sub-packages; a failure is logged
    (the objects are only garbage now, not worth failing or retrying a batch for)."""
    for prefix in (chunks_prefix(record.id), parts_prefix(record.package_key)):
        try:
            objects.delete_prefix(prefix)
        except (StoicError, OSError) as exc:
            log.warning("could not remove share objects", batch_id=record.id, error=str(exc))


@dataclass(frozen=True, slots=True)
class _Stored:
    start: int
    results: list[Any]
    claimed_at: float | None  # None: written before runs were named


def _stored(objects: ObjectStore, batch_id: str) -> Iterator[_Stored]:
    for key in objects.list(chunks_prefix(batch_id)):
        try:
            doc = json.loads(objects.get_bytes(key))
            claimed_at = doc.get("claimed_at")
            stored = _Stored(
                int(doc["start"]),
                list(doc["results"]),
                None if claimed_at is None else float(claimed_at),
            )
        except (StoicError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("share: ignoring an unreadable chunk object", key=key)
            continue
        yield stored
