"""Bring your own model: check a model against its contract, store it for a version.

A site with a classifier of its own (trained on its own camera-trap photographs with
``stoic model train``, or exported from another tool as a ``.keras`` file or a
SavedModel directory) installs it as a **new application version**:
``stoic model push MODEL --app A --version V [--classes a,b,c] [--scaling S]``, then
makes that version the default (``stoic model default``, ``PUT /v1/models/default``).
New batches record the new version, so the scheduler bootstraps it (paper §3.7:
processing times are learnt per application version, and a different network has
different ones) and the function loads the new model by its key.

Why a new version rather than overwriting the current model: the function keeps loaded
models in memory by key (a warm pod serves the next batch without loading), so a model
replaced under the same key would keep being served by every warm process; and the
predictor's processing regression of the old version would describe a different
network. ``--replace`` exists for fixing a push that has not been made the default yet.

What is checked, before anything is stored (a refused model leaves nothing behind), is
the model's contract (:mod:`stoic.function.contract`): it loads (:mod:`stoic.function.
modelfile`; Keras' safe mode on); one RGB input, square or of a declared size; one
score per label; its scaling shown by its layers and the declaration agreeing, or
declared where the layers do not show it; and a forward pass on a blank image gives
``K`` finite numbers. A mismatch found here is one line naming the file; found at run
time it would be a wrong label on every image.

The labels and the preprocessing are stored beside the model
(:func:`~stoic.function.contract.classes_key`, :func:`~stoic.function.contract.
preprocessing_key`), where the demo model and ``stoic model train`` keep theirs, so the
function answers with the site's labels and feeds the model what it expects.
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
from stoic.function import contract
from stoic.function.contract import (
    Declared,
    Preprocessing,
    beside,
    classes_key,
    parse_declaration,
    preprocessing_key,
    resolve,
)
from stoic.function.modelfile import load_path, store_path
from stoic.storage.objectstore import ObjectStore
from stoic.storage.package import model_key


@dataclass(frozen=True, slots=True)
class PushedModel:
    """What :func:`push_model` stored."""

    key: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
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
            sidecar = beside(model_file, ".classes.json")
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


def read_declaration(scaling: str | None, input_size: int | None, model_file: Path) -> Declared:
    """The model's declared preprocessing: ``FILE.preprocessing.json`` beside the model
    (where there is one) and the ``--scaling`` / ``--input-size`` flags; a field given
    twice with two values is an InputError, not a silent choice."""
    side = beside(model_file, ".preprocessing.json")
    try:
        found = parse_declaration(side.read_bytes(), str(side)) if side.is_file() else Declared()
    except OSError as exc:
        raise InputError(f"{side}: cannot read it: {exc.strerror}") from None
    flags = Declared(input_size, None, contract.scaling(scaling, "--scaling"))
    merged: dict[str, object] = dict(found.given())
    for name, value in flags.given().items():
        if merged.get(name, value) != value:
            raise InputError(
                f"{side} says {name} {merged[name]!r} but --{name.replace('_', '-')} says "
                f"{value!r}; give it once"
            )
        merged[name] = value
    return Declared(**merged)  # type: ignore[arg-type]


def validate_model_file(
    path: Path, classes: Sequence[str], declared: Declared = Declared()
) -> Preprocessing:
    """Load ``path`` (a ``.keras`` file or a SavedModel directory) and check it against
    ``classes`` and ``declared``; return the preprocessing the function will apply.

    Raises :class:`InputError` naming the file and what does not fit.
    """
    require("function", "checking a model (stoic model push)")
    model = load_path(path)
    prep = resolve(model, list(classes), declared, str(path))
    size, k = prep.input_size, len(classes)
    try:
        blank = prep.apply(np.zeros((1, size, size, 3), dtype=np.uint8))
        scores = np.asarray(model(blank, training=False))
    except Exception as exc:
        raise InputError(f"{path}: the model fails on a {size}×{size} image: {exc}") from None
    if scores.shape != (1, k) or not np.all(np.isfinite(scores)):
        raise InputError(
            f"{path}: a forward pass gave {scores.shape} scores (finite: "
            f"{bool(np.all(np.isfinite(scores)))}); expected {k} finite scores"
        )
    return prep


def push_model(
    store: ObjectStore,
    path: Path,
    *,
    app: str,
    version: str,
    classes: Sequence[str],
    declared: Declared = Declared(),
    replace: bool = False,
) -> PushedModel:
    """Validate ``path`` against ``classes`` and ``declared`` and store it as ``app``
    version ``version``, with its contract beside it.

    Nothing is stored unless every check passes. The side files go first and the model
    last, so a model key that exists always has its contract (the daemon refuses to
    make a version without a model the default).
    """
    labels = tuple(check_classes(classes))
    key = model_key(app, version)
    exists = store.exists(key)
    if exists and not replace:
        raise InputError(
            f"app {app!r} version {version!r} already has a model ({key}); push it as a "
            "new version (processing times are learnt per version), or pass --replace"
        )
    prep = validate_model_file(path, labels, declared)
    sides = {
        classes_key(key): json.dumps(list(labels)).encode(),
        preprocessing_key(key): prep.to_json(),
    }
    for side, data in sides.items():
        store.put_bytes(side, data)
    try:
        n = store_path(store, key, path)
    except BaseException:
        if not exists:
            for side in sides:
                with contextlib.suppress(StoicError):
                    store.delete(side)
        raise
    return PushedModel(key, labels, prep, n, exists)
