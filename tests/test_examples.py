"""The sample photos of ``examples/photos``: each is the demo scene its name and README
say it is (so its provenance is what the README claims), and the README's first batch,
``stoic submit examples/photos/*.jpg --wait``, works against a daemon as typed.

The daemon is ``stoic serve`` on the stand-in function (no TensorFlow): what is tested
is the command and the files, not the labels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from stoic.function.classifier import CLASSES, DEMO_SCENE, draw_scene
from tests.support.paths import REPO
from tests.support.processes import STOIC, Serving
from tests.support.settings import standin_config

PHOTOS = REPO / "examples" / "photos"
COMMAND = "stoic submit examples/photos/*.jpg --wait"


def test_each_sample_photo_is_the_demo_scene_of_its_name() -> None:
    assert sorted(p.stem for p in PHOTOS.glob("*.jpg")) == sorted(CLASSES)
    for seed, label in enumerate(CLASSES, 1):
        path = PHOTOS / f"{label}.jpg"
        assert path.stat().st_size < 8_000, path
        with Image.open(path) as image:
            assert (image.format, image.size) == ("JPEG", DEMO_SCENE)
            shipped = np.asarray(image.convert("RGB"), dtype=np.float32)
        drawn = np.asarray(draw_scene(label, np.random.default_rng(seed)), dtype=np.float32)
        assert np.abs(shipped - drawn).mean() < 10.0, path  # JPEG loss (~5); another scene: > 20


def test_the_readme_first_batch_submits_the_sample_photos(tmp_path: Path) -> None:
    assert COMMAND in (REPO / "README.md").read_text()
    assert COMMAND in (PHOTOS / "README.md").read_text()
    config = standin_config(tmp_path, tmp_path / "data", "")
    with Serving(tmp_path, config) as serving:
        serving.start()
        photos = sorted(str(p.relative_to(REPO)) for p in PHOTOS.glob("*.jpg"))  # the shell's glob
        out = subprocess.run(
            [*STOIC, "submit", *photos, "--wait", "--poll", "0.2", "--url", serving.url],
            cwd=REPO, env=serving.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f": done ({len(CLASSES)} images" in out.stdout
    for label in CLASSES:
        assert f"  {label}.jpg\t" in out.stdout
