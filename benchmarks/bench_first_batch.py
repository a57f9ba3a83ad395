"""What a first batch costs: ``.venv/bin/python benchmarks/bench_first_batch.py [--images N]``.

What a new user meets after ``make serve``: ``stoic serve`` on its defaults (local
runtimes, SQLite, a directory store) in a fresh data directory on a free loopback port;
as soon as ``/readyz`` answers 200, ``stoic submit DIR --wait`` of ``--images`` (5)
small generated photos. Prints, in wall seconds from the daemon's start:

* when it was ready, when the batch was accepted and when its result came;
* each line ``submit --wait`` printed about the batch's progress (waiting for the demo
  model, bootstrap run n of m, where it runs), with when it appeared;
* the batch's T_s and its end-to-end latency (accepted to result) as the API reports them.

The demo model is trained on a first start only, and a new application version is
bootstrapped once: a second batch costs T_s alone. Wall times depend on the machine
and its load; say which when you quote them.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

STOIC = [sys.executable, "-c", "from stoic.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def photos(folder: Path, n: int) -> None:
    """``n`` small JPEGs (a gradient each), enough for the function to label."""
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.new("RGB", (320, 240))
        img.putdata(
            [((x + 40 * i) % 256, y % 256, (x * y) % 256) for y in range(240) for x in range(320)]
        )
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        (folder / f"shot{i}.jpg").write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="stoic-first-") as tmp:
        root = Path(tmp)
        photos(root / "photos", args.images)
        log = root / "daemon.log"
        t0 = time.monotonic()
        with log.open("wb") as out:
            cmd = [*STOIC, "serve", "--port", str(port), "--data-dir", str(root / "data")]
            daemon = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if daemon.poll() is not None or time.monotonic() - t0 > args.timeout:
                        raise SystemExit(f"the daemon did not get ready; log:\n{log.read_text()}")
                    time.sleep(0.2)
            ready = time.monotonic() - t0
            submit = subprocess.Popen(
                [*STOIC, "submit", str(root / "photos"), "--url", url, "--wait", "--poll", "0.5"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert submit.stderr is not None and submit.stdout is not None
            lines = [(time.monotonic() - t0, line.rstrip()) for line in submit.stderr]
            stdout = submit.stdout.read()
            submit.wait(timeout=args.timeout)
            result = time.monotonic() - t0
            batch_id = stdout.splitlines()[0]
            with httpx.Client(base_url=url, trust_env=False, timeout=30) as client:
                batch = client.get(f"/v1/batches/{batch_id}").json()
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    measured = batch.get("measured") or {}
    figures = {
        "images": args.images,
        "ready_s": ready,
        "result_s": result,
        "state": batch["state"],
        "runtime": measured.get("winner"),
        "total_s": measured.get("total_s"),
        "end_to_end_s": measured.get("end_to_end_s"),
        "progress": [{"at_s": at, "line": line} for at, line in lines if line],
    }
    print(f"daemon ready (/readyz 200) {ready:.1f} s after its start; batch submitted then")
    for at, line in lines:
        if line:
            print(f"  {at:7.1f} s  {line}")
    total, end_to_end = measured.get("total_s") or 0.0, measured.get("end_to_end_s") or 0.0
    print(
        f"result {result:.1f} s after the start: {batch['state']} on {measured.get('winner')}, "
        f"T_s {total:.2f} s, end to end {end_to_end:.1f} s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
