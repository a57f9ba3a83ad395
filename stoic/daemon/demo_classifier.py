"""Training the demo model at the daemon's first start, in a child process.

``stoic serve`` should work on a fresh machine, and a fresh machine has no model in
its object store; so before the dispatcher takes its first batch the controller calls
:func:`build_demo_model` when none is stored (``controller.demo_model``). Why a child
process (``stoic model init``) rather than a call: TensorFlow stays out of the
daemon's memory and import time, and a crash of the training is an exit code and a
log file (``data_dir/logs/model-init.log``) rather than a dead daemon. Cancelling the
call (a drain during training) kills the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from stoic.errors import ConfigError
from stoic.settings import Settings


async def build_demo_model(settings: Settings, *, app_version: str | None = None) -> None:
    """Train and store the demo model in a child process (``stoic model init``).

    A child keeps TensorFlow out of the daemon's memory and lets a crash of the
    training stay a logged error. It is pointed at the daemon's object store with the
    same ``STOIC_*`` variables the local backend gives function processes.
    """
    from stoic.backends.local import objectstore_env

    env = {
        **os.environ,
        **objectstore_env(settings.data_dir, settings.objectstore, settings.objects_path),
    }
    env["STOIC_CONTROLLER__APP"] = settings.controller.app
    env["STOIC_CONTROLLER__APP_VERSION"] = app_version or settings.controller.app_version
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "model-init.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stoic.cli",
            "model",
            "init",
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            rc = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ConfigError(f"training the demo model failed (exit {rc}); log {log_path}:\n{tail}")
