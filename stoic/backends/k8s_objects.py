"""Pure builders for the Kubernetes objects the cloud backend creates.

Kept apart from :mod:`stoic.backends.kubernetes` so that the shapes can be tested
without an API server (and validated against the Kubernetes schemas and against
:data:`FUNCTION_SCHEMA`), and so that the example manifests in ``deploy/`` and the
objects the controller creates come from one description.

Every object carries the same labels (:func:`labels_for`):

* ``app.kubernetes.io/managed-by=stoic`` — everything stoic made;
* ``stoic.io/controller=<controller_id>`` — which controller owns it, so that two
  controllers can share a namespace and a restarted one can find its orphans;
* ``stoic.io/runtime=<runtime>`` — which runtime (cpu, gpu1, ...);
* ``stoic.io/function=<name>`` — which single deployment; pods inherit it through the
  pod template, so it is the selector of the readiness watch and of the Service.
"""

from __future__ import annotations

import secrets
from typing import Any

from stoic.settings import KubernetesSettings
from stoic.values import Runtime

MANAGED_BY = "app.kubernetes.io/managed-by"
CONTROLLER = "stoic.io/controller"
RUNTIME = "stoic.io/runtime"
FUNCTION = "stoic.io/function"

KUBELESS_GROUP = "kubeless.io"
KUBELESS_VERSION = "v1beta1"
KUBELESS_PLURAL = "functions"

GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "function"

Manifest = dict[str, Any]


def function_name(runtime: Runtime, suffix: str | None = None) -> str:
    """``stoic-<runtime>-<6 hex>``: unique per deployment, so that a probe of the
    inquisitor and a batch can deploy the same runtime at once without a 409."""
    return f"stoic-{runtime.name}-{suffix or secrets.token_hex(3)}"


def owner_labels(settings: KubernetesSettings) -> dict[str, str]:
    """The labels that mark every object of this controller (orphan clean-up)."""
    return {MANAGED_BY: "stoic", CONTROLLER: settings.controller_id}


def labels_for(settings: KubernetesSettings, runtime: Runtime, name: str) -> dict[str, str]:
    return {**owner_labels(settings), RUNTIME: runtime.name, FUNCTION: name}


def selector(labels: dict[str, str]) -> str:
    """A label selector string (``k=v,k=v``) for list and watch calls."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def matches(obj_labels: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    """Client-side check of a selector. The API server applies the selector already;
    checking again costs nothing and keeps us from deleting a stranger's object
    should a server (or an emulator) ignore ``labelSelector``."""
    have = obj_labels or {}
    return all(have.get(k) == v for k, v in wanted.items())


def node_selector(settings: KubernetesSettings, runtime: Runtime) -> dict[str, str]:
    """Global, then GPU-wide (GPU runtimes only), then per-runtime entries."""
    out = dict(settings.node_selector)
    if runtime.gpus:
        out.update(settings.gpu_node_selector)
    out.update(settings.runtime_node_selectors.get(runtime.name, {}))
    return out


def tolerations(settings: KubernetesSettings, runtime: Runtime) -> list[dict[str, Any]]:
    out = [dict(t) for t in settings.tolerations]
    if runtime.gpus:
        out += [dict(t) for t in settings.gpu_tolerations]
    out += [dict(t) for t in settings.runtime_tolerations.get(runtime.name, [])]
    return out


def image_for(settings: KubernetesSettings, runtime: Runtime) -> str:
    return settings.image_gpu if runtime.gpus else settings.image_cpu


TMP_VOLUME = "tmp"


def resources(settings: KubernetesSettings, runtime: Runtime) -> Manifest:
    """Requests and limits of the function container (settings, in every mode), so that
    function pods are never BestEffort (first evicted, noisiest timings). GPU runtimes add
    ``nvidia.com/gpu: N`` as a limit (the device plugin only honours limits)."""
    requests = {
        "cpu": f"{settings.cpu_request_millicores}m",
        "memory": f"{settings.memory_request_mib}Mi",
    }
    limits = {"memory": f"{settings.memory_limit_mib}Mi"}
    if settings.cpu_limit_millicores is not None:
        limits["cpu"] = f"{settings.cpu_limit_millicores}m"
    if runtime.gpus:
        limits[GPU_RESOURCE] = str(runtime.gpus)
    return {"requests": requests, "limits": limits}


def security_context(settings: KubernetesSettings) -> Manifest:
    """The restricted Pod Security Standard, on the container itself: that is where
    Knative accepts every one of these fields (it rejects most pod-level ones by
    default), and the standard accepts either level. The root file system is read-only;
    the function writes only to ``/tmp`` (an emptyDir, see :func:`tmp_volume`)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume(settings: KubernetesSettings) -> Manifest:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": f"{settings.tmp_size_limit_mib}Mi"}}


