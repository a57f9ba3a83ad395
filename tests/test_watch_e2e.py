"""``stoic watch`` against a real daemon (``stoic serve`` with the stand-in function), on
a tree of camera deployments filled slowly, with half-written and corrupt files, while
first the watcher and then the daemon are killed with ``kill -9`` and restarted.

Every valid image is labelled exactly once, the corrupt ones are reported by path and
left in place, the results beside the images pass MegaDetector's validator, and
``stoic export`` makes a Camtrap DP package of the run that its validators accept and
a CSV with one row per image. "Simulated hours" are compressed: ``--every 1``.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support import formats
from tests.support.images import camera_image
from tests.support.net import tail
from tests.support.processes import STOIC, Serving
from tests.support.settings import standin_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DEPLOYMENTS = ("cam01", "cam02", "North ridge")
PER_DEPLOYMENT = 6

SITE = """
package:
  contributors: [{title: Jane Doe, role: contact}]
  project: {title: Watch test, samplingDesign: targeted, captureMethod: [activityDetection]}
timezone: "-07:00"
deployments:
  cam01: {latitude: 34.69, longitude: -120.04}
  cam02: {latitude: 34.70, longitude: -120.05}
  North ridge: {latitude: 34.71, longitude: -120.06}
labels:
  standin: Odocoileus hemionus
"""


def image(deployment: int, i: int) -> bytes:
    return camera_image(
        deployment * 100 + i,
        captured=f"2024:05:0{deployment + 1} {6 + i:02d}:00:00",
        serial=f"SN{deployment}",
    )


class Run:
    """The daemon, the watcher and the tree of cards of one test."""

    def __init__(self, tmp: Path, serving: Serving) -> None:
        self.tmp, self.serving = tmp, serving
        self.cards = tmp / "cards"
        self.cards.mkdir()
        self.log = tmp / "watch.log"
        self.watcher: subprocess.Popen[bytes] | None = None

    def args(self, *extra: str) -> list[str]:
        return [
            *STOIC, "watch", str(self.cards), "--url", self.serving.url,
            "--every", "1", "--max-images", "4", "--stable", "1", "--scan-every", "0.2",
            "--poll", "--state", str(self.tmp / "watch.db"), *extra,
        ]  # fmt: skip

    def start_watcher(self) -> None:
        with self.log.open("ab") as out:
            self.watcher = subprocess.Popen(
                self.args(), stdout=out, stderr=subprocess.STDOUT, env=self.serving.env
            )

    def kill_watcher(self) -> None:
        assert self.watcher is not None and self.watcher.poll() is None, tail(self.log)
        self.watcher.send_signal(signal.SIGKILL)
        self.watcher.wait(30)

    def put(self, rel: str, data: bytes, *, half_for_s: float = 0.0) -> Path:
        path = self.cards / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if half_for_s:
            path.write_bytes(data[: len(data) // 2])
            time.sleep(half_for_s)
        path.write_bytes(data)
        return path

    def done_batches(self) -> list[dict[str, object]]:
        with httpx.Client(base_url=self.serving.url, trust_env=False, timeout=30) as client:
            batches: list[dict[str, object]] = client.get(
                "/v1/batches", params={"state": "done"}
            ).json()["batches"]
        return batches

    def wait_for_done(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while len(self.done_batches()) < n:
            assert time.monotonic() < deadline, tail(self.log) + tail(self.serving.log)
            time.sleep(0.2)


def test_watch_sends_every_image_once_through_kills_of_watcher_and_daemon(
    tmp_path: Path,
) -> None:
    config = standin_config(tmp_path, tmp_path / "data", '"--batch-delay", "0.2"')
    with Serving(tmp_path, config) as serving:
        run = Run(tmp_path, serving)
        daemon = serving.start()
        run.start_watcher()
        valid: dict[tuple[str, str], Path] = {}
        corrupt = [
            run.put("cam01/IMG_9000.JPG", b"this is not an image"),
            run.put("cam02/100RECNX/IMG_9001.JPG", image(1, 0)[:400]),
        ]

        def copy(i: int) -> None:
            for d, deployment in enumerate(DEPLOYMENTS):
                name = f"100RECNX/IMG_{i:04d}.JPG"
                half = 0.4 if (i + d) % 3 == 0 else 0.0  # some stay half-written a while
                valid[deployment, name] = run.put(
                    f"{deployment}/{name}", image(d, i), half_for_s=half
                )

        for i in range(2):
            copy(i)
        run.wait_for_done(1)
        run.kill_watcher()  # kill -9 in the middle
        copy(2)
        run.start_watcher()
        copy(3)
        run.wait_for_done(len(run.done_batches()) + 1)
        daemon.send_signal(signal.SIGKILL)  # and the daemon too
        daemon.wait(30)
        copy(4)
        time.sleep(1.5)  # the watcher plans and finds no daemon
        serving.start()
        copy(5)
        # Let the running watcher go, then send whatever is left and wait for it.
        assert run.watcher is not None
        run.watcher.send_signal(signal.SIGTERM)
        assert run.watcher.wait(60) == 0, tail(run.log)
        once = subprocess.run(run.args("--once"), capture_output=True, env=serving.env, timeout=180)
        log = run.log.read_text() + once.stderr.decode()
        assert once.returncode == 0, log + tail(serving.log)

        # Every valid image labelled exactly once, nothing else labelled.
        labelled: Counter[tuple[str, str]] = Counter()
        results: list[dict[str, object]] = []
        with httpx.Client(base_url=serving.url, trust_env=False, timeout=30) as client:
            failed = client.get("/v1/batches", params={"state": "failed"}).json()["batches"]
            for b in run.done_batches():
                doc = client.get(f"/v1/batches/{b['id']}/results").json()
                results += doc["results"]
                labelled.update((r["deployment"], r["name"]) for r in doc["results"])
        assert failed == []
        assert labelled == Counter(set(valid)), log
        assert all(r["captured_at"] and r["camera_serial"] for r in results)

        # The corrupt ones: reported by path, left in place.
        for path in corrupt:
            assert f"bad file, left in place: {path}" in log
            assert path.exists()

        # Results beside the images, in MegaDetector's format.
        written = sorted(run.cards.glob("*/stoic-*.megadetector.json"))
        assert {p.parent.name for p in written} == set(DEPLOYMENTS)
        files = []
        for path in written:
            doc = json.loads(path.read_text())
            assert formats.megadetector_errors(doc) == []
            files += [(path.parent.name, i["file"]) for i in doc["images"]]
        assert sorted(files) == sorted(valid)

        # stoic export: a Camtrap DP package of the run, and a CSV.
        site = tmp_path / "site.yaml"
        site.write_text(SITE)
        package = tmp_path / "package"
        export = [*STOIC, "export", "--url", serving.url]
        subprocess.run(
            [*export, "--format", "camtrap-dp", "--meta", str(site), "--out", str(package)],
            check=True, env=serving.env, timeout=60,
        )  # fmt: skip
        descriptor = json.loads((package / "datapackage.json").read_text())
        assert formats.profile_errors(descriptor) == []
        if formats.HAVE_FRICTIONLESS:
            assert formats.frictionless_errors(package) == []
        table = tmp_path / "run.csv"
        subprocess.run(
            [*export, "--format", "csv", "--out", str(table), "--deployment", "cam02"],
            check=True, env=serving.env, timeout=60,
        )  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(table.read_text())))
        assert sorted(r["file"] for r in rows) == sorted(n for d, n in valid if d == "cam02")
        assert {r["captured_at"][:10] for r in rows} == {"2024-05-02"}
