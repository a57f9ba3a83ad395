"""The base install, as a new user gets it: ``pip install .`` without any extra.

One virtual environment per test session, in a temporary directory, from a copy of
the package (``pyproject.toml``, ``README.md``, ``stoic/``) so the build writes nothing
into the working tree; pip's cache makes it quick after the first run. Then the
commands the base install promises: ``stoic --help``, the replay, the deployment-time
evaluation on the sample CSV, the daemon with a stand-in function and the REST client
(``submit --wait``), and a one-line error naming the extra for what needs one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import jpeg
from tests.support.net import free_port, tail, wait_healthy
from tests.support.paths import REPO, STAND_IN
from tests.support.processes import daemon_env, serve, stop

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SAMPLE_CSV = REPO / "benchmarks" / "data" / "deployment_sample.csv"
EXTRA_MODULES = ("tensorflow", "keras", "statsmodels", "matplotlib", "boto3", "kubernetes", "scipy")
PLOTS_NOTE = "Plots not drawn: matplotlib is not installed (pip install 'stoic[analysis]')."


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base-install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "stoic", src / "stoic", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    env_dir = root / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    pip = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert pip.returncode == 0, pip.stderr[-4000:]
    print(f"base venv built in {time.monotonic() - t0:.1f} s, {site_packages_mb(env_dir):.0f} MB")
    return env_dir


def site_packages_mb(env_dir: Path) -> float:
    """The size of what the install put in the venv (pip and setuptools included)."""
    files = (env_dir / "lib").glob("python*/site-packages/**/*")
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink()) / 1e6


def run(venv: Path, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOIC_")}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def test_the_base_install_has_no_extra(venv: Path) -> None:
    code = (
        "import importlib.util as u; "
        f"print([m for m in {EXTRA_MODULES!r} if u.find_spec(m) is not None])"
    )
    out = run(venv, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_replay_evaluate_and_client(venv: Path, tmp_path: Path) -> None:
    assert run(venv, "stoic", "--help").returncode == 0
    for command in ("submit", "status", "serve", "replay"):
        out = run(venv, "stoic", command, "--help")
        assert out.returncode == 0 and "Usage" in out.stdout, out.stderr

    # The replay runs from an installed wheel (its profiles ship inside the package).
    report = tmp_path / "report"
    out = run(venv, "stoic", "replay", "--batches", "20", "--report", str(report),
              "--no-progress", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("20 batches: success"), out.stdout
    assert "pip install 'stoic[analysis]'" in out.stderr  # plots need the extra
    assert (report / "report.json").is_file() and (report / "report.md").is_file()

    # A sweep writes its tables without matplotlib and says in one line why no plot.
    sweep = tmp_path / "sweep"
    spec = str(REPO / "workload" / "envs" / "pi-edge.yaml")
    out = run(venv, "stoic", "replay", "sweep", "--envs", spec, "--modes", "selector,edge-only",
              "--seeds", "1", "--days", "1", "--batches", "20", "--jobs", "1",
              "--report", str(sweep), "--no-progress", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 replays" in out.stdout, out.stdout
    notes = [line for line in out.stderr.splitlines() if line.strip()]
    assert notes == ["note: " + PLOTS_NOTE], out.stderr
    assert (sweep / "sweep.md").is_file() and (sweep / "sweep.json").is_file()
    assert not (sweep / "vs_min_lat.png").exists() and not (sweep / "pareto.png").exists()
    assert "## Latency against cloud pod time" in (sweep / "sweep.md").read_text()

    out = run(venv, "stoic", "evaluate", "deployment", str(SAMPLE_CSV))
    assert out.returncode == 0, out.stderr
    assert "Med. SW" in out.stdout and "Avg. SW" in out.stdout
    assert "AutoReg left out" in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "extra"),
    [
        (["stoic", "model", "init"], {}, "function"),
        (["stoic", "model", "push", "m.keras", "--version", "2"], {}, "function"),
        (["python", "-m", "stoic.function.server"], {}, "function"),
        (["stoic", "evaluate", "deployment", str(SAMPLE_CSV), "--method", "autoreg"], {},
         "analysis"),
        (["stoic", "evaluate", "deployment", str(SAMPLE_CSV), "--plot", "x.png"], {},
         "analysis"),
        (["stoic", "env", "fit", "--csv", str(SAMPLE_CSV), "--out", "fitted.yaml"], {}, "fit"),
        (["stoic", "serve"], {}, "function"),
        (["stoic", "serve"],
         {"STOIC_RUNTIMES": '[{"name": "cpu", "kind": "cpu", "backend": "kubernetes"}]'},
         "kubernetes"),
        (["stoic", "serve"],
         {"STOIC_LOCAL__COMMAND": '["true"]', "STOIC_OBJECTSTORE__KIND": "s3"}, "s3"),
        (["stoic", "serve"],
         {"STOIC_LOCAL__COMMAND": '["true"]',
          "STOIC_DATABASE__URL": "postgresql+psycopg://stoic@127.0.0.1/stoic"}, "postgres"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
def test_a_missing_extra_is_one_line(
    venv: Path, tmp_path: Path, args: list[str], env: dict[str, str], extra: str
) -> None:
    out = run(venv, *args, env={"STOIC_DATA_DIR": str(tmp_path / "data"), **env}, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"needs the '{extra}' extra" in lines[0]
    assert f"pip install 'stoic[{extra}]'" in lines[0]


@pytest.fixture
def base_daemon(venv: Path, tmp_path: Path) -> Iterator[str]:
    """``stoic serve`` of the base venv; its edge runtime runs the stand-in function
    (standard library only) instead of the TensorFlow function server."""
    port = free_port()
    standin = [str(venv / "bin" / "python"), str(STAND_IN), "--no-model-check"]
    config = tmp_path / "stoic.toml"
    config.write_text(
        f"[controller]\ninquisitor = false\n\n[local]\ncommand = {standin!r}\n\n".replace("'", '"')
        + '[[runtimes]]\nname = "edge"\nkind = "edge"\n'
    )
    log = tmp_path / "daemon.log"
    proc = serve(
        config, port, log, daemon_env(), "--data-dir", str(tmp_path / "data"),
        stoic=[str(venv / "bin" / "stoic")], cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, log, timeout_s=120, process=proc)
        yield url
    finally:
        rc = stop(proc)
    assert rc == 0, tail(log)


def test_daemon_and_client(venv: Path, base_daemon: str, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        (images / f"shot{i}.jpg").write_bytes(jpeg(i))
    out = run(venv, "stoic", "submit", str(images), "--url", base_daemon, "--wait",
              "--poll", "0.2")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert ": done (3 images" in out.stdout
    for i in range(3):
        assert f"shot{i}.jpg\tstandin" in out.stdout
    status = run(venv, "stoic", "status", "--url", base_daemon)
    assert status.returncode == 0 and "done" in status.stdout, status.stderr
    shown = run(venv, "stoic", "model", "default", "--url", base_daemon)
    assert shown.returncode == 0 and "classify version 1" in shown.stdout, shown.stderr