def probes(settings: KubernetesSettings, *, knative: bool = False) -> Manifest:
    """HTTP probes on the function server. ``/healthz`` answers 503 while TensorFlow
    imports (≈ 3-30 s), so the startup probe holds liveness off for up to
    ``startup_timeout_s``; readiness is what T_d waits for. Knative wants probe ports
    left out (it fills in the serving port and rejects any other)."""
    port: Manifest = {} if knative else {"port": settings.service_port}
    out: Manifest = {}
    if settings.readiness_path:

        def get() -> Manifest:  # a fresh dict per probe (no YAML anchors when dumped)
            return {"httpGet": {"path": settings.readiness_path, **port}}

        out["startupProbe"] = {
            **get(),
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": settings.startup_timeout_s,
        }
        out["readinessProbe"] = {
            **get(),
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        }
    if settings.liveness_path:
        out["livenessProbe"] = {
            "httpGet": {"path": settings.liveness_path, **port},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
        if "startupProbe" not in out:  # nothing else holds liveness off during start-up
            out["livenessProbe"]["initialDelaySeconds"] = settings.startup_timeout_s
    return out


# The keys of the Secret ``kubernetes.store.credentials_secret`` (kubectl create secret
# generic stoic-s3 --from-literal=access_key=... --from-literal=secret_key=...).
ACCESS_KEY = "access_key"
SECRET_KEY = "secret_key"


def store_env(settings: KubernetesSettings) -> list[Manifest]:
    """The environment that points the function's ``load_settings()`` at the cloud
    object store (``kubernetes.store``): an S3 bucket, where the controller uploads each
    package and the model that the request names. The keys come from a Secret by
    reference, so no manifest (nor the controller's log of it) carries them."""
    store = settings.store
    env: list[Manifest] = [{"name": "STOIC_OBJECTSTORE__KIND", "value": "s3"}]
    endpoint = store.pod_endpoint or store.endpoint
    if endpoint:
        env.append({"name": "STOIC_OBJECTSTORE__S3_ENDPOINT", "value": endpoint})
    env += [
        {"name": "STOIC_OBJECTSTORE__S3_BUCKET", "value": store.bucket},
        {"name": "STOIC_OBJECTSTORE__S3_REGION", "value": store.region},
    ]
    if store.credentials_secret:
        for var, key in (("S3_ACCESS_KEY", ACCESS_KEY), ("S3_SECRET_KEY", SECRET_KEY)):
            ref = {"name": store.credentials_secret, "key": key}
            env.append({"name": f"STOIC_OBJECTSTORE__{var}", "valueFrom": {"secretKeyRef": ref}})
    return env


def container(settings: KubernetesSettings, runtime: Runtime, *, knative: bool = False) -> Manifest:
    """The function container: image, port, environment (the object store's included,
    :func:`store_env`), resources, probes and the restricted security context. Knative
    allows one port, named ``http1`` or ``h2c`` or unnamed. ``FUNC_PORT`` is set as
    well as ``STOIC_FUNCTION_PORT`` because the server reads it first and the images
    set it to 8080: without it a non-default ``service_port`` never answered."""
    port = {
        "name": "http1" if knative else "http",
        "containerPort": settings.service_port,
        "protocol": "TCP",
    }
    return {
        "name": CONTAINER_NAME,
        "image": image_for(settings, runtime),
        "ports": [port],
        "env": [
            {"name": "STOIC_FUNCTION_HANDLER", "value": settings.handler},
            {"name": "FUNC_PORT", "value": str(settings.service_port)},
            {"name": "STOIC_FUNCTION_PORT", "value": str(settings.service_port)},
            {"name": "STOIC_RUNTIME", "value": runtime.name},
            *store_env(settings),
        ],
        "resources": resources(settings, runtime),
        **probes(settings, knative=knative),
        "securityContext": security_context(settings),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }


def pod_spec(settings: KubernetesSettings, runtime: Runtime, *, knative: bool = False) -> Manifest:
    """The pod spec of a function. The function never calls the Kubernetes API, so no
    service-account token is mounted. The restricted settings are repeated at pod level
    where the API allows it (not in Knative), for scanners that look there."""
    spec: Manifest = {
        "containers": [container(settings, runtime, knative=knative)],
        "volumes": [tmp_volume(settings)],
        "automountServiceAccountToken": False,
    }
    if not knative:  # Knative rejects a pod-level security context by default
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    ns = node_selector(settings, runtime)
    if ns:
        spec["nodeSelector"] = ns
    tol = tolerations(settings, runtime)
    if tol:
        spec["tolerations"] = tol
    return spec


def pod_template(settings: KubernetesSettings, runtime: Runtime, name: str) -> Manifest:
    return {
        "metadata": {"labels": labels_for(settings, runtime, name)},
        "spec": pod_spec(settings, runtime),
    }


def kubeless_function(settings: KubernetesSettings, runtime: Runtime, name: str) -> Manifest:
    """A ``kubeless.io/v1beta1`` Function whose deployment template carries the image,
    the GPU limit, node selector and tolerations. The image is a complete HTTP server
    (the function engineer's ``stoic.function`` server), so ``function`` is empty and
    ``runtime`` names the custom runtime declared in ``deploy/kubeless/``."""
    labels = labels_for(settings, runtime, name)
    flavour = "gpu" if runtime.gpus else "cpu"
    return top_object(
        f"{KUBELESS_GROUP}/{KUBELESS_VERSION}",
        "Function",
        settings,
        name,
        labels,
        {
            "handler": settings.handler,
            "runtime": f"{settings.kubeless_runtime_id}{flavour}",
            "function": "",
            "function-content-type": "text",
            "deps": "",
            "checksum": "",
            "timeout": str(int(settings.invoke_timeout_s)),
            "deployment": {
                "metadata": {"labels": dict(labels)},
                "spec": {"replicas": 1, "template": pod_template(settings, runtime, name)},
            },
            "service": {
                "type": "ClusterIP",
                "selector": dict(labels),
                "ports": [
                    {
                        "name": "http-function-port",
                        "port": settings.service_port,
                        "protocol": "TCP",
                        "targetPort": settings.service_port,
                    }
                ],
            },
        },
    )


def top_object(
    api_version: str,
    kind: str,
    settings: KubernetesSettings,
    name: str,
    labels: dict[str, str],
    spec: Manifest,
) -> Manifest:
    """An object of ours in the namespace, as every mode writes it: named, labelled
    (so that clean-up finds it by :func:`owner_labels`), and its ``spec``."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": spec,
    }


def deployment(settings: KubernetesSettings, runtime: Runtime, name: str) -> Manifest:
    """``deployment`` mode: what kubeless would have made, made directly."""
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": {FUNCTION: name}},
        "template": pod_template(settings, runtime, name),
    }
    return top_object(
        "apps/v1", "Deployment", settings, name, labels_for(settings, runtime, name), spec
    )


def service(settings: KubernetesSettings, runtime: Runtime, name: str) -> Manifest:
    port = {
        "name": "http",
        "port": settings.service_port,
        "targetPort": settings.service_port,
        "protocol": "TCP",
    }
    spec = {"type": "ClusterIP", "selector": {FUNCTION: name}, "ports": [port]}
    return top_object("v1", "Service", settings, name, labels_for(settings, runtime, name), spec)


def pod_ready(pod: Manifest) -> bool:
    """Ready as the kubelet reports it: ``status.conditions[type=Ready].status=True``
    and not being deleted. The same check works on a real cluster and on the
    emulator, where the test plays the kubelet by writing that condition."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


# Reasons a container waits in that no amount of waiting will fix.
FATAL_WAITING_REASONS = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"}
)


