"""One typed settings tree for the whole of stoic (pydantic-settings).

Sources, strongest first: keyword arguments (tests, the CLI's flags), environment
variables (``STOIC_`` prefix, ``__`` between levels: ``STOIC_PREDICTOR__MAX_WINDOW=50``),
then a TOML or YAML file (``stoic serve --config FILE``, else the first that
:func:`stoic.configfile.find_config` finds), then the defaults below.
Every duration is in seconds and says so in its name (``*_s``); sizes are in bytes.

A bad value fails at start-up with :class:`stoic.errors.ConfigError`, whose message
names the key path and the allowed range (see :func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from stoic.errors import ConfigError
from stoic.logging import get_logger
from stoic.values import API_MODES, Mode, Runtime, RuntimeKind

log = get_logger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeSettings(_Section):
    """One runtime. The priors are what the predictor assumes before it has data;
    the defaults per name come from the STOIC paper's published measurements."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    kind: RuntimeKind
    gpus: int = Field(0, ge=0, le=16)
    backend: Literal["local", "kubernetes", "simulated"] = "local"
    prior_deploy_s: float = Field(
        30.0,
        ge=0,
        description="T_d assumed with no samples; the defaults below are the paper's readings, "
        "the STOIC authors' measured Nautilus deployments had medians cpu 20.3 s, gpu1 24.5 s, "
        "gpu2 21.5 s (12-15 each, ../shared/data/nautilus-2020-real): set the site's own",
    )
    prior_per_image_s: float = Field(1.0, ge=0, description="T_p slope assumed with no samples")
    prior_fixed_s: float = Field(15.0, ge=0, description="T_p intercept assumed with no samples")

    @model_validator(mode="after")
    def _check_kind(self) -> RuntimeSettings:
        if self.kind is RuntimeKind.GPU and self.gpus < 1:
            raise ValueError("a runtime of kind 'gpu' needs gpus >= 1")
        if self.kind is not RuntimeKind.GPU and self.gpus:
            raise ValueError(f"a runtime of kind {self.kind.value!r} must have gpus = 0")
        return self

    def to_runtime(self) -> Runtime:
        return Runtime(self.name, self.kind, self.gpus, self.backend)


def default_runtimes() -> list[RuntimeSettings]:
    """The paper's four scenarios with its published processing fits (docs/replay.md,
    "The paper's published figures")."""
    return [
        RuntimeSettings(
            name=name,
            kind=kind,
            gpus=gpus,
            prior_deploy_s=deploy_s,
            prior_per_image_s=per_image_s,
            prior_fixed_s=fixed_s,
        )
        for name, kind, gpus, deploy_s, per_image_s, fixed_s in (
            ("edge", RuntimeKind.EDGE, 0, 0.0, 2.3955, 13.60),
            ("cpu", RuntimeKind.CPU, 0, 10.0, 1.3338, 14.91),
            ("gpu1", RuntimeKind.GPU, 1, 30.0, 0.3272, 28.16),
            ("gpu2", RuntimeKind.GPU, 2, 45.0, 0.1993, 21.27),
        )
    ]


