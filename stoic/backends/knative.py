"""Knative Serving objects for the cloud backend's ``mode = "knative"``.

What people run for serverless on Kubernetes today is Knative Serving: a
``serving.knative.dev/v1`` Service stamps out a Revision (a Deployment of the function
with Knative's ``queue-proxy`` beside it), routes to it, scales it between
``min-scale`` and ``max-scale``, and reports readiness as conditions. One stoic
deployment is one Knative Service; its ``Ready`` condition turns ``True`` only once
the latest Revision is Ready (its pod passed the readiness probe) *and* the route
serves it, so that is where T_d ends (:func:`service_ready`).

Why these settings (``kubernetes.knative_*``):

* ``min-scale = max-scale = 1`` by default: stoic deploys, invokes and tears down
  explicitly and measures T_d itself, so Knative must neither scale the function to
  zero between deploy and invoke nor add pods the scheduler does not know about.
* ``containerConcurrency = 1``: the function serves one request at a time (a lock in
  ``stoic.function.server``); queue-proxy then queues extra requests instead of
  overloading the pod.
* ``timeoutSeconds``: the longest request; Knative rejects values above the cluster's
  ``max-revision-timeout-seconds`` (600 s unless the admin raised it).
* ``networking.knative.dev/visibility=cluster-local``: no public route by default.

Knative's admission webhook accepts only a subset of the pod spec (its "field masks"):
ports named ``http1``/``h2c`` or unnamed, probe ports left out, the security context
on the container, ``nodeSelector`` and ``tolerations`` only where the cluster enables
``kubernetes.podspec-nodeselector`` / ``kubernetes.podspec-tolerations``
(``deploy/knative/config-features.yaml``). :data:`SERVICE_SCHEMA` encodes that subset
for the tests, as ``k8s_objects.FUNCTION_SCHEMA`` does for kubeless: kubernetes-validate
has no schema for Knative's CRDs.
"""

from __future__ import annotations

from typing import Any

from stoic.backends import k8s_objects as objs
from stoic.settings import KubernetesSettings
from stoic.values import Runtime

GROUP = "serving.knative.dev"
VERSION = "v1"
PLURAL = "services"
VISIBILITY = "networking.knative.dev/visibility"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
# The ports of a Revision's private Kubernetes Service (``<revision>-private``): port 80
# goes straight to the pods' queue-proxy, never through the activator, which needs
# the ingress's routing headers.
PRIVATE_SERVICE_PORT = 80

Manifest = dict[str, Any]


def service(settings: KubernetesSettings, runtime: Runtime, name: str) -> Manifest:
    """A ``serving.knative.dev/v1`` Service running the function image. Its template
    labels (ours) reach the Revision and its pods, so the pod clean-up of the other
    modes works unchanged."""
    labels = objs.labels_for(settings, runtime, name)
    meta_labels = dict(labels)
    if settings.knative_cluster_local:
        meta_labels[VISIBILITY] = "cluster-local"
    spec = objs.pod_spec(settings, runtime, knative=True)
    spec["containerConcurrency"] = settings.knative_container_concurrency
    spec["timeoutSeconds"] = settings.knative_timeout_s
    return objs.top_object(
        f"{GROUP}/{VERSION}",
        "Service",
        settings,
        name,
        meta_labels,
        {
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": {
                        MIN_SCALE: str(settings.knative_min_scale),
                        MAX_SCALE: str(settings.knative_max_scale),
                    },
                },
                "spec": spec,
            }
        },
    )