def pod_failure(pod: Manifest) -> str | None:
    """Why a pod will never become Ready, or None while there is hope."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"pod failed: {status.get('reason') or status.get('message') or 'unknown'}"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING_REASONS:
            return f"container {cs.get('name')}: {waiting['reason']}: {waiting.get('message', '')}"
    return None


# A JSON schema of the kubeless Function, written from kubeless's Go type
# (pkg/apis/kubeless/v1beta1/function.go: FunctionSpec). kubernetes-validate has no
# schema for this CRD and kubeless's own CRD declares none, so the tests validate the
# Functions in deploy/ and the ones built above against this.
STR_MAP: Manifest = {"type": "object", "additionalProperties": {"type": "string"}}


def object_schema(
    api_version: str, kind: str, *, name_pattern: str, labels: Manifest, spec: Manifest
) -> Manifest:
    """The JSON schema of an object that :func:`top_object` writes: ``apiVersion`` and
    ``kind`` fixed, the metadata it may carry, and the kind's own ``spec``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": name_pattern},
                    "namespace": {"type": "string"},
                    "labels": labels,
                    "annotations": STR_MAP,
                },
            },
            "spec": spec,
        },
    }


FUNCTION_SCHEMA = object_schema(
    f"{KUBELESS_GROUP}/{KUBELESS_VERSION}",
    "Function",
    name_pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    labels=STR_MAP,
    spec={
        "type": "object",
        "required": ["handler", "runtime", "deployment"],
        "additionalProperties": False,
        "properties": {
            "handler": {"type": "string", "minLength": 1},
            "function": {"type": "string"},
            "function-content-type": {
                "enum": ["text", "base64", "url", "zip", "text+base64", "zip+base64"]
            },
            "checksum": {"type": "string"},
            "runtime": {"type": "string", "minLength": 1},
            "timeout": {"type": "string", "pattern": r"^[0-9]+$"},
            "deps": {"type": "string"},
            # Merged by kubeless into its Deployment: validated as apps/v1 pieces
            # separately (see tests/test_manifests.py).
            "deployment": {"type": "object"},
            "service": {"type": "object"},
            "horizontalPodAutoscaler": {"type": "object"},
        },
    },
)