class DatabaseSettings(_Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    busy_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3_600,
        description="SQLite: how long a write waits for a lock held by another connection "
        "before it fails (the daemon then retries the batch's write with back-off)",
    )

    lease_ttl_s: float = Field(
        30.0,
        ge=3,
        le=3_600,
        description="a daemon holds a lease on its database, renewed every third of this; "
        "another daemon on the same database takes it over only once it is this old "
        "(at once when its holder is gone from this host); docs/operations.md",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = re.match(r"([A-Za-z0-9+]+)://", v)
        if scheme is None or scheme.group(1).lower() not in DATABASE_SCHEMES:
            got = f"{scheme.group(1)!r}" if scheme else "no scheme://"
            raise ValueError(
                f"unsupported database URL ({got}); expected sqlite:///PATH or "
                "postgresql+psycopg://USER:PASSWORD@HOST/DB"
            )
        return v


DATABASE_SCHEMES = frozenset({"sqlite", "sqlite+pysqlite", "postgresql+psycopg"})
"""The databases stoic runs on (``docs/store.md``); a URL is checked further when the
daemon connects."""


class ObjectStoreSettings(_Section):
    kind: Literal["dir", "s3"] = Field("dir", description="'s3' needs the s3 extra")
    path: Path | None = Field(None, description="root of the 'dir' store; default data_dir/objects")
    min_free_bytes: int = Field(
        64 * 1024**2,
        ge=0,
        description="free space kept on the disks of data_dir and of the 'dir' store: an "
        "upload that would leave less is refused (507), and /readyz fails while a disk "
        "has less (0: only once a write found the disk full); docs/operations.md",
    )
    s3_endpoint: str | None = None
    s3_bucket: str = Field("stoic", min_length=3, max_length=63)
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None


class PredictorSettings(_Section):
    """The paper's section 3.4 parameters."""

    calibration_period: int = Field(
        10, ge=1, le=10_000, description="new samples per recalibration"
    )
    max_window: int = Field(100, ge=1, le=10_000)
    calibration_history: int = Field(
        100, ge=2, le=100_000, description="samples scored per recalibration"
    )
    processing_history: int = Field(
        10, ge=1, le=10_000, description="recent samples per regression"
    )
    processing_shape_history: int = Field(
        0,
        ge=0,
        le=10_000,
        description="recent T_p samples the line's shape (its fixed cost against its "
        "per-image cost) is fitted on; the last processing_history samples then only scale "
        "it, by their median ratio to it (0: no shape, the line fitted on the "
        "processing_history samples alone); docs/predictor.md, 'Where random-001's "
        "learning gap comes from'",
    )
    processing_tail_history: int = Field(
        100,
        ge=1,
        le=100_000,
        description="recent out-of-sample ratios (measured / predicted T_p) behind the "
        "expected objective's processing tail; docs/scheduling.md",
    )
    deploy_timeout_s: float = Field(600.0, gt=0, le=86_400)
    deployment_method: Literal["median", "mean", "autoreg"] = Field(
        "median", description="'autoreg' needs the analysis extra"
    )
    deployment_mixture_history: int = Field(
        0,
        ge=0,
        le=10_000,
        description="recent ready T_d values a two-mode log-normal mixture (cache hits and "
        "image pulls) is fitted to at each recalibration; where they show two alternating "
        "modes the T_d estimate is the mixture's mean (0: no mixture, the window alone); "
        "docs/predictor.md",
    )
    deployment_cold_ratio: float | None = Field(
        None,
        gt=1,
        description="a runtime's first deployment, or its first after deployment_cold_idle_s "
        "without one, that takes more than this many times the current T_d estimate (the "
        "prior before any) is a cold start (an image pull): recorded, kept out of the window "
        "(None: every deployment joins it); docs/predictor.md",
    )
    deployment_cold_idle_s: float = Field(
        3600.0,
        gt=0,
        description="seconds without a deployment of a runtime after which its next one may "
        "be a cold start (deployment_cold_ratio)",
    )
    deployment_tail_history: int = Field(
        0,
        ge=0,
        le=100_000,
        description="recent T_d values (probes included) the deployment tail is priced "
        "from (deployment_excess_s, p_timeout, the ready distribution) where this is more "
        "than calibration_history + max_window, the values the window keeps (0: those); a "
        "day of the inquisitor's probes (1440) prices a heavy tail from seven times as "
        "many outliers and timeouts; docs/predictor.md, 'The deployment tail'",
    )
    default_bandwidth_bps: float = Field(
        70.8e6 / 8, gt=0, description="uplink before any measurement"
    )
    bandwidth_history: int = Field(10, ge=1, le=10_000)
    processing_max_age_s: float | None = Field(
        None,
        gt=0,
        description="T_p samples older than this before a runtime's newest are not "
        "fitted: a line learnt in an earlier session (days ago, another node) is no "
        "guide to today's; None: the last processing_history samples, however old; "
        "docs/predictor.md, 'Regimes'",
    )
    processing_change_detection: bool = Field(
        False,
        description="watch each T_p model's out-of-sample ratios for a regime change "
        "(Bayesian online change-point detection) and, on an alarm, fit the line on the "
        "new regime's samples only; docs/predictor.md, 'Regimes'",
    )
    processing_change_hazard: float = Field(
        0.002,
        gt=0,
        lt=1,
        description="prior probability per T_p sample that a new regime starts with it",
    )
    processing_change_threshold: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="posterior probability of a recent regime change that raises an alarm",
    )
    processing_change_min_run: int = Field(
        3,
        ge=2,
        le=10,
        description="samples of a new regime before it can raise an alarm (one slow run "
        "is congestion, not a regime)",
    )
    processing_time_of_day: bool = Field(
        False,
        description="learn a factor of T_p per hour of the day (UTC) from each runtime's "
        "past days and apply it to the line's prediction for the hour asked; "
        "docs/predictor.md, 'Regimes'",
    )
    processing_time_of_day_min_days: int = Field(
        2,
        ge=1,
        description="past days that must each show an hour's time-of-day effect (by "
        "processing_time_of_day_min_effect or more) before its factor is used",
    )
    processing_time_of_day_min_effect: float = Field(
        0.2,
        ge=0,
        description="time-of-day factors within [1/(1+x), 1+x] count as 1 (no effect)",
    )
    ransac_min_samples: int = Field(2, ge=2)
    ransac_residual_threshold_s: float | None = Field(None, gt=0)
    ransac_max_trials: int = Field(100, ge=1, le=100_000)
    seed: int = 0


class InquisitorSettings(_Section):
    """The inquisitor's background probes (``stoic.schedule.probe.inquisitor``): cloud
    deployments each period (paper §3.1), processing probes and uplink checks (ours)."""

    period_s: float = Field(
        60.0, gt=0, le=86_400, description="the probes' tick (the paper's one minute)"
    )
    processing_probe_period_s: float = Field(
        3600.0,
        ge=0,
        le=7 * 86_400,
        description="how often the inquisitor also times the function on a probe batch "
        "on a pod it has deployed anyway, per cloud runtime (0: never); docs/scheduling.md",
    )
    processing_probe_images: list[int] = Field(
        default_factory=lambda: [10, 100],
        min_length=1,
        description="probe batch sizes, taken in turn (two sizes identify the slope)",
    )
    probe_pricing: bool = Field(
        False,
        description="probes earn their cost: a probe runs only when the chance that its "
        "runtime wins a likely batch times the gain exceeds its pod time's price, and a "
        "deployment probe at most once per runtime between two decisions; "
        "docs/scheduling.md",
    )
    probe_price_s_per_pod_s: float = Field(
        0.01,
        ge=0,
        description="probe pricing: the least price of a probe's pod-second x GPUs, in "
        "seconds of latency (the cloud budget's price where it is higher)",
    )
    probe_share: float | None = Field(
        None,
        ge=0,
        le=100,
        description="the probe ledger: the processing probes may hold at most this share "
        "of the batches' pod-seconds x GPUs (0.25: a quarter), each cloud runtime an "
        "equal part, each runtime's first probe excepted (None: no ledger); "
        "docs/scheduling.md",
    )
    uplink_check_url: str | None = Field(
        None,
        description="an http(s) URL across the uplink (the cluster API's /readyz, the "
        "object store): the inquisitor requests it every tick, and while it does not "
        "answer, cloud T_t includes the expected wait for the link (None: no checks); "
        "docs/scheduling.md",
    )
    uplink_check_timeout_s: float = Field(
        5.0, gt=0, le=60, description="an uplink check unanswered this long finds the link down"
    )

    @field_validator("uplink_check_url")
    @classmethod
    def _uplink_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v

    @field_validator("processing_probe_images")
    @classmethod
    def _probe_sizes(cls, v: list[int]) -> list[int]:
        if any(not 1 <= n <= 10_000 for n in v):
            raise ValueError("every probe size must be 1..10000 images")
        return v


