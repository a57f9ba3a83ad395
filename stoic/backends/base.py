"""The narrow protocol every runtime backend implements.

The requester and the inquisitor only ever talk to this protocol, so the daemon
(``local``, ``kubernetes``) and the replay (``simulated``) share one scheduling code
path. Errors are the typed ones of :mod:`stoic.errors`: ``DeployTimeout``,
``DeployFailure``, ``InvocationError``; cancellation is asyncio's own: cancelling the
task that awaits :meth:`RuntimeBackend.invoke` must stop the remote work (kill the
process, delete the pod) before the ``CancelledError`` propagates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from stoic.values import Job, Runtime


@dataclass(slots=True)
class Deployment:
    """A ready function on one runtime. ``deploy_s`` is the measured T_d."""

    runtime: Runtime
    deploy_s: float
    endpoint: str = ""
    handle: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upload:
    """The batch package placed where ``runtime`` can read it; ``seconds`` is T_t.

    ``subset`` is the range of the batch package's images the uploaded object holds
    (share mode uploads chunks), None when it is the whole package: a backend maps a
    job's ``subset`` into it, and the results' ``index`` back into the package's.
    """

    ref: str
    n_bytes: int
    seconds: float
    subset: tuple[int, int] | None = None


@dataclass(slots=True)
class Invocation:
    """What one function call returned. ``processing_s`` is T_p as measured by the
    requester around the call; ``timings`` are the function's own (download, model
    load, processing) and ``results`` its per-image output."""

    processing_s: float
    results: Any = None
    timings: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class RuntimeBackend(Protocol):
    """Deploy, upload, invoke and tear down the function on runtimes.

    A backend's life cycle is its owner's (the controller's): :meth:`start` once before
    the first call, :meth:`aclose` once at shutdown. Both are no-ops where the backend
    holds nothing; a class that subclasses this protocol inherits those no-ops.
    """

    async def start(self) -> None:
        """Acquire what the backend holds (clients, processes); default: nothing."""
        return None

    async def aclose(self) -> None:
        """Release it; idempotent; default: nothing."""
        return None

    async def deploy(self, runtime: Runtime, *, timeout_s: float) -> Deployment:
        """Create the function and wait until it is ready; raise DeployTimeout after
        ``timeout_s`` (having cleaned up) or DeployFailure."""
        ...

    async def upload(self, runtime: Runtime, job: Job) -> Upload:
        """Make the job's package readable by ``runtime`` (no-op at the edge); with
        ``job.subset``, only those images (share mode's chunks)."""
        ...

    async def invoke(
        self, deployment: Deployment, job: Job, upload: Upload, *, warmup: bool = False
    ) -> Invocation:
        """Run the function on the job's package (or one image if ``warmup``); with
        ``job.subset`` on those images only, each result's ``index`` their position in
        the batch package."""
        ...

    async def teardown(self, deployment: Deployment) -> None:
        """Delete everything the deployment created. Idempotent."""
        ...
