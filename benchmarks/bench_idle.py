"""What an idle daemon costs: ``.venv/bin/python benchmarks/bench_idle.py [--seconds S]``.

Starts ``stoic serve`` on its defaults (``make serve``: local runtimes, SQLite, a
directory store) in a fresh data directory on a free loopback port, waits until it is
ready and its demo model is trained (the one-time work of a first start), lets it settle
for ``--settle`` seconds, then, for ``--seconds`` (default 600: the issue's ten minutes),
reads ``/proc`` every ``--every`` seconds for the daemon and every process below it:

* **CPU**: the tree's ``utime + stime + cutime + cstime`` at the end minus at the start,
  over the wall time between. A child that lives and dies inside the period (a probe's
  function process) is counted: the daemon reaps it, so its seconds move into the
  daemon's ``cutime``/``cstime``;
* **RSS**: the sum of the tree's resident set sizes at each reading, averaged over the
  readings, and the largest (a probe's process shows for as long as it lives).

Prints one line per figure and ``--json`` writes them. The CPU figure is the tree's own,
so it stays meaningful on a loaded machine; wall-time figures do not. Settings can be
changed as for any daemon (``STOIC_*`` in the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds with reaped children, RSS bytes) of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ppid = int(fields[1])
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS
    return ppid, cpu, int(fields[21]) * PAGE


def tree(root: int) -> dict[int, tuple[float, int]]:
    """CPU seconds and RSS of ``root`` and every process below it."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))) is not None:
            stats[int(entry)] = s
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in stats.items():
            if ppid == parent and pid not in members:
                members.add(pid)
                frontier.append(pid)
    return {pid: stats[pid][1:] for pid in members if pid in stats}


@dataclass(frozen=True, slots=True)
class Figures:
    seconds: float
    cpu_s: float
    cpu_percent: float
    rss_mean_mb: float
    rss_max_mb: float
    processes_max: int


def measure(root: int, seconds: float, every: float) -> Figures:
    t0 = time.monotonic()
    start = tree(root)
    rss: list[int] = []
    procs = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        now = tree(root)
        rss.append(sum(r for _, r in now.values()))
        procs = max(procs, len(now))
        time.sleep(min(every, max(seconds - elapsed, 0.0)))
    end = tree(root)
    wall = time.monotonic() - t0
    # A process alive at the start and gone at the end was reaped by its parent in the
    # tree: its seconds are in the parent's cutime/cstime now.
    cpu = sum(c for c, _ in end.values()) - sum(c for c, _ in start.values())
    mb = 1e6
    return Figures(
        seconds=wall,
        cpu_s=cpu,
        cpu_percent=100 * cpu / wall,
        rss_mean_mb=sum(rss) / len(rss) / mb,
        rss_max_mb=max(rss) / mb,
        processes_max=procs,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, daemon: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until ``/readyz`` answers 200 and the demo model is stored (first start)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with code {daemon.returncode}")
            try:
                ready = client.get("/readyz")
                if ready.status_code == 200 and ready.json()["checks"].get("model") == "present":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(1.0)
    raise SystemExit(f"the daemon was not ready in {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="measured period")
    ap.add_argument("--settle", type=float, default=30.0, help="wait after ready, unmeasured")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between RSS readings")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="stoic-idle-") as tmp:
        log = Path(tmp) / "daemon.log"
        cmd = [sys.executable, "-c", "from stoic.cli import main; main()", "serve"]
        cmd += ["--port", str(port)]
        cmd += ["--data-dir", str(Path(tmp) / "data")]
        with log.open("wb") as out:
            daemon = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            t0 = time.monotonic()
            wait_ready(url, daemon, args.ready_timeout)
            print(f"ready, demo model stored, in {time.monotonic() - t0:.0f} s", flush=True)
            time.sleep(args.settle)
            figures = measure(daemon.pid, args.seconds, args.every)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    print(
        f"idle daemon over {figures.seconds:.0f} s: CPU {figures.cpu_s:.1f} s = "
        f"{figures.cpu_percent:.2f} % of a core; RSS of the tree mean "
        f"{figures.rss_mean_mb:.0f} MB, max {figures.rss_max_mb:.0f} MB; "
        f"at most {figures.processes_max} processes"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")


if __name__ == "__main__":
    main()