class PolicySettings(_Section):
    """What the scheduler decides with (``stoic.schedule.decide.policy``,
    ``stoic.schedule.scheduler``); docs/scheduling.md."""

    objective: Literal["mean", "expected", "quantile"] = Field(
        "expected",
        description="what the selector minimises: the predicted T_s (mean: the paper's), "
        "E[T_s] with the deployment tail and timeouts (expected), or T_s at "
        "objective_quantile of T_d (quantile); docs/scheduling.md",
    )
    objective_quantile: float = Field(
        0.9, gt=0, lt=1, description="the T_d quantile of objective = quantile"
    )
    bootstrap_tasks_per_runtime: int = Field(
        2, ge=1, le=100, description="representative tasks per runtime (paper §3.7)"
    )
    share_min_gain_s: float = Field(
        5.0,
        ge=0,
        description="share mode: deploy a cloud runtime only if it is predicted to finish "
        "the batch at least this much sooner (its expected gain, timeout risk priced in)",
    )
    share_max_cloud_runtimes: int = Field(
        3, ge=0, le=16, description="share mode: cloud runtimes deployed for one batch at most"
    )
    deploy_deadline: bool = Field(
        False,
        description="choose a deploy deadline per cloud leg at decision time (the one of "
        "least expected total over the predictor's deployment distribution); past it the "
        "deployment is abandoned and the batch falls back; off: wait to the timeout "
        "(the paper's); docs/scheduling.md",
    )
    deploy_deadline_min_gain_s: float = Field(
        1.0, ge=0, description="set a deploy deadline only if it saves this much in expectation"
    )
    deploy_deadline_fallback: bool = Field(
        False,
        description="with deploy_deadline: a fallback leg gets a deadline of its own, "
        "priced for it as a fallback (its own fallback the best of the runtimes not yet "
        "tried, the edge last, with none); off: a fallback leg waits to the timeout; "
        "docs/scheduling.md",
    )
    pipelined_upload: bool = Field(
        False,
        description="the selector's cloud leg uploads while its pod deploys: "
        "max(T_t, T_d) + T_p (the duplicator's always do); off: deploy, then upload "
        "(the paper's); docs/scheduling.md",
    )


class RequesterSettings(_Section):
    """Back-off as in section 3.7: 100 ms, doubling, 10 attempts."""

    retry_initial_s: float = Field(0.1, gt=0, le=60)
    retry_factor: float = Field(2.0, ge=1, le=10)
    retry_attempts: int = Field(10, ge=1, le=100)
    warmup: bool = True
    fallback_to_edge: bool = True
    default_mode: Mode = Field(
        Mode.SELECTOR,
        description="mode of a batch that names none: selector, selector-paper (without "
        "the deploy deadline and the pipelined upload), duplicator or share",
    )
    duplicator_runtime: str = Field(
        "auto",
        description="the duplicator's cloud runtime; auto: per batch, the one with the "
        "smallest predicted total, or none when the edge is predicted fastest",
    )
    duplicator_edge_margin: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="auto duplicator: deploy no pod when the edge's predicted total is "
        "below (1 - margin) x the best cloud's",
    )
    deploy_guard_grace_s: float = Field(
        5.0, ge=0, le=600, description="extra wait past deploy_timeout_s for a hung backend"
    )
    cloud_budget_pod_s_per_day: float | None = Field(
        None,
        ge=0,
        description="cloud pod-seconds x GPUs a day may spend, batches, probes and warm "
        "pods alike; a price per pod-second paces it, and once spent the edge takes the "
        "work (None: unlimited); docs/scheduling.md, 'The cloud budget'",
    )
    cloud_price_step: float = Field(
        20.0,
        gt=0,
        le=1_000,
        description="how fast the cloud budget's price moves: latency seconds per "
        "pod-second added when a whole day's budget is spent beyond what has accrued",
    )

    @field_validator("default_mode")
    @classmethod
    def _daemon_mode(cls, v: Mode) -> Mode:
        if v not in API_MODES:
            raise ValueError(
                f"{v.value!r} cannot be the default mode (a batch names its runtime for "
                "'pinned'; the other modes are the replay's); expected one of "
                + ", ".join(m.value for m in API_MODES)
            )
        return v


