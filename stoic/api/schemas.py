"""Response bodies of the REST API, as pydantic models (they make the OpenAPI page).

Units are in the names: ``*_s`` seconds, ``*_bytes``/``n_bytes`` bytes, instants
(``*_at``) in seconds since the Unix epoch.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from stoic.daemon.progress import Progress
from stoic.storage.package import MAX_NAME_CHARS
from stoic.store.store import BatchRecord
from stoic.values import Estimate

M = TypeVar("M", bound=BaseModel)


def read(model: type[M], source: object, **converted: Any) -> M:
    """A body of ``model`` whose fields are ``source``'s attributes of the same names,
    but those ``converted`` (enums as their values, renamed or derived fields)."""
    names = (name for name in model.model_fields if name not in converted)
    return model(**{name: getattr(source, name) for name in names}, **converted)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable cause, e.g. corrupt_image")
    message: str
    file: str | None = Field(None, description="the uploaded file or archive member at fault")
    field: str | None = Field(None, description="the form field, parameter or header at fault")


class ErrorBody(BaseModel):
    error: ErrorDetail


class EstimateOut(BaseModel):
    """One runtime's predicted components (mean and standard deviation)."""

    transfer_s: float
    transfer_std_s: float = 0.0
    deployment_s: float
    deployment_std_s: float = 0.0
    processing_s: float
    processing_std_s: float = 0.0
    total_s: float
    total_std_s: float = 0.0
    p_timeout: float = Field(0.0, description="probability that the deployment times out")
    deployment_excess_s: float = Field(
        0.0, description="E[T_d | ready] minus the median window: the heavy tail"
    )
    processing_excess: float = Field(
        0.0,
        description="E[T_p] over the fitted line, minus 1: what congested runs add on "
        "average (out-of-sample ratios of measured to predicted T_p)",
    )
    uplink_wait_s: float = Field(
        0.0,
        description="the part of transfer_s that is the wait for an uplink that is down "
        "now (the inquisitor's uplink checks; 0 while it is up)",
    )
    objective_s: float | None = Field(
        None,
        description="what the selector compared: total_s (objective mean), E[T_s] with "
        "the tail and the timeout-then-edge risk (expected), or T_s at a T_d quantile",
    )
    deadline_s: float | None = Field(
        None,
        description="the deploy deadline the selector would give this runtime: seconds "
        "from the start of its deployment after which it is abandoned and the batch falls "
        "back (policy.deploy_deadline; null: the deployment timeout)",
    )
    fallback_deadline_s: float | None = Field(
        None,
        description="this runtime's deploy deadline where the batch falls back to it, "
        "priced as a fallback of the chosen runtime (policy.deploy_deadline_fallback; "
        "null: it waits to the deployment timeout)",
    )

    @classmethod
    def of(
        cls,
        e: Estimate | dict[str, float],
        objective_s: float | None = None,
        deadline_s: float | None = None,
        fallback_deadline_s: float | None = None,
    ) -> EstimateOut:
        out = cls(**(e.as_dict() if isinstance(e, Estimate) else e))
        update = {
            "objective_s": objective_s,
            "deadline_s": deadline_s,
            "fallback_deadline_s": fallback_deadline_s,
        }
        return out.model_copy(update={k: v for k, v in update.items() if v is not None})


class Skipped(BaseModel):
    file: str
    code: str
    reason: str


class BatchAccepted(BaseModel):
    id: str
    state: str
    n_images: int
    n_bytes: int = Field(description="package size (what would be uploaded)")
    mode: str
    pinned_runtime: str | None
    skipped: list[Skipped]
    location: str


class Decision(BaseModel):
    runtime: str
    reason: str
    estimates: dict[str, EstimateOut] = Field(description="per runtime, at decision time")


class Measured(BaseModel):
    transfer_s: float | None
    deployment_s: float | None
    processing_s: float | None
    total_s: float | None = Field(
        description="T_s: from the run's start to its result (what the predictor predicts)"
    )
    end_to_end_s: float | None = Field(
        None,
        description="from acceptance to result (finished_at - created_at): T_s plus the "
        "time queued, waiting for the model and bootstrapping",
    )
    winner: str | None
    cloud_used_s: float | None
    cloud_wasted_s: float | None