def _ready_condition(svc: Manifest) -> Manifest | None:
    for cond in (svc.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def _observed(svc: Manifest) -> bool:
    """The status describes the current spec (``observedGeneration`` caught up)."""
    gen = (svc.get("metadata") or {}).get("generation")
    seen = (svc.get("status") or {}).get("observedGeneration")
    return gen is None or seen is None or int(seen) >= int(gen)


def service_ready(svc: Manifest) -> bool:
    """Ready as Knative reports it: ``status.conditions[type=Ready].status=True`` for
    the current generation, with a ready revision and an address to call."""
    if (svc.get("metadata") or {}).get("deletionTimestamp"):
        return False
    cond = _ready_condition(svc)
    status = svc.get("status") or {}
    return bool(
        cond is not None
        and cond.get("status") == "True"
        and _observed(svc)
        and status.get("latestReadyRevisionName")
        and ((status.get("address") or {}).get("url") or status.get("url"))
    )


def service_failure(svc: Manifest) -> str | None:
    """Why the Service is not coming up (``Ready=False``: e.g. ``RevisionFailed``,
    ``ProgressDeadlineExceeded``, an image that cannot be pulled), or None. Knative can
    report ``False`` briefly while it reconciles, so the backend waits
    ``knative_ready_false_grace_s`` before believing it (as ``kn``'s wait window)."""
    cond = _ready_condition(svc)
    if cond is None or cond.get("status") != "False" or not _observed(svc):
        return None
    return f"Ready=False: {cond.get('reason') or 'unknown'}: {cond.get('message') or ''}".rstrip(
        ": "
    )


def endpoint(settings: KubernetesSettings, api_host: str, svc: Manifest) -> str:
    """Where to POST: by DNS, the Service's own address (``status.address.url``,
    through Knative's ingress); through the API server's service proxy, the ready
    Revision's private Service, whose port 80 is the pods' queue-proxy."""
    status = svc.get("status") or {}
    if settings.invoke_via == "dns":
        url = str((status.get("address") or {}).get("url") or status["url"])
        return url.rstrip("/") + "/"
    revision = status["latestReadyRevisionName"]
    return (
        f"{api_host.rstrip('/')}/api/v1/namespaces/{settings.namespace}/services/"
        f"{revision}-private:{PRIVATE_SERVICE_PORT}/proxy/"
    )


# ----------------------------------------------------------------------------- schema
# A JSON schema of the Knative Service subset stoic emits, written from Knative
# Serving's API (pkg/apis/serving/v1 types, and the admission webhook's field masks and
# checks in pkg/apis/serving/fieldmask.go and k8s_validation.go): every field Knative
# lets through by default, nothing else. The pod spec inside is validated separately as
# a Kubernetes PodSpec with kubernetes-validate (see tests/test_manifests.py), as the
# kubeless Function's template is.

_STR_MAP = objs.STR_MAP
_NAME = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
_COUNT = {"type": "string", "pattern": r"^[0-9]+$"}

_HTTP_GET = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string"},
        "port": {"type": ["integer", "string"]},
        "host": {"type": "string"},
        "scheme": {"enum": ["HTTP", "HTTPS"]},
        "httpHeaders": {"type": "array"},
    },
}
_PROBE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "httpGet": _HTTP_GET,
        "tcpSocket": {"type": "object"},
        "exec": {"type": "object"},
        "grpc": {"type": "object"},
        "initialDelaySeconds": {"type": "integer", "minimum": 0},
        "timeoutSeconds": {"type": "integer", "minimum": 0},
        "periodSeconds": {"type": "integer", "minimum": 0},
        "successThreshold": {"type": "integer", "minimum": 0},
        "failureThreshold": {"type": "integer", "minimum": 0},
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
    },
}
_SECURITY_CONTEXT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "capabilities": {"type": "object"},
        "readOnlyRootFilesystem": {"type": "boolean"},
        "runAsUser": {"type": "integer"},
        "runAsGroup": {"type": "integer"},
        "runAsNonRoot": {"type": "boolean"},
        "allowPrivilegeEscalation": {"type": "boolean"},
        "seccompProfile": {"type": "object"},
        "privileged": {"const": False},
    },
}
_CONTAINER = {
    "type": "object",
    "required": ["image"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "not": {"const": "queue-proxy"}},
        "image": {"type": "string", "minLength": 1},
        "args": {"type": "array", "items": {"type": "string"}},
        "command": {"type": "array", "items": {"type": "string"}},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {
                        "not": {"enum": ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"]}
                    }
                },
            },
        },
        "envFrom": {"type": "array"},
        "workingDir": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "ports": {
            "type": "array",
            "maxItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "name": {"enum": ["", "http1", "h2c"]},
                    "containerPort": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 65_535,
                        "not": {"enum": [8008, 8012, 8013, 8022, 9090, 9091]},
                    },
                    "protocol": {"const": "TCP"},
                },
            },
        },
        # Knative fills the probe port in itself and rejects any other.
        "readinessProbe": _PROBE,
        "livenessProbe": _PROBE,
        "startupProbe": _PROBE,
        "resources": {"type": "object"},
        "securityContext": _SECURITY_CONTEXT,
        "terminationMessagePath": {"type": "string"},
        "terminationMessagePolicy": {"type": "string"},
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "mountPath"],
                "properties": {
                    "name": {"type": "string"},
                    "mountPath": {"type": "string"},
                    "readOnly": {"type": "boolean"},
                    "subPath": {"type": "string"},
                },
            },
        },
    },
}
_VOLUME = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "minProperties": 2,
    "maxProperties": 2,
    "properties": {
        "name": {"type": "string"},
        "emptyDir": {"type": "object"},  # kubernetes.podspec-volumes-emptydir: on by default
        "configMap": {"type": "object"},
        "secret": {"type": "object"},
        "projected": {"type": "object"},
    },
}
SERVICE_SCHEMA = objs.object_schema(
    f"{GROUP}/{VERSION}",
    "Service",
    name_pattern=_NAME,
    labels={**_STR_MAP, "properties": {VISIBILITY: {"const": "cluster-local"}}},
    spec={
        "type": "object",
        "required": ["template"],
        "additionalProperties": False,
        "properties": {
            "template": {
                "type": "object",
                "required": ["spec"],
                "additionalProperties": False,
                "properties": {
                    "metadata": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "labels": _STR_MAP,
                            "annotations": {
                                **_STR_MAP,
                                "properties": {MIN_SCALE: _COUNT, MAX_SCALE: _COUNT},
                            },
                        },
                    },
                    "spec": {
                        "type": "object",
                        "required": ["containers"],
                        "additionalProperties": False,
                        "properties": {
                            "containers": {
                                "type": "array",
                                "minItems": 1,
                                "items": _CONTAINER,
                            },
                            "volumes": {"type": "array", "items": _VOLUME},
                            "serviceAccountName": {"type": "string"},
                            "imagePullSecrets": {"type": "array"},
                            "enableServiceLinks": {"type": "boolean"},
                            # Knative only lets this be set to false.
                            "automountServiceAccountToken": {"const": False},
                            # Behind kubernetes.podspec-nodeselector / -tolerations.
                            "nodeSelector": _STR_MAP,
                            "tolerations": {"type": "array", "items": {"type": "object"}},
                            "containerConcurrency": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 1000,
                            },
                            "timeoutSeconds": {"type": "integer", "minimum": 0},
                            "responseStartTimeoutSeconds": {"type": "integer", "minimum": 0},
                            "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
            "traffic": {"type": "array"},
        },
    },
)

# RevisionSpec fields that are not PodSpec fields.
REVISION_ONLY_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)


def as_pod_spec(revision_spec: Manifest) -> Manifest:
    """The Kubernetes PodSpec Knative makes of a revision template's spec, as far as the
    schema checks care: the revision-only fields dropped and each probe's port filled in
    with the serving port (Knative's defaulting). For validating with Kubernetes'
    schemas."""
    spec = {k: v for k, v in revision_spec.items() if k not in REVISION_ONLY_FIELDS}
    containers = []
    for c in spec.get("containers") or []:
        c = dict(c)
        port = ((c.get("ports") or [{}])[0]).get("containerPort", 8080)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c and "httpGet" in c[probe]:
                c[probe] = {**c[probe], "httpGet": {"port": port, **c[probe]["httpGet"]}}
        containers.append(c)
    spec["containers"] = containers
    return spec