class KeepAliveSettings(_Section):
    """Warm pods (docs/scheduling.md, "Warm pods"): after a batch a cloud pod stays up
    for a keep-alive predicted from the arrivals seen and the runtime's cold T_d, so the
    next batch can take it with no deployment. Off by default (the paper's behaviour)."""

    enabled: bool = Field(False, description="keep cloud pods warm between batches")
    price_s_per_pod_s: float = Field(
        0.02,
        ge=0,
        description="seconds of latency one idle pod second is worth paying (x GPUs, a CPU "
        "pod counts one): a pod is kept while the chance of the next batch, times the T_d "
        "it saves, pays for its seconds; a cloud budget's price where that is higher",
    )
    max_s: float = Field(3_600.0, ge=0, le=86_400, description="the longest keep-alive")
    min_gaps: int = Field(
        5, ge=1, le=10_000, description="inter-arrival gaps seen before any pod is kept"
    )
    history: int = Field(200, ge=1, le=100_000, description="inter-arrival gaps remembered")
    hour_bandwidth_h: float = Field(
        2.0,
        gt=0,
        le=24,
        description="hours: gaps that began near the last arrival's hour of day weigh "
        "most (a Gaussian kernel of this standard deviation)",
    )
    max_per_runtime: int = Field(1, ge=1, le=64, description="warm pods kept per runtime")
    fixed_s: float | None = Field(
        None,
        ge=0,
        le=86_400,
        description="keep every pod this long instead (Knative's fixed scale-to-zero grace "
        "period, not predicted); unset: the predicted keep-alive",
    )


class ShareSettings(_Section):
    """Share mode: how a shared batch is cut and run (docs/scheduling.md); which cloud
    runtimes take part is the policy's (``policy.share_*``)."""

    chunk_factor: float = Field(
        2.0,
        ge=1,
        le=64,
        description="guided self-scheduling: a chunk takes its taker 1/chunk_factor of "
        "the time the batch has left if shared",
    )
    min_chunk_s: float = Field(
        2.0,
        ge=0,
        description="smallest chunk, in seconds of its taker's processing (so the call "
        "overhead stays small against the work), unless that is more than 1/chunk_factor "
        "of the open images",
    )
    prefetch_chunks: int = Field(
        2, ge=1, le=64, description="chunks a cloud runtime keeps uploaded ahead of its work"
    )
    max_hedges: int = Field(
        1, ge=0, le=16, description="straggler hedges per batch (a chunk labelled twice)"
    )


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65_535)
    token: SecretStr | None = Field(None, description="bearer token; none = no auth")
    allow_anonymous: bool = Field(
        False,
        description="serve without a token on an address beyond loopback "
        "(stoic serve refuses to otherwise)",
    )
    max_batch_images: int = Field(5_000, ge=1)
    max_batch_bytes: int = Field(
        2 * 1024**3, ge=1, description="bytes of all files of a batch, rejected ones included"
    )
    max_image_bytes: int = Field(50 * 1024**2, ge=1)
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="width × height of one image, read from its header"
    )
    max_batch_pixels: int = Field(
        50_000_000_000, ge=1, description="pixels of all images of a batch, rejected included"
    )
    max_invalid_images: int = Field(
        20, ge=0, le=100_000, description="invalid images skip_invalid may drop before a 422"
    )
    max_form_fields: int = Field(16, ge=1, le=1_000, description="non-file form fields")
    max_form_bytes: int = Field(
        64 * 1024, ge=1, le=16 * 1024**2, description="bytes of all non-file form fields"
    )
    validation_workers: int = Field(
        2, ge=1, le=64, description="threads of the upload validation pool (its own)"
    )
    max_concurrent_uploads: int = Field(4, ge=1, le=1_000, description="uploads processed at once")
    max_queued_uploads: int = Field(
        64, ge=0, le=100_000, description="uploads waiting for a slot; more get 503 at once"
    )
    upload_queue_timeout_s: float = Field(
        30.0, gt=0, le=3_600, description="longest wait for an upload slot before a 503"
    )
    max_connections: int = Field(
        1_024, ge=8, le=1_000_000, description="open HTTP connections (idle ones are evicted)"
    )
    listen_backlog: int = Field(
        128, ge=1, le=65_535, description="connections the kernel queues for accept()"
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65_535,
        description="a second listener on this port (same host) answering only /healthz "
        "and /readyz, with its own accept queue and connection cap, so that probes never "
        "queue behind a connection flood on `port`; none = off",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="time to send a request's headers before a 408"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3_600, description="longest silence within a request body before a 408"
    )
    keep_alive_s: float = Field(
        75.0,
        gt=0,
        le=600,
        description="idle keep-alive connection; longer than clients' and proxies' own "
        "(httpx 5 s, many load balancers 60 s), so that the client closes it: a server "
        "that does races the client's next request, which then gets no answer",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="names the daemon answers to (the Host header, port ignored) besides "
        "localhost, `host` and any IP address; others get 400 (DNS rebinding); `*` = any",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, names: list[str]) -> list[str]:
        out = [n.strip().lower().rstrip(".") for n in names]
        for n in out:
            if not n or (n != "*" and any(c in n for c in "/:@?#[]* ")):
                raise ValueError(
                    f"{n!r} is not a host name (no scheme, port or path; "
                    "IP addresses are always allowed)"
                )
        return out

    @field_validator("token")
    @classmethod
    def _check_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError(
                "an empty token would let anyone in; set a secret, or leave api.token "
                "out (and STOIC_API__TOKEN unset) for no authentication"
            )
        return v

    @model_validator(mode="after")
    def _check_health_port(self) -> ApiSettings:
        if self.health_port is not None and self.health_port != 0 and self.health_port == self.port:
            raise ValueError(f"health_port must differ from port ({self.port})")
        return self


def check_listener(api: ApiSettings) -> None:
    """Refuse to serve the API beyond loopback without a token (``stoic serve`` calls it
    before it binds): a controller on ``0.0.0.0`` with no ``api.token`` lets anyone who
    can reach it submit batches and spend the cloud budget. ``api.allow_anonymous``
    says that this is meant (a private network, a proxy that authenticates); it is then
    logged. Raises :class:`ConfigError` (one line; ``stoic`` exits 2)."""
    if api.token is not None and api.token.get_secret_value():
        return
    host = api.host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return
    if api.allow_anonymous:
        log.warning("serving beyond loopback without a token (api.allow_anonymous)", host=host)
        return
    raise ConfigError(
        f"api.host = {api.host!r} listens beyond loopback and api.token is not set: "
        "set api.token (STOIC_API__TOKEN), or api.allow_anonymous = true to serve without one"
    )


