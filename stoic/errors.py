"""Every error stoic raises on purpose, as one hierarchy (after httpx's ``_exceptions``).

Callers catch the narrowest class that they can act on; the CLI and the REST API map
each class to an exit code or an HTTP status in one place each. Messages always name
the thing at fault (a key, a file and line, a runtime, an object) so that a user can
fix it without reading a traceback.

    StoicError
    ├── ConfigError                 bad settings or spec file (names the key)
    │   └── MissingExtra            a feature needs an optional extra (names it)
    ├── DataDirInUse                another daemon holds the data directory (names its pid)
    ├── LeaseHeld                   another daemon holds the database or the object store
    ├── ActionRefused               an operator action the daemon's state does not allow
    ├── InputError                  bad user input (names the file/field)
    │   ├── CsvFormatError          malformed CSV (file, line, column)
    │   ├── WorkloadError           bad workload/count file
    │   ├── EnvSpecError            bad simulated-environment spec
    │   ├── FitDataError            measurements too few or unusable to fit a spec from
    │   └── IngestError             a rejected upload (HTTP status, code, file/field)
    │       ├── EmptyBatch          no image in the upload (400)
    │       ├── UnsafeArchivePath   archive member outside its root (400)
    │       ├── BatchTooLarge       over a configured size limit (413)
    │       ├── NotAnImage          a file that is no supported image (415)
    │       ├── CorruptImage        a truncated or undecodable image (422)
    │       ├── TooManyInvalid      more invalid images than api.max_invalid_images (422)
    │       ├── InvalidField        a bad form field or parameter (422)
    │       ├── IdempotencyConflict a known Idempotency-Key with another request (409)
    │       ├── InsufficientStorage a disk the upload needs is full (507, names the disk)
    │       └── RequestAborted      the client stalled or left mid-request
    │           ├── RequestTimeout  no byte of the body within api.body_timeout_s (408)
    │           └── ClientDisconnected  the client closed the connection (499)
    ├── StoreError                  database problems
    │   ├── BatchNotFound           no batch with this id
    │   ├── BatchStateError         illegal batch state transition (names both states)
    │   └── RuntimeNotFound         no runtime row with this name
    ├── ObjectStoreError
    │   ├── ObjectNotFound          missing key in the object store
    │   │   └── PackageGone         a batch's package is no longer stored (cannot retry)
    │   ├── StorageFull             no space left under the store's root (names it)
    │   └── InvalidObjectKey        malformed key (absolute, ``..``); also an InputError
    ├── PredictorError
    ├── FunctionError               the serverless function failed
    │   └── ModelNotFound           model key missing
    ├── BackendError                a runtime backend failed (names the runtime)
    │   ├── DeployError
    │   │   ├── DeployTimeout       not ready within the deployment timeout
    │   │   ├── DeployAbandoned     not ready by the batch's deploy deadline; torn down
    │   │   ├── DeployFailure       deployment refused or crashed
    │   │   └── RetriesExhausted    back-off gave up after N attempts
    │   ├── InvocationError         the function call failed
    │   ├── RuntimeUnavailable      the runtime is marked unavailable
    │   └── KubernetesApiError      the API server answered with an error (names object)
    └── ServerError                 the daemon answered a REST client with an error
"""

from __future__ import annotations


class StoicError(Exception):
    """Base class of every error stoic raises on purpose."""


class ConfigError(StoicError):
    """A setting or configuration file is invalid; the message names the key."""


class MissingExtra(ConfigError):
    """A feature needs an optional dependency group that is not installed.

    The message names the feature and the command that installs it, e.g.
    ``stoic model push needs the 'function' extra: pip install 'stoic[function]'``.
    Raised through :func:`stoic.extras.require` and :func:`stoic.extras.needs`.
    """

    def __init__(self, extra: str, feature: str, module: str | None = None) -> None:
        self.extra, self.feature, self.module = extra, feature, module
        what = f" (no module {module!r})" if module else ""
        super().__init__(f"{feature} needs the '{extra}' extra{what}: pip install 'stoic[{extra}]'")


class DataDirInUse(StoicError):
    """Another daemon holds the data directory's lock (``data_dir/stoic.lock``)."""

    def __init__(self, data_dir: str, holder: str | None) -> None:
        self.data_dir, self.holder = data_dir, holder
        who = holder or "a process that has not written its pid yet"
        super().__init__(
            f"data dir {data_dir} is in use by another stoic daemon ({who}); "
            "stop that daemon first or pass another --data-dir"
        )


