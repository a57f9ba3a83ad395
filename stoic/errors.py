"""Every error stoic raises on purpose, as one hierarchy (after httpx's ``_exceptions``).

Callers catch the narrowest class that they can act on; the CLI and the REST API map
each class to an exit code or an HTTP status in one place each. Messages always name
the thing at fault (a key, a file and line, a runtime, an object) so that a user can
fix it without reading a traceback.

    StoicError
    ├── ConfigError                 bad settings or spec file (names the key)
    ├── InputError                  bad user input (names the file/field)
    │   ├── CsvFormatError          malformed CSV (file, line, column)
    │   ├── WorkloadError           bad workload/count file
    │   └── EnvSpecError            bad simulated-environment spec
    ├── StoreError                  database problems
    ├── ObjectStoreError
    │   └── ObjectNotFound          missing key in the object store
    ├── PredictorError
    ├── FunctionError               the serverless function failed
    │   └── ModelNotFound           model key missing
    └── BackendError                a runtime backend failed (names the runtime)
        ├── DeployError
        │   ├── DeployTimeout       not ready within the deployment timeout
        │   └── DeployFailure       deployment refused or crashed
        ├── RetriesExhausted        back-off gave up after N attempts
        ├── InvocationError         the function call failed
        ├── RuntimeUnavailable      the runtime is marked unavailable
        └── KubernetesApiError      the API server answered with an error (names object)
"""

from __future__ import annotations


class StoicError(Exception):
    """Base class of every error stoic raises on purpose."""


class ConfigError(StoicError):
    """A setting or configuration file is invalid; the message names the key."""


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


class StoreError(StoicError):
    """The database could not do what was asked."""


class ObjectStoreError(StoicError):
    """The object store could not do what was asked."""


class ObjectNotFound(ObjectStoreError):
    """No object under this key."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"object not found: {key!r}" + (f" in {where}" if where else ""))


class PredictorError(StoicError):
    """The predictor was asked something it cannot answer (e.g. an unknown runtime)."""


class FunctionError(StoicError):
    """The serverless function failed."""


class ModelNotFound(FunctionError):
    """The model named in a request is not in the object store."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"model not found: {key!r}")


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