class ControllerSettings(_Section):
    drain_grace_s: float = Field(30.0, ge=0, le=3_600)
    app: str = "classify"
    app_version: str = Field(
        "1",
        description="version new batches get until one is set by PUT /v1/models/default "
        "(stoic model default), which is stored and wins",
    )
    bootstrap: bool = True
    bootstrap_scope: Literal["contenders", "all"] = Field(
        "contenders",
        description="which runtimes a new application version's first batch bootstraps: "
        "the edge and those that could win that batch with no processing time at all "
        "(contenders; the others when a batch they could win comes), or every runtime "
        "(all: the paper's); docs/scheduling.md",
    )
    max_concurrent_batches: int = Field(
        1, ge=1, le=64, description="batches processed at once (the edge is one machine)"
    )
    poll_s: float = Field(
        1.0, gt=0, le=3_600, description="dispatcher's look at the queue without a wake-up"
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="runs of one batch the daemon died in without progress before it fails "
        "(a drain, or a share run that stored new chunks, is not counted)",
    )
    inquisitor: bool = Field(True, description="run the background deployment probes")
    demo_model: bool = Field(
        True, description="train and store the demo model at start-up if none is stored"
    )
    task_restart_initial_s: float = Field(
        1.0, gt=0, le=600, description="first back-off before restarting a crashed task"
    )
    task_restart_max_s: float = Field(
        60.0, gt=0, le=3_600, description="longest back-off before restarting a crashed task"
    )
    store_retry_initial_s: float = Field(
        0.5,
        gt=0,
        le=600,
        description="first back-off before retrying a batch's failed database or object "
        "store write (a locked database, a full disk); doubled up to store_retry_max_s",
    )
    store_retry_max_s: float = Field(
        30.0, gt=0, le=3_600, description="longest back-off between retries of such a write"
    )


class RetentionSettings(_Section):
    """What the daily sweep (:mod:`stoic.daemon.retention`) deletes, and how often it
    and the disk usage metrics run; docs/operations.md, "Retention"."""

    packages_days: float | None = Field(
        30.0,
        gt=0,
        le=36_500,
        description="a finished batch's package (the uploaded images) is deleted this many "
        'days after its upload; a queued or running batch\'s never ("forever" or none: '
        "kept forever)",
    )
    results_days: float | None = Field(
        None,
        gt=0,
        le=36_500,
        description="a finished batch (its row, results and whatever is left of it) is "
        'deleted this many days after it finished ("forever" or none: kept forever)',
    )
    sweep_period_s: float = Field(
        86_400.0, ge=60, le=30 * 86_400, description="the sweep's period (the first at start)"
    )
    usage_period_s: float = Field(
        300.0,
        ge=10,
        le=86_400,
        description="how often the data directory and a directory object store are walked "
        "for the disk usage metrics (an S3 store is listed at each sweep only)",
    )

    @field_validator("packages_days", "results_days", mode="before")
    @classmethod
    def _forever(cls, v: Any) -> Any:
        """TOML has no null: ``"forever"`` says none."""
        return None if v == "forever" else v


class CloudStoreSettings(_Section):
    """The cloud object store (``[kubernetes.store]``): the S3 bucket that packages are
    uploaded to for the cloud runtimes and that their function pods read packages and
    models from. The controller reaches it at ``endpoint`` with its own keys; the pods
    get ``pod_endpoint``, the bucket and the region as environment variables and their
    keys by reference to a Secret, never literally in a manifest."""

    endpoint: str | None = Field(
        None, description="S3 endpoint as the controller reaches it; none = AWS for `region`"
    )
    pod_endpoint: str | None = Field(
        None, description="the same store as function pods reach it; none = `endpoint`"
    )
    bucket: str = Field("stoic", min_length=3, max_length=63)
    region: str = "us-east-1"
    access_key: str | None = Field(
        None, description="the controller's key; none = boto3's own search (env, role)"
    )
    secret_key: SecretStr | None = None
    credentials_secret: str | None = Field(
        "stoic-s3",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="Secret in `kubernetes.namespace` whose keys `access_key` and "
        "`secret_key` the pods get (secretKeyRef); none = no keys (a pod role)",
    )