class LeaseHeld(StoicError):
    """Another daemon holds the lease of the database or the marker of the object store
    (:mod:`stoic.daemon.lease`): two daemons on one database would each run the
    other's batches. The message names the holder (pid, host, data directory)."""

    def __init__(self, what: str, holder: str) -> None:
        self.what, self.holder = what, holder
        super().__init__(
            f"{what} is in use by another stoic daemon ({holder}); stop that daemon "
            "first, or give this one its own database.url and objectstore.path"
        )


class ActionRefused(StoicError):
    """An operator action that the daemon's state does not allow (taking the edge out of
    service, cancelling a batch whose result is being recorded); says why."""


class InputError(StoicError):
    """User input is invalid; the message names the file or field."""


class CsvFormatError(InputError):
    """A CSV file is malformed."""

    def __init__(self, path: str, line: int, column: str | None, problem: str) -> None:
        self.path, self.line, self.column, self.problem = path, line, column, problem
        where = f"{path}:{line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")


class WorkloadError(InputError):
    """A workload profile or count file is invalid."""


class EnvSpecError(InputError):
    """A simulated-environment spec is invalid; the message names the key."""


class FitDataError(InputError):
    """The measurements given to ``stoic env fit`` cannot make a spec (an empty store,
    a runtime with too few samples and no prior); the message names the source."""


class IngestError(InputError):
    """An upload was rejected. ``status`` is the HTTP status the API answers, ``code`` a
    stable machine-readable name, and ``file`` or ``field`` what is at fault."""

    status = 400
    code = "bad_input"

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file, self.field = file, field
        super().__init__(message)


class EmptyBatch(IngestError):
    """The upload held no image."""

    code = "empty_batch"


class UnsafeArchivePath(IngestError):
    """An archive member's path is absolute, contains ``..`` or is a link."""

    code = "unsafe_path"


class BatchTooLarge(IngestError):
    """The batch (or one image) is over a configured size limit."""

    status = 413
    code = "too_large"


class NotAnImage(IngestError):
    """A file is not an image of a supported format."""

    status = 415
    code = "not_an_image"


class CorruptImage(IngestError):
    """An image is truncated or cannot be decoded."""

    status = 422
    code = "corrupt_image"


class TooManyInvalid(IngestError):
    """With ``skip_invalid``, more images were invalid than ``api.max_invalid_images``:
    validating junk costs CPU, so its amount is bounded too."""

    status = 422
    code = "too_many_invalid"


class InvalidField(IngestError):
    """A form field or query parameter has a bad value (unknown runtime or mode)."""

    status = 422
    code = "invalid_field"


class IdempotencyConflict(IngestError):
    """An ``Idempotency-Key`` already used for a batch came with a different request
    (other files or options): answering with the old batch would silently drop the new
    one, so the API answers 409 instead."""

    status = 409
    code = "idempotency_key_reused"


class InsufficientStorage(IngestError):
    """A disk the upload must be written to is full, or below its free-space floor
    (``objectstore.min_free_bytes``). ``disk`` names which one ("object store",
    "data directory", "database"); the message says so without its path, which the
    daemon logs. Retry once space is freed (the answer carries ``Retry-After``)."""

    status = 507
    code = "insufficient_storage"
    retry_after_s = 60

    def __init__(self, disk: str, detail: str) -> None:
        self.disk = disk
        super().__init__(
            f"not enough space on the disk of the {disk} ({detail}); the upload was not "
            "stored: retry once space is freed"
        )


class RequestAborted(IngestError):
    """The client stalled or went away before its request was complete."""

    status = 400
    code = "request_aborted"


class RequestTimeout(RequestAborted):
    """No byte of the request body arrived within ``api.body_timeout_s``."""

    status = 408
    code = "request_timeout"


class ClientDisconnected(RequestAborted):
    """The client closed the connection mid-request; nobody reads the answer (499, as
    nginx logs it)."""

    status = 499
    code = "client_disconnected"


class StoreError(StoicError):
    """The database could not do what was asked."""


