"""Take the operator page's screenshot for docs/operations.md (docs/img/operator-page.png).

    .venv/bin/python docs/gen_operator_screenshot.py [--out docs/img/operator-page.png]

Runs the daemon in-process (uvicorn on a loopback port) with the fake backend for the
four default runtimes, its durations a tenth of the paper's figures so that a dozen
batches take a minute, and submits batches that end up in different places: the edge,
a GPU pod, the duplicator's race, a batch pinned to the CPU pod, and one pinned to
gpu2 whose deployment times out (gpu2 is then marked away and the batch falls back to
the edge). The deployment charts start from two hours of probe samples written to the
store before the start (as a daemon that has run for a while finds them). Then headless
Chromium (Debian's, through chromedriver) loads ``/ui`` and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import socket
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from stoic.api.app import create_app
from stoic.backends.fake import DeployStep, FakeBackend, FakeSpec
from stoic.daemon.controller import Controller
from stoic.settings import Settings
from stoic.store.migrate import migrate
from stoic.store.store import Store
from stoic.values import DeploymentSample, DeployOutcome

ROOT = Path(__file__).resolve().parents[1]
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# Fake durations: the paper's published figures (docs/replay.md) divided by ten.
SPECS = {
    "edge": FakeSpec(per_image_s=0.240, fixed_s=1.36),
    "cpu": FakeSpec(deploy_s=1.2, upload_s=0.3, warmup_s=0.2, per_image_s=0.133, fixed_s=1.49),
    "gpu1": FakeSpec(deploy_s=2.5, upload_s=0.3, warmup_s=0.3, per_image_s=0.033, fixed_s=2.82),
    "gpu2": FakeSpec(deploy_s=3.0, upload_s=0.3, warmup_s=0.3, per_image_s=0.020, fixed_s=2.13),
}
PRIORS = {  # name: (deploy, per image, fixed)
    "edge": (0.0, 0.240, 1.36),
    "cpu": (1.2, 0.133, 1.49),
    "gpu1": (2.5, 0.033, 2.82),
    "gpu2": (3.0, 0.020, 2.13),
}
KINDS = {"edge": ("edge", 0), "cpu": ("cpu", 0), "gpu1": ("gpu", 1), "gpu2": ("gpu", 2)}


def settings_for(data: Path) -> Settings:
    runtimes = [
        {
            "name": name,
            "kind": KINDS[name][0],
            "gpus": KINDS[name][1],
            "prior_deploy_s": d,
            "prior_per_image_s": a,
            "prior_fixed_s": b,
        }
        for name, (d, a, b) in PRIORS.items()
    ]
    return Settings(
        data_dir=data,
        runtimes=runtimes,
        controller={"inquisitor": False, "demo_model": False, "bootstrap": False},
        predictor={"deploy_timeout_s": 6.0},
        requester={"duplicator_runtime": "gpu1"},
        ui={"refresh_s": 5},
    )


def seed_probe_history(settings: Settings, now: float) -> None:
    """Two hours of deployment probes, every four minutes, as the inquisitor leaves them."""
    migrate(settings.database_url)
    rng = np.random.default_rng(3)
    samples = []
    for name, (deploy, _, _) in PRIORS.items():
        if name == "edge":
            continue
        for i in range(30):
            at = now - 7200 + 240 * i
            duration = deploy * float(rng.lognormal(0.0, 0.25))
            if name == "gpu1" and i == 17:
                samples.append(DeploymentSample(name, at, 6.0, DeployOutcome.TIMEOUT))
                continue
            samples.append(DeploymentSample(name, at, duration))
    with Store(settings.database_url) as store:
        store.add_samples(samples)


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def submit(client: httpx.AsyncClient, n: int, prefix: str, **params: str) -> str:
    files = [("files", (f"{prefix}/IMG_{i:04d}.jpg", jpeg(i), "image/jpeg")) for i in range(n)]
    r = await client.post("/v1/batches", files=files, params=params)
    r.raise_for_status()
    batch_id = r.json()["id"]
    while (await client.get(f"/v1/batches/{batch_id}")).json()["state"] in ("queued", "running"):
        await asyncio.sleep(0.2)
    return str(batch_id)


def screenshot(url: str, out: Path, profile: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(url)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        time.sleep(0.5)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


async def main(out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stoic-screenshot-"))
    settings = settings_for(tmp / "data")
    seed_probe_history(settings, time.time())
    fake = FakeBackend(SPECS)
    controller = Controller(settings, backends={"local": fake})
    app = create_app(settings, controller=controller)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as client:
            await submit(client, 3, "cam1")  # small: the edge
            await submit(client, 40, "cam2")  # large: a GPU pod
            await submit(client, 25, "cam3", mode="duplicator")  # edge ∥ gpu1
            await submit(client, 12, "cam1", runtime="cpu")  # pinned
            await submit(client, 6, "cam4")
            fake.script_deploys("gpu2", DeployStep(delay_s=math.inf))
            await submit(client, 30, "cam2", runtime="gpu2")  # times out: gpu2 away, edge
            await submit(client, 45, "cam3")
            await submit(client, 18, "cam1", mode="duplicator")
            await submit(client, 2, "cam4")
        await asyncio.to_thread(screenshot, f"{url}/ui", out, tmp / "chrome")
    finally:
        server.should_exit = True
        await serving
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "operator-page.png")
    asyncio.run(main(ap.parse_args().out))