class KubernetesSettings(_Section):
    """The Kubernetes cloud backend (``stoic.backends.kubernetes``).

    ``mode='deployment'`` (default) creates a plain Deployment + Service per deployment;
    ``mode='knative'`` one Knative Serving ``serving.knative.dev/v1`` Service;
    ``mode='kubeless'`` (legacy: kubeless is archived since 2021) one ``kubeless.io/v1beta1``
    Function. GPU runtimes get ``nvidia.com/gpu: <gpus>`` limits; node selectors and
    tolerations are merged: the global ones first, then the GPU ones for GPU runtimes,
    then the per-runtime ones (keyed by runtime name). Every function container gets the
    CPU/memory requests and limits below and a restricted security context.
    """

    mode: Literal["deployment", "knative", "kubeless"] = "deployment"
    namespace: str = Field("stoic", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    image_cpu: str = "ghcr.io/stoic-project/stoic-function-cpu:0.1.0"
    image_gpu: str = "ghcr.io/stoic-project/stoic-function-gpu:0.1.0"
    handler: str = "stoic.function.handler.handler"
    node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    runtime_node_selectors: dict[str, dict[str, str]] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    runtime_tolerations: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    in_cluster: bool = False
    kubeconfig: Path | None = Field(None, description="kubeconfig file; default ~/.kube/config")
    context: str | None = Field(None, description="kubeconfig context; default current")
    service_port: int = Field(8080, ge=1, le=65_535)
    ready_poll_s: float = Field(
        1.0, gt=0, le=60, description="longest wait on one watch read before re-checking"
    )
    api_timeout_s: float = Field(30.0, gt=0, le=600, description="one API call")
    invoke_timeout_s: float = Field(900.0, gt=0, le=86_400, description="one function call")
    controller_id: str = Field(
        "stoic", pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", description="owner label"
    )
    invoke_via: Literal["proxy", "dns"] = "proxy"
    cleanup_orphans_at_start: bool = True
    kubeless_runtime_id: str = Field(
        "stoictf", pattern=r"^[A-Za-z]+$", description="+cpu/gpu: runtime in kubeless-config"
    )
    readiness_path: str | None = Field(
        "/healthz", description="HTTP readiness and startup probe; none = both off"
    )
    liveness_path: str | None = Field("/healthz", description="HTTP liveness probe; none = off")
    startup_timeout_s: int = Field(
        600, ge=1, le=3_600, description="startup probe: time to first answer before a restart"
    )
    cpu_request_millicores: int = Field(
        1_000, ge=1, le=1_024_000, description="function container (1000 = one core)"
    )
    cpu_limit_millicores: int | None = Field(
        2_000, ge=1, le=1_024_000, description="function container; none = no CPU limit"
    )
    memory_request_mib: int = Field(2_048, ge=16, le=4_194_304, description="function container")
    memory_limit_mib: int = Field(4_096, ge=16, le=4_194_304, description="function container")
    tmp_size_limit_mib: int = Field(
        4_096, ge=1, le=4_194_304, description="the writable /tmp (emptyDir) of a function pod"
    )
    run_as_user: int = Field(
        10_001, ge=1, le=2_147_483_647, description="function container UID (the images' user)"
    )
    knative_min_scale: int = Field(
        1, ge=0, le=1_000, description="knative: pods kept while deployed (0 = scale to zero)"
    )
    knative_max_scale: int = Field(1, ge=0, le=1_000, description="knative: 0 = no upper bound")
    knative_container_concurrency: int = Field(
        1, ge=0, le=1_000, description="knative: requests one pod serves at once; 0 = no limit"
    )
    knative_timeout_s: int = Field(
        600, ge=1, le=86_400, description="knative: longest request (cluster caps it, 600 s)"
    )
    knative_cluster_local: bool = Field(
        True, description="knative: reachable inside the cluster only (no public route)"
    )
    knative_ready_false_grace_s: float = Field(
        2.0, ge=0, le=600, description="knative: Ready=False held this long is a failure"
    )
    model_key_template: str = Field(
        "models/{app}/{app_version}/model.keras",
        description="object key of the model (as stoic.storage.package.model_key); "
        "{app}, {app_version}",
    )
    pod_grace_period_s: int = Field(5, ge=0, le=3_600, description="on teardown")
    store: CloudStoreSettings = CloudStoreSettings()

    @model_validator(mode="after")
    def _check_bounds(self) -> KubernetesSettings:
        if self.memory_limit_mib < self.memory_request_mib:
            raise ValueError(
                f"memory_limit_mib ({self.memory_limit_mib}) is below memory_request_mib "
                f"({self.memory_request_mib})"
            )
        if (
            self.cpu_limit_millicores is not None
            and self.cpu_limit_millicores < self.cpu_request_millicores
        ):
            raise ValueError(
                f"cpu_limit_millicores ({self.cpu_limit_millicores}) is below "
                f"cpu_request_millicores ({self.cpu_request_millicores})"
            )
        if self.knative_max_scale and self.knative_min_scale > self.knative_max_scale:
            raise ValueError(
                f"knative_min_scale ({self.knative_min_scale}) is above knative_max_scale "
                f"({self.knative_max_scale})"
            )
        return self


class LocalBackendSettings(_Section):
    """The local runtime backend (``stoic.backends.local``): each runtime is a process
    on this machine running the function's HTTP server on a loopback port."""

    command: list[str] | None = Field(
        None,
        min_length=1,
        description="argv of the function server (``--port N`` is appended); "
        "default: this Python with ``-m stoic.function.server``",
    )
    host: str = "127.0.0.1"
    cuda_visible_devices: str | None = Field(
        "", description="CUDA_VISIBLE_DEVICES for the processes; '' hides GPUs, None inherits"
    )
    ready_poll_s: float = Field(0.05, gt=0, le=10, description="period of the /healthz polls")
    terminate_grace_s: float = Field(5.0, ge=0, le=600, description="SIGTERM → SIGKILL wait")
    invoke_timeout_s: float | None = Field(
        None, gt=0, description="longest function call; None = no limit (cancel instead)"
    )
    standby: bool = Field(True, description="keep a warm standby process for the edge")
    standby_timeout_s: float = Field(600.0, gt=0, le=86_400, description="standby start limit")
    standby_idle_s: float | None = Field(
        300.0,
        gt=0,
        le=7 * 86_400,
        description="stop the edge standby after this long unused (it holds TensorFlow and "
        "the model, about 0.4-0.7 GB); the next edge run starts it again and waits for it. "
        "None: keep it running (the paper's standby pod); docs/operations.md",
    )
    probe_period_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        description="how often the inquisitor deploys each cloud runtime of this backend "
        "(a process on this machine) to time its start, in place of inquisitor.period_s; "
        "the first probe comes one period after the start; docs/operations.md",
    )
    model_key: str | None = Field(
        None,
        description="one model object key for every version (then stoic model default "
        "changes no model); default models/<app>/<version>/model.keras",
    )
    log_dir: Path | None = Field(None, description="process logs; default data_dir/logs/local")
    keep_logs: bool = Field(False, description="keep the log of a cleanly stopped process")