class BatchNotFound(StoreError):
    """No batch with this id."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch not found: {batch_id!r}")


class BatchStateError(StoreError):
    """A batch cannot make this transition from its current state (e.g. finish twice)."""

    def __init__(self, batch_id: str, state: str, wanted: str, allowed: tuple[str, ...]) -> None:
        self.batch_id, self.state, self.wanted, self.allowed = batch_id, state, wanted, allowed
        super().__init__(
            f"batch {batch_id!r} is {state!r}; cannot {wanted} (needs state "
            + " or ".join(repr(a) for a in allowed)
            + ")"
        )


class RuntimeNotFound(StoreError):
    """No runtime row with this name (``upsert_runtimes`` was not told of it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"runtime not found in the store: {name!r}")


class ObjectStoreError(StoicError):
    """The object store could not do what was asked."""


class ObjectNotFound(ObjectStoreError):
    """No object under this key."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"object not found: {key!r}" + (f" in {where}" if where else ""))


class PackageGone(ObjectNotFound):
    """A batch's package is no longer in the object store (retention deleted it), so the
    batch cannot run again; the images must be submitted anew."""

    def __init__(self, batch_id: str, key: str) -> None:
        self.batch_id = batch_id
        ObjectStoreError.__init__(
            self,
            f"batch {batch_id!r} cannot be retried: its package {key!r} is no longer "
            "stored; submit its images again",
        )
        self.key = key


class StorageFull(ObjectStoreError):
    """A write found no space left (``ENOSPC``, or ``EDQUOT``: over a quota) under the
    object store's root; ``root`` names it. Nothing of the object is left behind."""

    def __init__(self, root: str, key: str, reason: str) -> None:
        self.root, self.key = root, key
        super().__init__(f"{root}: no space left to store {key!r} ({reason})")


class InvalidObjectKey(ObjectStoreError, InputError):
    """An object key is malformed (absolute, ``..``, empty segment); names the key.

    Also an :class:`InputError`, so the REST API answers 400 for a key from a request.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"invalid object key {key!r}: {problem}")


class PredictorError(StoicError):
    """The predictor was asked something it cannot answer (e.g. an unknown runtime)."""


class FunctionError(StoicError):
    """The serverless function failed."""


class ModelNotFound(FunctionError):
    """The model named in a request is not in the object store."""

    def __init__(self, key: str, hint: str | None = None) -> None:
        self.key = key
        super().__init__(f"model not found: {key!r}" + (f"; {hint}" if hint else ""))


class BackendError(StoicError):
    """A runtime backend failed; ``runtime`` names the runtime."""

    def __init__(self, runtime: str, message: str) -> None:
        self.runtime = runtime
        super().__init__(f"{runtime}: {message}")


class DeployError(BackendError):
    """Deployment of a runtime did not produce a ready function."""


class DeployTimeout(DeployError):
    """The runtime was not ready within ``timeout_s``."""

    def __init__(self, runtime: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(runtime, f"deployment not ready after {timeout_s:g} s")


class DeployAbandoned(DeployError):
    """The batch gave up on the deployment at its deploy deadline (``deadline_s``, from
    the start of the deployment) and the backend tore it down: the batch falls back. Not
    a timeout: the runtime stays available."""

    def __init__(self, runtime: str, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        super().__init__(runtime, f"deployment abandoned at its deadline of {deadline_s:g} s")


class DeployFailure(DeployError):
    """The deployment was refused or crashed."""


class RetriesExhausted(DeployError):
    """Deployment kept failing; the back-off gave up."""

    def __init__(self, runtime: str, attempts: int, last: BaseException | None) -> None:
        self.attempts, self.last = attempts, last
        super().__init__(runtime, f"deployment failed {attempts} times; last error: {last}")


class InvocationError(BackendError):
    """The function was deployed but the call failed."""


class RuntimeUnavailable(BackendError):
    """The runtime is marked unavailable (its last probe timed out)."""


class KubernetesApiError(BackendError):
    """The Kubernetes API server refused a request; names the object and status."""

    def __init__(self, runtime: str, obj: str, status: int, reason: str) -> None:
        self.obj, self.status, self.reason = obj, status, reason
        super().__init__(runtime, f"Kubernetes API error {status} on {obj}: {reason}")


class ServerError(StoicError):
    """The daemon answered a client (``stoic submit``/``status``) with an error, or could
    not be reached; its JSON error body is in the message. ``status`` is the HTTP status
    (None: no answer), ``code`` and ``file`` the error body's, so a client can tell "this
    file was refused" (4xx, nothing stored) from "try again" (no answer, 5xx)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        file: str | None = None,
    ) -> None:
        self.status, self.code, self.file = status, code, file
        super().__init__(message)
