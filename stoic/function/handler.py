"""The serverless function: ``handler(event, context)`` with kubeless' Python signature.

One request names a batch package and a model in the object store. The function
downloads the package, loads the model (cached in memory by key, so after one warm-up
call later calls skip it: the paper's warm-up, section 3.7), decodes and resizes the
images, classifies them on every visible device (:mod:`stoic.function.workers`), and
answers per-image labels and scores with its own timings. A second action trains or
fine-tunes the model on labelled images in the store and saves a new version.

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

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stoic.errors import FunctionError, InputError, ModelNotFound, ObjectNotFound
from stoic.storage.objectstore import ObjectStore, make_object_store, validate_key
from stoic.storage.package import iter_package

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Requests -----------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassifyRequest(_Request):
    action: Literal["classify"] = "classify"
    package: str = Field(min_length=1, description="object key of the batch package (tar)")
    model: str = Field(min_length=1, description="object key of the model (.keras)")
    warmup: bool = Field(False, description="classify only the first image")
    batch_size: int = Field(32, ge=1, le=4096)


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


@dataclass
class LoadedModel:
    key: str
    model: Any
    classes: list[str]
    size: int
    devices: Any  # workers.DeviceModels


class Function:
    """The function's state: an object store and a small cache of loaded models."""

    def __init__(self, store: ObjectStore, *, cache_size: int = 2) -> None:
        self.store = store
        self.cache_size = cache_size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    # Model cache ----------------------------------------------------------------------

    def get_model(self, key: str) -> tuple[LoadedModel, float]:
        """The model under ``key`` and the seconds spent loading it (0.0 if cached)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], 0.0
            t0 = time.perf_counter()
            from stoic.function import classifier as cnn
            from stoic.function import workers

            try:
                model, classes = cnn.load_model(self.store, key)
            except ObjectNotFound:
                raise ModelNotFound(key) from None
            except (OSError, ValueError) as exc:
                raise FunctionError(f"model {key!r} cannot be loaded: {exc}") from exc
            size = cnn.input_size(model)
            devices = workers.replicate(model, workers.visible_devices())
            workers.warm(devices, size)
            loaded = LoadedModel(key, model, classes, size, devices)
            self._models[key] = loaded
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
            return loaded, time.perf_counter() - t0

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
        from stoic.function import workers

        t_start = time.perf_counter()
        # Download first (it may 404), then load the model (it may 404 too). The tar is
        # read as a stream; a warm-up stops after the first member.
        members: list[tuple[str, bytes]] = []
        with self.store.open_read(req.package) as stream:
            for name, data in iter_package(stream):
                members.append((name, data))
                if req.warmup:
                    break
        download_s = time.perf_counter() - t_start
        loaded, model_load_s = self.get_model(req.model)

        t0 = time.perf_counter()
        decoded = _decode_all([data for _, data in members], loaded.size)
        decode_s = time.perf_counter() - t0

        ok = [i for i, d in enumerate(decoded) if isinstance(d, np.ndarray)]
        t0 = time.perf_counter()
        scores, reports = workers.classify(
            loaded.devices,
            [d for d in decoded if isinstance(d, np.ndarray)],
            req.batch_size,
        )
        processing_s = time.perf_counter() - t0
        failed = [r.error for r in reports if r.error]
        if failed:
            raise FunctionError("classification failed: " + "; ".join(failed))

        results: list[dict[str, Any]] = []
        row = {i: k for k, i in enumerate(ok)}
        for i, (name, _) in enumerate(members):
            d = decoded[i]
            if isinstance(d, str):
                results.append({"name": name, "label": None, "scores": {}, "error": d})
                continue
            s = scores[row[i]]
            results.append(
                {
                    "name": name,
                    "label": loaded.classes[int(np.argmax(s))],
                    "scores": {
                        c: round(float(v), 6) for c, v in zip(loaded.classes, s, strict=True)
                    },
                    "error": None,
                }
            )
        n_failed = sum(r["error"] is not None for r in results)
        return {
            "results": results,
            "timings": {
                "download_s": download_s,
                "model_load_s": model_load_s,
                "decode_s": decode_s,
                "processing_s": processing_s,
                "total_s": time.perf_counter() - t_start,
            },
            "workers": [{"device": r.device, "images": r.images} for r in reports],
            "n_images": len(results),
            "n_failed": n_failed,
        }

    def train(self, req: TrainRequest) -> dict[str, Any]:
        from stoic.function import classifier as cnn

        prefix = req.images.rstrip("/") + "/"
        keys = [k for k in self.store.list(prefix) if "/" in k[len(prefix) :]]
        if not keys:
            raise ObjectNotFound(prefix, f"{self.store!r} (no <prefix>/<label>/<file> images)")
        base = None
        classes: list[str] | None = None
        size = cnn.INPUT_SIZE
        if req.base_model:
            loaded, _ = self.get_model(req.base_model)
            # Fine-tune a copy: the cached model keeps serving unchanged.
            import keras

            base = keras.models.clone_model(loaded.model)
            base.set_weights(loaded.model.get_weights())
            classes, size = loaded.classes, loaded.size
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
        )
        cnn.save_model(result.model, self.store, req.output, result.classes)
        return {
            "model": req.output,
            "history": result.history,
            "val_accuracy": result.val_accuracy,
            "classes": result.classes,
            "n_train": result.n_train,
            "n_val": result.n_val,
            "skipped": skipped,
        }


def _decode_all(blobs: Sequence[bytes], size: int) -> list[np.ndarray | str]:
    """Decode in a thread pool (Pillow releases the GIL); an error becomes its message."""
    from stoic.function.classifier import decode_image

    def one(data: bytes) -> np.ndarray | str:
        try:
            return decode_image(data, size)
        except InputError as exc:
            return str(exc)

    if len(blobs) <= 4:
        return [one(b) for b in blobs]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, blobs))


# Kubeless entry point -----------------------------------------------------------------

_default: Function | None = None
_default_lock = threading.Lock()


def default_function() -> Function:
    """The process-wide function, built from the settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            from stoic.settings import load_settings

            _default = Function(make_object_store(load_settings()))
        return _default


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Kubeless entry point. ``event["data"]`` is the request (dict or JSON text).

    A plain request dict is accepted too. Raises ``InputError``, ``ObjectNotFound``,
    ``ModelNotFound`` or ``FunctionError``.
    """
    data = event["data"] if isinstance(event, dict) and "data" in event else event
    return default_function()(data)