class UiSettings(_Section):
    """The operator page (``GET /ui``, :mod:`stoic.api.ui`): what it shows, how often the
    browser refreshes it and how long a render is shared, and its login sessions (it
    uses ``api.token`` like the API; sessions live in the daemon's memory)."""

    enabled: bool = Field(True, description="serve the operator page at /ui")
    refresh_s: float = Field(
        5.0, ge=1, le=3_600, description="period of the page's background refresh"
    )
    batches: int = Field(20, ge=1, le=500, description="batches in the page's table")
    chart_batches: int = Field(
        200, ge=10, le=5_000, description="newest done batches in the predicted-vs-actual charts"
    )
    chart_deployments: int = Field(
        50, ge=5, le=1_000, description="newest deployment samples per runtime chart"
    )
    render_cache_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="a rendered part of the page is served to every poller this long before "
        "it is rendered again (0 = each request renders; concurrent ones still share one)",
    )
    session_ttl_s: float = Field(
        7 * 86_400.0,
        gt=0,
        le=365 * 86_400,
        description="longest life of a login session, however active",
    )
    session_idle_s: float = Field(
        1_800.0,
        gt=0,
        le=365 * 86_400,
        description="a login session unused this long ends (an open page refreshing is use)",
    )
    login_free_failures: int = Field(
        3, ge=0, le=100, description="wrong tokens a client may offer before back-off starts"
    )
    login_backoff_s: float = Field(
        1.0,
        gt=0,
        le=3_600,
        description="the first back-off after the free failures; it doubles with each "
        "further wrong token (429 with Retry-After meanwhile)",
    )
    login_backoff_max_s: float = Field(300.0, gt=0, le=86_400, description="the longest back-off")
    login_failure_memory_s: float = Field(
        3_600.0,
        gt=0,
        le=30 * 86_400,
        description="a client's wrong tokens are forgotten this long after its last one",
    )

    @model_validator(mode="after")
    def _check_backoff(self) -> UiSettings:
        if self.login_backoff_max_s < self.login_backoff_s:
            raise ValueError(
                f"login_backoff_max_s ({self.login_backoff_max_s}) is below login_backoff_s "
                f"({self.login_backoff_s})"
            )
        return self


class FunctionSettings(_Section):
    """The serverless function's process (``stoic.function``): how it runs the model.

    Read by the function server from its own environment (``STOIC_FUNCTION__...``), so
    each runtime's process can be tuned apart from the daemon."""

    batch_size: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="images per model call on every device; None = measured per device "
        "when a model is loaded (the smallest of batch_candidates within "
        "batch_tolerance of the best throughput)",
    )
    batch_candidates: list[int] = Field(
        default_factory=lambda: [16, 32, 64, 128, 256, 512],
        min_length=1,
        description="batch sizes tried at model load when batch_size is None",
    )
    batch_tolerance: float = Field(
        0.05, ge=0, lt=1, description="fraction of the best throughput a smaller batch may lose"
    )
    tune_budget_s: float = Field(
        0.6, gt=0, le=60, description="time spent measuring batch sizes, per device"
    )
    devices: list[str] | None = Field(
        None,
        description="TensorFlow devices to run on (e.g. ['GPU:0', 'GPU:1']); "
        "None = every visible GPU, else CPU:0",
    )
    decode_threads: int | None = Field(
        None, ge=1, le=256, description="image decoders; None = the CPUs this process may use"
    )
    decode_chunk: int = Field(16, ge=1, le=1024, description="images per decode task")
    max_inflight_images: int = Field(
        1024,
        ge=1,
        description="images read from the package but not yet classified (bounds memory); "
        "raised to the largest batch plus one decode chunk if smaller",
    )
    freeze_gc: bool = Field(
        True,
        description="gc.freeze() after a model load, so that full garbage collections do "
        "not walk TensorFlow's objects in the middle of a call",
    )

    @field_validator("batch_candidates")
    @classmethod
    def _check_candidates(cls, value: list[int]) -> list[int]:
        bad = [b for b in value if not 1 <= b <= 4096]
        if bad:
            raise ValueError(f"batch sizes must be 1-4096, got {bad}")
        return value


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = Field(True, alias="json")
    max_repeats: int = Field(
        10, ge=1, le=1_000_000, description="lines of one event per repeat_window_s; rest counted"
    )
    repeat_window_s: float = Field(60.0, gt=0, le=86_400)


MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("predictor", "inquisitor_period_s"): ("inquisitor", "period_s"),
    ("predictor", "processing_probe_period_s"): ("inquisitor", "processing_probe_period_s"),
    ("predictor", "processing_probe_images"): ("inquisitor", "processing_probe_images"),
    ("predictor", "uplink_check_url"): ("inquisitor", "uplink_check_url"),
    ("predictor", "uplink_check_timeout_s"): ("inquisitor", "uplink_check_timeout_s"),
    ("requester", "objective"): ("policy", "objective"),
    ("requester", "objective_quantile"): ("policy", "objective_quantile"),
    ("controller", "bootstrap_tasks_per_runtime"): ("policy", "bootstrap_tasks_per_runtime"),
    ("share", "min_gain_s"): ("policy", "share_min_gain_s"),
    ("share", "max_cloud_runtimes"): ("policy", "share_max_cloud_runtimes"),
}
"""Settings moved to the section of their reader (old → new), read under their old
names, in a file or the environment, for one release with a warning."""


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where the daemon keeps its state when ``data_dir`` is not set: the directory
    systemd made for the unit (``StateDirectory=``, passed as ``$STATE_DIRECTORY``; the
    first if it lists several), else the XDG state directory (``$XDG_STATE_HOME/stoic``,
    ``~/.local/state/stoic`` when unset or not absolute, as the XDG spec says), else, for
    a user with no home (a container's arbitrary UID), ``/var/lib/stoic``. Never the
    working directory: a daemon started from another directory must find its data."""
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    xdg = env.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "stoic"
    home = env.get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        return Path("/var/lib/stoic")
    return Path(home) / ".local" / "state" / "stoic"


def _env(key: str) -> str:
    return "STOIC_" + key.upper().replace(".", "__")


class Settings(BaseSettings):
    """The root of the tree."""

    model_config = SettingsConfigDict(
        env_prefix="STOIC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(os.environ),
        description="the daemon's state (database, objects, logs); default: systemd's "
        "$STATE_DIRECTORY, else $XDG_STATE_HOME/stoic (~/.local/state/stoic)",
        json_schema_extra={"doc_default": "$STATE_DIRECTORY or $XDG_STATE_HOME/stoic"},
    )
    database: DatabaseSettings = DatabaseSettings()
    objectstore: ObjectStoreSettings = ObjectStoreSettings()
    runtimes: list[RuntimeSettings] = Field(default_factory=default_runtimes, min_length=1)
    predictor: PredictorSettings = PredictorSettings()
    inquisitor: InquisitorSettings = InquisitorSettings()
    policy: PolicySettings = PolicySettings()
    requester: RequesterSettings = RequesterSettings()
    keepalive: KeepAliveSettings = KeepAliveSettings()
    share: ShareSettings = ShareSettings()
    api: ApiSettings = ApiSettings()
    controller: ControllerSettings = ControllerSettings()
    retention: RetentionSettings = RetentionSettings()
    ui: UiSettings = UiSettings()
    log: LogSettings = LogSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    local: LocalBackendSettings = LocalBackendSettings()
    function: FunctionSettings = FunctionSettings()

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        """Move the keys of :data:`MOVED` to their new places (a new key given too
        wins), logging a deprecation warning that names the new key."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for (old_section, old_key), (new_section, new_key) in MOVED.items():
            section = out.get(old_section)
            if not isinstance(section, dict) or old_key not in section:
                continue
            section = dict(section)
            value = section.pop(old_key)
            out[old_section] = section
            target = out.get(new_section, {})
            if isinstance(target, dict):
                out[new_section] = {new_key: value, **target}
            old, new = f"{old_section}.{old_key}", f"{new_section}.{new_key}"
            log.warning(
                f"setting {old} is deprecated and goes in the next release; use {new}",
                old=old,
                new=new,
                old_env=_env(old),
                new_env=_env(new),
            )
        return out

    @model_validator(mode="after")
    def _check_runtimes(self) -> Settings:
        names = [r.name for r in self.runtimes]
        if len(set(names)) != len(names):
            raise ValueError(f"runtime names must be unique, got {names}")
        if sum(r.kind is RuntimeKind.EDGE for r in self.runtimes) > 1:
            raise ValueError("at most one runtime of kind 'edge'")
        dup = self.requester.duplicator_runtime
        if dup != "auto" and dup not in names:
            raise ValueError(
                f"requester.duplicator_runtime: {dup!r} is not a configured runtime "
                f"({names}) nor 'auto'"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive through init kwargs under a private key (see
        # load_settings); split them back out so env vars override the file.
        assert isinstance(init_settings, InitSettingsSource)
        kwargs = dict(init_settings.init_kwargs)
        file_values = kwargs.pop("__file__", None) or {}
        return (
            InitSettingsSource(settings_cls, kwargs),
            env_settings,
            InitSettingsSource(settings_cls, file_values),
        )

    # Derived values ------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'stoic.db'}"

    @property
    def objects_path(self) -> Path:
        return self.objectstore.path or self.data_dir / "objects"

    def runtime_list(self) -> list[Runtime]:
        return [r.to_runtime() for r in self.runtimes]

    def runtime(self, name: str) -> RuntimeSettings:
        for r in self.runtimes:
            if r.name == name:
                return r
        raise ConfigError(
            f"unknown runtime {name!r}; configured: {[r.name for r in self.runtimes]}"
        )


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) settings file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: configuration must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table/mapping")
    return data


SECRET_KEYS = frozenset(
    {"api.token", "database.url", "objectstore.s3_access_key", "objectstore.s3_secret_key"}
)
"""Keys whose bad value is not echoed in an error (a URL carries its password)."""


def format_validation_error(exc: ValidationError, source: str = "settings") -> str:
    """One line per bad key: ``predictor.max_window: Input should be >= 1 (got 0)``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = f" (got {err['input']!r})" if err["type"] != "missing" and "input" in err else ""
        if isinstance(err.get("input"), dict) or key in SECRET_KEYS:
            got = ""
        lines.append(f"{source}: {key}: {err['msg']}{got}")
    return "\n".join(lines)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from an optional file, the environment and overrides.

    Raises :class:`ConfigError` naming every bad key and its allowed range.
    """
    file_values = read_config_file(config) if config is not None else {}
    try:
        return Settings(**{"__file__": file_values, **overrides})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(config or "settings"))) from None
