"""The serverless function: ``handler(event, context)`` with kubeless' Python signature.

One request names a batch package and a model in the object store, and optionally a
range of the package's members (``start``/``stop``: the share mode calls one warm
instance many times, each on a chunk of one package). The function loads the model
(cached in memory by key, so after one warm-up call later calls skip it: the paper's
warm-up, section 3.7), then streams the package, decodes and classifies its images
with the stages overlapped (:mod:`stoic.function.pipeline`) on every device
(:mod:`stoic.function.workers`), and answers per-image labels and scores, each naming
its member and its index in the package, with its own timings. A second action trains
or fine-tunes the model on labelled images in the store and saves a new version.

Loading a model is the per-instance cost: read the ``.keras`` file, replicate it per
device, trace one compiled call per device, measure the batch size per device, and
freeze the garbage collector's view of everything allocated so far (``gc.freeze``),
so that a full collection during a call walks only the call's own objects, not the
~400k objects TensorFlow and Keras keep alive (a 0.2 s pause when it happened inside a
1,000-image call).

The request/response contract is documented in ``docs/function.md``; the local and
Kubernetes backends rely on it. Errors are typed: a missing package raises
``ObjectNotFound``, a missing model ``ModelNotFound`` (both name the key), a bad request
``InputError``; the HTTP server (:mod:`stoic.function.server`) maps them to 404/400.
A file in the package that is not a decodable image is reported in its own result's
``error`` field and does not fail the batch.

State (object store, model cache) lives in a :class:`Function` instance; the
module-level :func:`handler` uses one built lazily from ``stoic.settings.load_settings()``
on first call, nothing at import time.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from stoic.errors import FunctionError, InputError, ModelNotFound, ObjectNotFound
from stoic.settings import FunctionSettings
from stoic.storage.objectstore import ObjectStore, make_object_store, validate_key
from stoic.storage.package import PackageIndex

if TYPE_CHECKING:
    from stoic.function.contract import Preprocessing
    from stoic.function.workers import DeviceModels

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Requests -----------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassifyRequest(_Request):
    action: Literal["classify"] = "classify"
    package: str = Field(min_length=1, description="object key of the batch package (tar)")
    model: str = Field(min_length=1, description="object key of the model (.keras)")
    warmup: bool = Field(False, description="classify only the first image (of the range)")
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="images per model call; none = the instance's own"
    )
    start: int = Field(0, ge=0, description="first member to classify (0-based package index)")
    stop: int | None = Field(None, ge=1, description="member index to stop before; none = end")

    @model_validator(mode="after")
    def _check_range(self) -> ClassifyRequest:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        return self


class TrainRequest(_Request):
    action: Literal["train"]
    images: str = Field(min_length=1, description="prefix; layout <prefix>/<label>/<file>")
    base_model: str | None = Field(None, description="model key to fine-tune; none = new")
    output: str = Field(min_length=1, description="object key for the new model (.keras)")
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0


Request = Annotated[ClassifyRequest | TrainRequest, Field(discriminator="action")]
_REQUEST: TypeAdapter[ClassifyRequest | TrainRequest] = TypeAdapter(Request)


def parse_request(data: Any) -> ClassifyRequest | TrainRequest:
    """Validate a request body (dict, JSON text or bytes); InputError names the field."""
    if isinstance(data, bytes | bytearray | str):
        try:
            data = json.loads(data or b"{}")
        except json.JSONDecodeError as exc:
            raise InputError(f"request body is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = {"action": "classify", **data}
    try:
        req = _REQUEST.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"bad request: {problems}") from None
    for name in ("package", "model", "images", "output", "base_model"):
        value = getattr(req, name, None)
        if value:
            validate_key(value.rstrip("/") if name == "images" else value)
    return req


# The function -------------------------------------------------------------------------

PACKAGE_INDEXES = 32
"""Packages whose member offsets a function remembers (a few hundred bytes each)."""


@dataclass
class LoadedModel:
    key: str
    model: Any
    classes: list[str]
    preprocessing: Preprocessing
    devices: DeviceModels
    load_s: dict[str, float] = field(default_factory=dict)
    """Seconds per step of loading it: read, replicate, trace, tune_batch, gc."""


class Function:
    """The function's state: an object store, its settings, a small cache of loaded
    models and a pool of image decoders shared by its calls."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        cache_size: int = 2,
        settings: FunctionSettings | None = None,
    ) -> None:
        self.store = store
        self.cache_size = cache_size
        self.settings = settings or FunctionSettings()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._indexes: OrderedDict[tuple[Any, ...], PackageIndex] = OrderedDict()
        self._index_lock = threading.Lock()

    @property
    def decode_threads(self) -> int:
        from stoic.function.pipeline import usable_cpus

        return self.settings.decode_threads or min(usable_cpus(), 32)

    def _decode_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.decode_threads, thread_name_prefix="stoic-decode"
                )
            return self._pool

    def _take_index(self, key: str, stream: Any) -> tuple[tuple[Any, ...], PackageIndex] | None:
        """The member index learnt by earlier calls on this package file, taken out of
        the cache for this call (so two concurrent calls never extend one index); None
        for a stream that is not a file (S3: read sequentially anyway)."""
        try:
            st = os.fstat(stream.fileno())
        except (AttributeError, OSError, ValueError):
            return None
        ident = (key, st.st_size, st.st_mtime_ns, st.st_ino)
        with self._index_lock:
            return ident, self._indexes.pop(ident, None) or PackageIndex()

    def _put_index(self, ident: tuple[Any, ...], index: PackageIndex) -> None:
        with self._index_lock:
            self._indexes[ident] = index
            while len(self._indexes) > PACKAGE_INDEXES:
                self._indexes.popitem(last=False)

    def close(self) -> None:
        """Stop the decoder threads (a later call starts them again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    # Model cache ----------------------------------------------------------------------

    def get_model(self, key: str) -> tuple[LoadedModel, float]:
        """The model under ``key`` and the seconds spent loading it (0.0 if cached)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], 0.0
            t0 = time.perf_counter()
            loaded = self._load(key)
            self._models[key] = loaded
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
            return loaded, time.perf_counter() - t0

    def _load(self, key: str) -> LoadedModel:
        from stoic.function import classifier as cnn
        from stoic.function import workers

        cfg = self.settings
        steps: dict[str, float] = {}
        t = time.perf_counter()

        def step(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            steps[name] = now - t
            t = now

        try:
            with cnn.open_model(self.store, key) as stored:
                step("read_s")
                prep = stored.preprocessing
                names = (
                    workers.check_devices(cfg.devices) if cfg.devices else workers.visible_devices()
                )
                devices = workers.replicate(stored.model, names, prep.input_size, prep.affine)
                step("replicate_s")
        except ObjectNotFound:
            raise ModelNotFound(key) from None
        except (OSError, ValueError, InputError) as exc:
            raise FunctionError(f"model {key!r} cannot be loaded: {exc}") from exc
        workers.warm(devices)
        step("trace_s")
        for dev, call in devices.calls.items():
            if cfg.batch_size is not None:
                devices.batch_sizes[dev] = cfg.batch_size
                continue
            devices.batch_sizes[dev], devices.tuning[dev] = workers.tune_batch_size(
                call,
                prep.input_size,
                cfg.batch_candidates,
                budget_s=cfg.tune_budget_s,
                tolerance=cfg.batch_tolerance,
            )
        step("tune_batch_s")
        if cfg.freeze_gc:
            gc.collect()
            gc.freeze()
        step("gc_s")
        return LoadedModel(key, stored.model, stored.classes, prep, devices, steps)

    def drop_models(self) -> None:
        """Forget every cached model (the next call pays model loading again)."""
        with self._lock:
            self._models.clear()

    # Actions --------------------------------------------------------------------------

    def __call__(self, data: Any) -> dict[str, Any]:
        req = parse_request(data)
        if isinstance(req, TrainRequest):
            return self.train(req)
        return self.classify(req)

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        from stoic.function.classifier import decode_image
        from stoic.function.pipeline import run_pipeline

        t_start = time.perf_counter()
        cfg = self.settings
        # Open the package first (it may 404), then load the model (it may 404 too);
        # the package is then streamed while it is decoded and classified.
        with self.store.open_read(req.package) as stream:
            loaded, model_load_s = self.get_model(req.model)
            indexed = self._take_index(req.package, stream)
            out = run_pipeline(
                stream,
                loaded.devices,
                self._decode_pool(),
                decode_image,
                start=req.start,
                stop=req.stop,
                first_only=req.warmup,
                batch_size=req.batch_size,
                decode_threads=self.decode_threads,
                decode_chunk=cfg.decode_chunk,
                max_inflight_images=cfg.max_inflight_images,
                index=indexed[1] if indexed else None,
            )
            if indexed:
                self._put_index(*indexed)
        if len(out.rows) + len(out.errors) != len(out.names):  # pragma: no cover - a bug
            raise FunctionError(
                f"pipeline lost images: {len(out.names)} read, {len(out.rows)} classified, "
                f"{len(out.errors)} failed"
            )
        results = _results(req.start, out.names, out.errors, out.scores, loaded.classes)
        reports = out.reports
        return {
            "results": results,
            "timings": {
                "download_s": out.download_s,
                "model_load_s": model_load_s,
                "decode_s": out.decode_s,
                "processing_s": max((r.busy_s for r in reports), default=0.0),
                "input_wait_s": max((r.wait_s for r in reports), default=0.0),
                "total_s": time.perf_counter() - t_start,
            },
            "workers": [
                {
                    "device": r.device,
                    "images": r.images,
                    "batches": r.batches,
                    "batch_size": r.batch_size,
                }
                for r in reports
            ],
            "n_images": len(results),
            "n_failed": len(out.errors),
        }

    def train(self, req: TrainRequest) -> dict[str, Any]:
        from stoic.function import classifier as cnn

        prefix = req.images.rstrip("/") + "/"
        keys = [k for k in self.store.list(prefix) if "/" in k[len(prefix) :]]
        if not keys:
            raise ObjectNotFound(prefix, f"{self.store!r} (no <prefix>/<label>/<file> images)")
        base = None
        classes: list[str] | None = None
        prep = None
        size = cnn.INPUT_SIZE
        if req.base_model:
            from stoic.function.modelfile import trainable_copy

            loaded, _ = self.get_model(req.base_model)
            # Fine-tune a copy: the cached model keeps serving unchanged.
            base = trainable_copy(loaded.model, req.base_model)
            classes, prep = loaded.classes, loaded.preprocessing
            size = prep.input_size
        images, labels, skipped = [], [], []
        for key in keys:
            label = key[len(prefix) :].split("/", 1)[0]
            try:
                images.append(cnn.decode_image(self.store.get_bytes(key), size))
            except InputError as exc:
                skipped.append(f"{key}: {exc}")
                continue
            labels.append(label)
        if len(images) < 2:
            raise InputError(f"{prefix}: fewer than 2 decodable labelled images")
        result = cnn.train_model(
            np.stack(images),
            labels,
            classes=classes,
            base=base,
            epochs=req.epochs,
            batch_size=req.batch_size,
            val_fraction=req.val_fraction,
            seed=req.seed,
            preprocessing=prep,
        )
        cnn.save_model(result.model, self.store, req.output, result.classes, prep)
        return {
            "model": req.output,
            "history": result.history,
            "val_accuracy": result.val_accuracy,
            "classes": result.classes,
            "n_train": result.n_train,
            "n_val": result.n_val,
            "skipped": skipped,
        }


def _results(
    start: int,
    names: list[str],
    errors: dict[int, str],
    scores: np.ndarray,
    classes: list[str],
) -> list[dict[str, Any]]:
    """One result per member, in package order; ``scores`` has one row per member
    without an error, in order."""
    values = scores.astype(np.float64).tolist()
    labels = [classes[i] for i in np.argmax(scores, axis=1).tolist()] if len(scores) else []
    results: list[dict[str, Any]] = []
    k = 0
    for pos, name in enumerate(names):
        error = errors.get(pos)
        if error is not None:
            results.append(
                {"name": name, "index": start + pos, "label": None, "scores": {}, "error": error}
            )
            continue
        results.append(
            {
                "name": name,
                "index": start + pos,
                "label": labels[k],
                "scores": {c: round(v, 6) for c, v in zip(classes, values[k], strict=True)},
                "error": None,
            }
        )
        k += 1
    return results


# Kubeless entry point -----------------------------------------------------------------

_default: Function | None = None
_default_lock = threading.Lock()


def default_function() -> Function:
    """The process-wide function, built from the settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            from stoic.settings import load_settings

            settings = load_settings()
            _default = Function(make_object_store(settings), settings=settings.function)
        return _default


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Kubeless entry point. ``event["data"]`` is the request (dict or JSON text).

    A plain request dict is accepted too. Raises ``InputError``, ``ObjectNotFound``,
    ``ModelNotFound`` or ``FunctionError``.
    """
    data = event["data"] if isinstance(event, dict) and "data" in event else event
    return default_function()(data)