class ProgressOut(BaseModel):
    """What a queued or running batch is doing now (none: nothing to add to its state)."""

    phase: str = Field(
        description="waiting (for the demo model, first start), bootstrap (a new "
        "application version's representative runs), processing, recording"
    )
    message: str = Field(
        description="one line, e.g. 'bootstrapping classify 1 before its "
        "first batch: run 2 of 2, 5 images on edge'"
    )
    since: float = Field(description="when this phase began")
    runtime: str | None = None
    run: int | None = Field(None, description="bootstrap: the run in progress, from 1")
    runs: int | None = Field(None, description="bootstrap: the runs planned so far")
    images: int | None = Field(None, description="bootstrap: images of the run in progress")

    @classmethod
    def of(cls, p: Progress | None) -> ProgressOut | None:
        if p is None:
            return None
        return read(cls, p, phase=p.phase.value)


class BatchSummary(BaseModel):
    id: str
    state: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    n_images: int
    n_bytes: int
    app: str
    app_version: str
    mode: str
    pinned_runtime: str | None
    attempts: int
    runtime: str | None = Field(description="the decision's runtime, else None")
    winner: str | None
    total_s: float | None
    error: str | None

    @classmethod
    def of(cls, b: BatchRecord) -> BatchSummary:
        return read(
            BatchSummary, b, state=b.state.value, mode=b.mode.value, runtime=b.chosen_runtime
        )


class BatchOut(BatchSummary):
    progress: ProgressOut | None = Field(
        None, description="what it is doing now, while queued or running"
    )
    decision: Decision | None
    measured: Measured | None
    skipped: list[Skipped]
    results_key: str | None
    results: list[dict[str, Any]] | None = Field(
        None,
        description="per-image results once done: the fields of ImageResult (name, label, "
        "scores, error, deployment, captured_at, camera_make, camera_model, camera_serial)",
    )

    @classmethod
    def full(
        cls,
        b: BatchRecord,
        results: list[dict[str, Any]] | None,
        progress: Progress | None = None,
    ) -> BatchOut:
        decision = None
        if b.chosen_runtime is not None:
            decision = Decision(
                runtime=b.chosen_runtime,
                reason=b.decision_reason or "",
                estimates={k: EstimateOut.of(v) for k, v in b.estimates.items()},
            )
        measured = None
        if b.finished_at is not None:
            measured = read(Measured, b, end_to_end_s=b.finished_at - b.created_at)
        return cls(
            **BatchSummary.of(b).model_dump(),
            progress=ProgressOut.of(progress),
            decision=decision,
            measured=measured,
            skipped=[Skipped(**_skip(s)) for s in b.skipped],
            results_key=b.results_key,
            results=results,
        )


def _skip(s: dict[str, Any]) -> dict[str, str]:
    return {
        "file": str(s.get("file", "")),
        "code": str(s.get("code", "")),
        "reason": str(s.get("reason", "")),
    }


def skipped_list(items: tuple[dict[str, Any], ...]) -> list[Skipped]:
    return [Skipped(**_skip(s)) for s in items]


class BatchList(BaseModel):
    batches: list[BatchSummary]


class ImageResult(BaseModel):
    """One image of a done batch: the function's answer and what the ingest read of the
    image. More fields may appear (share mode adds the ``runtime`` that labelled it; a
    detector application its ``detections``)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the name it was sent under (relative path)")
    index: int | None = Field(None, description="its position in the package")
    label: str | None = Field(None, description="the label with the highest score")
    scores: dict[str, float] = Field(default_factory=dict, description="per label, 0-1")
    error: str | None = Field(None, description="why it could not be labelled")
    deployment: str | None = Field(
        None, description="the batch's deployment label, else the first folder of its name"
    )
    captured_at: str | None = Field(
        None,
        description="EXIF DateTimeOriginal as ISO 8601, with OffsetTimeOriginal when the "
        "camera wrote one (2024-05-01T06:12:33+02:00)",
    )
    camera_make: str | None = Field(None, description="EXIF Make")
    camera_model: str | None = Field(None, description="EXIF Model")
    camera_serial: str | None = Field(None, description="EXIF BodySerialNumber")


class ResultsDocument(BaseModel):
    """``GET /v1/batches/{id}/results``: a done batch's results, self-contained."""

    batch_id: str
    app: str
    app_version: str = Field(description="the model's version that labelled it")
    runtime: str | None = Field(description="where it ran (the winner)")
    mode: str | None
    deployment: str | None = Field(description="the batch's deployment label, if it had one")
    created_at: float = Field(description="when the daemon accepted it")
    finished_at: float | None
    n_images: int
    results: list[ImageResult]


