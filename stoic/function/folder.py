"""Training on a site's own labelled images: a folder of ``<label>/<image>`` files.

A camera-trap project labels its photographs by sorting them into folders (``deer/``,
``coyote/``, ``empty/``), which is also how Keras' ``image_dataset_from_directory`` and
most labelling tools export them. ``stoic model train DIR --out species.keras`` trains
on such a folder and writes the model with its contract beside it
(``species.keras.classes.json``, ``species.keras.preprocessing.json``), exactly what
``stoic model push species.keras --version V`` reads: a model trained here and one
trained elsewhere take the same path into the store.

Images are decoded by the function's own :func:`~stoic.function.classifier.
decode_image` at the model's input size, so training and serving see the same pixels.
Without a base model the demo CNN's architecture is trained from scratch; with
``--base FILE.keras`` (a model trained before, on this site's images or any others)
its features are reused: the same labels fine-tune the whole model, other labels get a
new head on frozen features (:func:`~stoic.function.classifier.transfer`), which is
what a few hundred labelled images can train. No pretrained ImageNet weights are
shipped (they cannot be downloaded on an offline machine); a site that has them builds
its base with Keras and passes it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stoic.errors import InputError
from stoic.function import classifier as cnn
from stoic.function.contract import Preprocessing, beside, resolve


@dataclass(frozen=True, slots=True)
class Folder:
    """The decodable images of a labelled folder, and the files that were not."""

    images: np.ndarray
    labels: tuple[str, ...]
    classes: tuple[str, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Trained:
    """What :func:`train_folder` wrote."""

    model: Path
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    val_accuracy: float
    n_train: int
    n_val: int
    skipped: tuple[str, ...]
    base: str

    def summary(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "classes": list(self.classes),
            "input_size": self.preprocessing.input_size,
            "scaling": self.preprocessing.scaling,
            "base": self.base,
            "val_accuracy": self.val_accuracy,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "skipped": list(self.skipped),
        }


def read_folder(root: Path, size: int) -> Folder:
    """Every file below ``root/<label>/`` decoded at ``size`` (hidden files and folders
    ignored); the labels are the folder names, sorted. Undecodable files are skipped
    and named, not fatal: a card copied from the field always has some."""
    if not root.is_dir():
        raise InputError(f"{root}: not a directory of <label>/<image> files")
    images: list[np.ndarray] = []
    labels: list[str] = []
    skipped: list[str] = []
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for label_dir in dirs:
        for path in sorted(label_dir.rglob("*")):
            rel = path.relative_to(label_dir)
            if not path.is_file() or any(p.startswith(".") for p in rel.parts):
                continue
            try:
                images.append(cnn.decode_image(path.read_bytes(), size))
            except (InputError, OSError) as exc:
                skipped.append(f"{path}: {exc}")
                continue
            labels.append(label_dir.name)
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise InputError(
            f"{root}: found images under {len(classes)} label folder(s) {list(classes)}; a "
            "classifier needs at least 2 (<label>/<image> files)"
        )
    return Folder(np.stack(images), tuple(labels), classes, tuple(skipped))


def train_folder(
    root: Path,
    out: Path,
    *,
    base: Path | None = None,
    input_size: int = cnn.INPUT_SIZE,
    epochs: int = 5,
    batch_size: int = 16,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Trained:
    """Train on the labelled folder ``root`` and write ``out`` (``.keras``) with its
    contract beside it."""
    if out.suffix != ".keras":
        raise InputError(f"{out}: the model file must end in '.keras'")
    model: Any = None
    prep = Preprocessing(input_size)
    base_classes: list[str] | None = None
    if base is not None:
        model, prep, base_classes = _base(base)
    folder = read_folder(root, prep.input_size)
    classes = list(folder.classes)
    if model is not None and base_classes != classes:
        model = cnn.transfer(model, len(classes))
    result = cnn.train_model(
        folder.images,
        folder.labels,
        classes=classes,
        base=model,
        epochs=epochs,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        preprocessing=prep,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    cnn.save_model_file(result.model, out, classes, prep)
    how = (
        "none"
        if base is None
        else f"{base} ({'fine-tuned' if base_classes == classes else 'new head'})"
    )
    return Trained(
        out,
        tuple(classes),
        prep,
        result.val_accuracy,
        result.n_train,
        result.n_val,
        folder.skipped,
        how,
    )


def _base(path: Path) -> tuple[Any, Preprocessing, list[str] | None]:
    """A base model file with its preprocessing (declared beside it or shown by its
    layers) and its labels (None where it has no ``.classes.json``)."""
    from stoic.function.modelfile import load_path, trainable_copy
    from stoic.function.push import read_classes, read_declaration

    model = trainable_copy(load_path(path), str(path))
    prep = resolve(model, None, read_declaration(None, None, path), str(path))
    classes = read_classes(None, None, path) if beside(path, ".classes.json").is_file() else None
    return model, prep, classes
