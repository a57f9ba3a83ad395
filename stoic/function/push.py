"""Bring your own model: check a Keras file against its label set, store it for a version.

A site with a classifier of its own (trained on its own camera-trap photographs, say a
species classifier) installs it as a **new application version**:
``stoic model push FILE.keras --app A --version V --classes a,b,c``, then makes that
version the default (``stoic model default``, ``PUT /v1/models/default``). New batches
record the new version, so the scheduler bootstraps it (paper §3.7: processing times are
learnt per application version, and a different network has different ones) and the
function loads the new model by its key.

Why a new version rather than overwriting the current model: the function keeps loaded
models in memory by key (a warm pod serves the next batch without loading), so a model
replaced under the same key would keep being served by every warm process; and the
predictor's processing regression of the old version would describe a different
network. ``--replace`` exists for fixing a push that has not been made the default yet.

What is checked, before anything is stored (a refused model leaves nothing behind):

* the file loads with Keras (``.keras`` format, the one :func:`~stoic.function.
  classifier.save_model` writes);
* one image input of shape ``(H, W, 3)``, square (the function resizes every image to
  ``H × H``);
* the output is one score per class of the label set (``(None, K)`` with ``K`` the
  number of labels), and a forward pass on a blank image gives ``K`` finite numbers.

The labels are stored beside the model as its class-name sidecar
(:func:`~stoic.function.classifier.classes_key`), the same place the demo model and
``stoic model train`` keep theirs, so the function answers with the site's labels.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stoic.errors import InputError, StoicError
from stoic.extras import require
from stoic.function.classifier import INPUT_SIZE, classes_key
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import model_key


@dataclass(frozen=True, slots=True)
class PushedModel:
    """What :func:`push_model` stored."""

    key: str
    classes: tuple[str, ...]
    input_size: int
    n_bytes: int
    replaced: bool


def read_classes(spec: str | None, classes_file: Path | None, model_file: Path) -> list[str]:
    """The label set: ``--classes a,b,c``, else ``--classes-file`` (a JSON list, or one
    label per line), else ``FILE.classes.json`` beside the model; else an InputError."""
    if spec is not None and classes_file is not None:
        raise InputError("give the label set once: --classes or --classes-file, not both")
    if spec is not None:
        labels = [c.strip() for c in spec.split(",")]
        source = "--classes"
    else:
        path = classes_file
        if path is None:
            sidecar = model_file.with_name(model_file.name + ".classes.json")
            if not sidecar.is_file():
                raise InputError(
                    f"{model_file}: no label set; give --classes a,b,c or --classes-file "
                    f"FILE, or put the labels (a JSON list) in {sidecar.name} beside the model"
                )
            path = sidecar
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the label set: {exc.strerror}") from None
        source = str(path)
        if text.lstrip().startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: not a JSON list of labels: {exc}") from None
            if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
                raise InputError(f"{path}: the label set must be a JSON list of strings")
            labels = [c.strip() for c in raw]
        else:
            labels = [line.strip() for line in text.splitlines() if line.strip()]
    return check_classes(labels, source)


def check_classes(labels: Sequence[str], source: str = "the label set") -> list[str]:
    """At least two labels, none empty, no duplicates."""
    out = list(labels)
    if any(not c for c in out):
        raise InputError(f"{source}: empty label in {out}")
    dupes = sorted({c for c in out if out.count(c) > 1})
    if dupes:
        raise InputError(f"{source}: duplicate labels {dupes}")
    if len(out) < 2:
        raise InputError(f"{source}: a classifier needs at least 2 labels, got {out}")
    return out


def validate_model_file(path: Path, classes: Sequence[str]) -> int:
    """Load ``path`` with Keras and check it against ``classes``; return its input size.

    Raises :class:`InputError` naming the file and what does not fit.
    """
    require("function", "checking a Keras model (stoic model push)")
    import keras

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix != ".keras":
        raise InputError(f"{path}: expected a Keras model file ending in '.keras' (model.save)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: Keras cannot load it: {first}") from None
    inputs = model.inputs
    if len(inputs) != 1:
        raise InputError(f"{path}: the model has {len(inputs)} inputs; the function feeds one")
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3:
        raise InputError(
            f"{path}: input shape {shape}; the function feeds RGB images (None, H, W, 3)"
        )
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise InputError(f"{path}: input shape {shape} is not square; the function feeds H × H")
    size = int(shape[1] or shape[2] or INPUT_SIZE)
    out_shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else ()
    k = len(classes)
    if len(out_shape) != 2 or out_shape[1] != k:
        raise InputError(
            f"{path}: output shape {model.output_shape} does not match the label set: "
            f"expected (None, {k}), one score per label of {list(classes)}"
        )
    try:
        scores = np.asarray(model(np.zeros((1, size, size, 3), dtype="float32"), training=False))
    except Exception as exc:
        raise InputError(f"{path}: the model fails on a {size}×{size} image: {exc}") from None
    if scores.shape != (1, k) or not np.all(np.isfinite(scores)):
        raise InputError(
            f"{path}: a forward pass gave {scores.shape} scores (finite: "
            f"{bool(np.all(np.isfinite(scores)))}); expected {k} finite scores"
        )
    return size


def push_model(
    store: ObjectStore,
    path: Path,
    *,
    app: str,
    version: str,
    classes: Sequence[str],
    replace: bool = False,
) -> PushedModel:
    """Validate ``path`` against ``classes`` and store it as ``app`` version ``version``.

    Nothing is stored unless every check passes. The labels go first and the model
    last, so a model key that exists always has its labels (the daemon refuses to make
    a version without a model the default).
    """
    labels = tuple(check_classes(classes))
    key = model_key(app, version)
    exists = store.exists(key)
    if exists and not replace:
        raise InputError(
            f"app {app!r} version {version!r} already has a model ({key}); push it as a "
            "new version (processing times are learnt per version), or pass --replace"
        )
    size = validate_model_file(path, labels)
    sidecar = classes_key(key)
    store.put_bytes(sidecar, json.dumps(list(labels)).encode())
    try:
        with path.open("rb") as f:
            n = store.put_stream(key, f)
    except BaseException:
        if not exists:
            with contextlib.suppress(StoicError):
                store.delete(sidecar)
        raise
    return PushedModel(key, labels, size, n, exists)