class DeploymentSampleOut(BaseModel):
    at: float
    duration_s: float
    outcome: str


class OutOfServiceOut(BaseModel):
    """An operator took the runtime out of service (``PUT
    /v1/runtimes/{name}/out-of-service``)."""

    since: float
    reason: str
    by: str = Field(description="who: the credential and the client address")


class WarmPodOut(BaseModel):
    """A pod kept warm after a batch (``keepalive.enabled``; docs/scheduling.md)."""

    since: float = Field(description="when its batch finished and it was kept")
    until: float = Field(description="when it is torn down unless a batch takes it first")
    keep_alive_s: float = Field(description="the keep-alive chosen for it")


class RuntimeOut(BaseModel):
    name: str
    kind: str
    gpus: int
    backend: str
    available: bool = Field(
        description="whether the scheduler may place a batch here now: the probes find "
        "it usable and it is in service"
    )
    unavailable_since: float | None = Field(
        description="when the probes found it unavailable (a deployment timed out)"
    )
    in_service: bool = Field(True, description="false while an operator holds it out")
    out_of_service: OutOfServiceOut | None = Field(
        None, description="the operator's hold, while in_service is false"
    )
    deployment_window: int = Field(description="calibrated sliding-window size (samples)")
    recent_deployments: list[DeploymentSampleOut]
    processing: dict[str, Any] = Field(
        description="regression of T_p on batch size for the current default version: "
        "slope (s per image), intercept (s), n_samples, inliers, method, excess"
    )
    worth_probing: bool = Field(
        description="whether the inquisitor would time its processing when it is due: it "
        "could have won one of the last 24 batches with no processing time at all"
    )
    probe_cloud_s: float = Field(
        0.0, description="pod seconds its processing probes held after ready, since start"
    )
    warm_pods: list[WarmPodOut] = Field(
        default_factory=list,
        description="pods kept warm after a batch; the next batch takes one with no T_d",
    )


class UplinkOut(BaseModel):
    """The uplink as the inquisitor's checks saw it (``inquisitor.uplink_check_url``)."""

    up: bool
    down_since: float | None = Field(description="when the first failed check of this outage ran")
    expected_wait_s: float = Field(description="what a cloud runtime's T_t includes now")
    outages: int = Field(description="outages seen to start since the daemon started")
    recent_outages_s: list[float] = Field(description="durations of the last outages, oldest first")


class RuntimeList(BaseModel):
    runtimes: list[RuntimeOut]
    uplink: UplinkOut | None = Field(None, description="None: no uplink checks configured")


class EstimateResponse(BaseModel):
    images: int
    bytes: int
    estimates: dict[str, EstimateOut] = Field(description="available runtimes only")
    objective: str = Field(description="policy.objective: mean, expected or quantile")
    selector: str = Field(description="the runtime the selector would choose")
    pipelined: bool = Field(
        False,
        description="its cloud leg would upload while the pod deploys (policy.pipelined_upload)",
    )
    reason: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    checks: dict[str, str]


class DefaultModelIn(BaseModel):
    """``PUT /v1/models/default``: the application version new batches get."""

    app: str | None = Field(None, description="the application; default controller.app")
    version: str = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="a version with a stored model"
    )


class DefaultModelOut(BaseModel):
    app: str
    version: str = Field(description="the version batches accepted from now on record")
    model_key: str = Field(description="the object key of its model")
    source: str = Field(description="'store' (set through this API) or 'settings'")
    updated_at: float | None = Field(None, description="when it was set; none from settings")
    previous: str | None = Field(None, description="PUT only: the version it replaced")
