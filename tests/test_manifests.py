"""Every manifest in ``deploy/`` is valid, and agrees with the code that uses it.

Kubernetes objects are validated offline with ``kubernetes-validate`` (strict: unknown
fields fail). The custom resources have no schema there: kubeless Functions are
validated against :data:`stoic.backends.k8s_objects.FUNCTION_SCHEMA` (written from
kubeless's ``FunctionSpec``) and their deployment template as an ``apps/v1``
Deployment; Knative Services against :data:`stoic.backends.knative.SERVICE_SCHEMA`
(written from Knative Serving's API and webhook rules) and their revision template as a
Kubernetes PodSpec; the optional ServiceMonitor against a small schema below.
Kustomizations are checked for their structure, and rendered with ``kubectl kustomize``
where kubectl is installed.

Every pod the project creates or ships is checked against the restricted Pod Security
Standard (:func:`restricted_violations`), and function pods for requests and limits.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stoic.backends import k8s_objects as objs
from stoic.backends import knative
from stoic.errors import ConfigError
from stoic.settings import KubernetesSettings, check_listener, load_settings
from stoic.values import Runtime, RuntimeKind
from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
K8S_VERSIONS = ["1.27.0", "1.30.0", "1.33.0"]
RUNTIMES = [
    Runtime("cpu", RuntimeKind.CPU, 0, "kubernetes"),
    Runtime("gpu1", RuntimeKind.GPU, 1, "kubernetes"),
    Runtime("gpu2", RuntimeKind.GPU, 2, "kubernetes"),
]
# Prometheus alert rules, not a Kubernetes object: tests/test_monitoring.py checks them.
RULES = DEPLOY / "monitoring" / "alerts.yaml"
FILES = sorted(p for p in DEPLOY.rglob("*.yaml") if p != RULES)
CLOUD = {"key": "cloud", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}


def cloud_settings(**options: Any) -> KubernetesSettings:
    """Settings whose function pods tolerate the cloud nodes' taint."""
    return KubernetesSettings(tolerations=[CLOUD], **options)


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in FILES for d in docs(p)]


def find(kind: str, name: str) -> dict[str, Any]:
    hits = [
        d for _, d in all_docs() if d["kind"] == kind and d.get("metadata", {}).get("name") == name
    ]
    assert len(hits) == 1, (kind, name, len(hits))
    return hits[0]


def validate_as(kind: str, api_version: str, metadata: Any, spec: Any, version: str) -> None:
    """Validate what a custom resource becomes in the cluster, as that built-in kind."""
    built = {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}
    kubernetes_validate.validate(built, version, strict=True)


def validate_function(fn: dict[str, Any], version: str) -> None:
    jsonschema.Draft202012Validator(objs.FUNCTION_SCHEMA).validate(fn)
    name, template = fn["metadata"]["name"], fn["spec"]["deployment"]
    metadata = {"name": name, **template.get("metadata", {})}
    spec = {**template["spec"], "selector": {"matchLabels": fn["metadata"]["labels"]}}
    validate_as("Deployment", "apps/v1", metadata, spec, version)
    # What kubeless makes of spec.service: a Service with these fields.
    validate_as("Service", "v1", {"name": name}, fn["spec"]["service"], version)


def validate_knative(svc: dict[str, Any], version: str) -> None:
    jsonschema.Draft202012Validator(knative.SERVICE_SCHEMA).validate(svc)
    template = svc["spec"]["template"]
    pod = {"metadata": template["metadata"], "spec": knative.as_pod_spec(template["spec"])}
    spec = {"selector": {"matchLabels": template["metadata"]["labels"]}, "template": pod}
    validate_as("Deployment", "apps/v1", {"name": svc["metadata"]["name"]}, spec, version)


# The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) that
# deploy/monitoring/ uses, from the operator's API reference.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                        "any": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^[0-9]+(ms|s|m|h)$",
                            },
                            "authorization": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}


def validate_any(doc: dict[str, Any], version: str, where: str) -> None:
    if doc["kind"] == "Kustomization":
        assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1", where
        assert set(doc) <= {"apiVersion", "kind", "resources", "images", "secretGenerator"}, where
    elif doc["apiVersion"].startswith("kubeless.io/"):
        validate_function(doc, version)
    elif doc["apiVersion"].startswith("serving.knative.dev/"):
        validate_knative(doc, version)
    elif doc["apiVersion"].startswith("monitoring.coreos.com/"):
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def test_deploy_has_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in FILES}
    assert names == {
        "kustomization.yaml",
        "namespace.yaml",
        "rbac.yaml",
        "controller.yaml",
        "networkpolicy.yaml",
        "database-secret.example.yaml",
        "s3-secret.example.yaml",
        "kubeless/kubeless-config.yaml",
        "functions/kustomization.yaml",
        "functions/function-cpu.yaml",
        "functions/function-gpu1.yaml",
        "functions/function-gpu2.yaml",
        "deployments/kustomization.yaml",
        "deployments/function-cpu.yaml",
        "deployments/function-gpu1.yaml",
        "deployments/function-gpu2.yaml",
        "knative/kustomization.yaml",
        "knative/config-features.yaml",
        "knative/service-cpu.yaml",
        "knative/service-gpu1.yaml",
        "knative/service-gpu2.yaml",
        "monitoring/servicemonitor.yaml",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_validates(path: Path, version: str) -> None:
    found = docs(path)
    assert found, f"{path} is empty"
    for i, doc in enumerate(found):
        validate_any(doc, version, f"{path}#{i}")


def test_schema_catches_a_broken_function() -> None:
    """The Function schema is not vacuous: typos and wrong types fail."""
    fn = docs(DEPLOY / "functions" / "function-gpu1.yaml")[0]
    validator = jsonschema.Draft202012Validator(objs.FUNCTION_SCHEMA)
    for broken in (
        {**fn, "spec": {**fn["spec"], "handlr": "x"}},
        {**fn, "spec": {**fn["spec"], "timeout": 900}},
        {**fn, "apiVersion": "kubeless.io/v1"},
        {k: v for k, v in fn.items() if k != "spec"},
    ):
        assert list(validator.iter_errors(broken))
    bad_template = json.loads(json.dumps(fn))
    bad_template["spec"]["deployment"]["spec"]["template"]["spec"]["containers"][0]["imagePull"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_function(bad_template, "1.30.0")


def test_schema_catches_a_broken_knative_service() -> None:
    """The Knative schema is not vacuous: what Knative's webhook rejects fails here."""
    svc = docs(DEPLOY / "knative" / "service-gpu1.yaml")[0]
    validator = jsonschema.Draft202012Validator(knative.SERVICE_SCHEMA)
    assert not list(validator.iter_errors(svc))

    def broken(change: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(svc))
        change(copy)
        return copy

    spec = lambda d: d["spec"]["template"]["spec"]  # noqa: E731
    box = lambda d: spec(d)["containers"][0]  # noqa: E731
    for bad in (
        broken(lambda d: box(d)["ports"][0].update(name="http")),  # only http1/h2c
        broken(lambda d: box(d)["ports"][0].update(containerPort=8012)),  # queue-proxy's
        broken(lambda d: box(d)["ports"].append({"containerPort": 9000})),  # one port only
        broken(lambda d: box(d).update(lifecycle={})),  # not in Knative's field mask
        broken(lambda d: box(d)["securityContext"].update(privileged=True)),
        broken(lambda d: box(d)["env"].append({"name": "PORT", "value": "1"})),  # reserved
        broken(lambda d: spec(d).update(hostNetwork=True)),
        broken(lambda d: spec(d).update(automountServiceAccountToken=True)),
        broken(lambda d: spec(d).update(containerConcurrency=-1)),
        broken(
            lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
                {knative.MIN_SCALE: "one"}
            )
        ),
        broken(lambda d: d["spec"].update(replicas=1)),
        broken(lambda d: d.update(apiVersion="serving.knative.dev/v1beta1")),
    ):
        assert list(validator.iter_errors(bad)), bad


def test_kustomizations_list_existing_files() -> None:
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        for resource in docs(kfile)[0]["resources"]:
            assert (kfile.parent / resource).is_file(), (kfile, resource)


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )


@needs_kubectl
@pytest.mark.parametrize("directory", ["", "functions", "deployments", "knative"])
def test_kustomize_renders_valid_objects(directory: str, tmp_path: Path) -> None:
    """Rendered from a copy of deploy/ with the API token file an operator makes."""
    base = tmp_path / "deploy"
    shutil.copytree(DEPLOY, base)
    (base / "api-token.env").write_text("token=0123456789abcdef\n")
    out = kustomize(base / directory)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in rendered:
        validate_any(doc, "1.30.0", f"kustomize {directory}")
    kinds = sorted(d["kind"] for d in rendered)
    if directory == "":
        assert kinds == sorted(
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ConfigMap",
                "PersistentVolumeClaim",
                "Deployment",
                "Service",
                "NetworkPolicy",
                "Secret",
            ]
        )
        secret = next(d for d in rendered if d["kind"] == "Secret")
        assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
            "stoic-api-token",
            "stoic",
        )
        assert base64.b64decode(secret["data"]["token"]) == b"0123456789abcdef"
    elif directory == "deployments":
        assert kinds == ["Deployment"] * 3 + ["Service"] * 3
    elif directory == "knative":
        assert kinds == ["Service"] * 3
    else:
        assert kinds == ["Function"] * 3


@needs_kubectl
def test_the_base_does_not_render_without_an_api_token(tmp_path: Path) -> None:
    """No token file, no manifests: the base cannot be applied open by mistake."""
    base = tmp_path / "deploy"
    shutil.copytree(DEPLOY, base, ignore=shutil.ignore_patterns("api-token.env"))
    out = kustomize(base)
    assert out.returncode != 0 and "api-token.env" in out.stderr


def test_the_api_token_is_a_generated_secret_the_controller_requires() -> None:
    """The base generates stoic-api-token from a file git ignores, the controller reads
    it as STOIC_API__TOKEN (not optional: no Secret, no pod), and the ServiceMonitor
    sends it."""
    kustomization = docs(DEPLOY / "kustomization.yaml")[0]
    [generator] = kustomization["secretGenerator"]
    assert generator["name"] == "stoic-api-token" and generator["envs"] == ["api-token.env"]
    assert generator["options"]["disableNameSuffixHash"] is True
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/api-token.env" in ignored
    box = find("Deployment", "stoic-controller")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in box["env"]}
    ref = env["STOIC_API__TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "stoic-api-token", "key": "token"}  # no optional: required
    monitor = docs(DEPLOY / "monitoring" / "servicemonitor.yaml")[0]
    auth = monitor["spec"]["endpoints"][0]["authorization"]
    assert auth == {"type": "Bearer", "credentials": {"name": "stoic-api-token", "key": "token"}}


def test_network_policy_admits_the_namespace_and_the_labelled_namespaces_only() -> None:
    """Every ingress rule names its sources (a rule without ``from`` admits any), and the
    sources are exactly the namespace's own pods and namespaces carrying the label."""
    policy = find("NetworkPolicy", "stoic-controller")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    assert rules and all(rule.get("from") for rule in rules)
    peers = [peer for rule in rules for peer in rule["from"]]
    assert peers == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"stoic.io/api-client": "true"}}},
    ]
    text = (DEPLOY / "networkpolicy.yaml").read_text()
    assert "kubectl label namespace" in text and "stoic.io/api-client=true" in text


def without_scan_notes(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` less the ``checkov.io/`` annotations that examples carry for ``make scan``."""
    meta = dict(doc["metadata"])
    notes = {k: v for k, v in meta.pop("annotations", {}).items() if not k.startswith("checkov")}
    if notes:
        meta["annotations"] = notes
    return {**doc, "metadata": meta}


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
def test_example_functions_are_what_the_backend_creates(runtime: Runtime) -> None:
    """deploy/functions, deploy/deployments and deploy/knative show exactly what the
    controller creates in each mode with the default settings."""
    settings = KubernetesSettings(controller_id="example")
    name = f"stoic-{runtime.name}-example"
    assert docs(DEPLOY / "functions" / f"function-{runtime.name}.yaml") == [
        objs.kubeless_function(settings, runtime, name)
    ]
    assert [
        without_scan_notes(d)
        for d in docs(DEPLOY / "deployments" / f"function-{runtime.name}.yaml")
    ] == [objs.deployment(settings, runtime, name), objs.service(settings, runtime, name)]
    assert docs(DEPLOY / "knative" / f"service-{runtime.name}.yaml") == [
        knative.service(settings, runtime, name)
    ]


def test_kubeless_runtime_config_declares_the_runtimes_functions_use() -> None:
    settings = KubernetesSettings()
    cm = find("ConfigMap", "kubeless-config")
    entries = json.loads(cm["data"]["runtime-images"])
    entry = next(e for e in entries if e["ID"] == settings.kubeless_runtime_id)
    declared = {
        entry["ID"] + v["version"]: [i["image"] for i in v["images"] if i["phase"] == "runtime"]
        for v in entry["versions"]
    }
    assert declared == {
        "stoictfcpu": [settings.image_cpu],
        "stoictfgpu": [settings.image_gpu],
    }
    used = {
        docs(DEPLOY / "functions" / f"function-{r.name}.yaml")[0]["spec"]["runtime"]
        for r in RUNTIMES
    }
    assert used == set(declared)


def test_controller_config_is_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's stoic.toml loads; with the variables the Deployment sets from its
    Secrets, the controller has its token and its keys for the cloud store, and only
    then does ``stoic serve`` agree to listen on 0.0.0.0."""
    toml = tmp_path / "stoic.toml"
    toml.write_text(find("ConfigMap", "stoic-config")["data"]["stoic.toml"])
    settings = load_settings(toml)
    k8s = settings.kubernetes
    assert (k8s.in_cluster, k8s.invoke_via, k8s.namespace) == (True, "dns", "stoic")
    assert [(r.name, r.backend, r.gpus) for r in settings.runtimes] == [
        ("edge", "local", 0),
        ("cpu", "kubernetes", 0),
        ("gpu1", "kubernetes", 1),
        ("gpu2", "kubernetes", 2),
    ]
    assert settings.api.host == "0.0.0.0" and not settings.api.allow_anonymous
    with pytest.raises(ConfigError, match=r"api\.token is not set"):
        check_listener(settings.api)

    box = find("Deployment", "stoic-controller")["spec"]["template"]["spec"]["containers"][0]
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in box["env"]}
    values = {"token": "t0ken", objs.ACCESS_KEY: "AK", objs.SECRET_KEY: "SK"}
    for name, ref in from_secrets.items():
        monkeypatch.setenv(name, values[ref["key"]])
    settings = load_settings(toml)
    check_listener(settings.api)
    store = settings.kubernetes.store
    assert (store.bucket, store.credentials_secret) == ("stoic", "stoic-s3")
    assert store.access_key == "AK" and store.secret_key is not None
    assert store.secret_key.get_secret_value() == "SK"
    secret = find("Secret", "stoic-s3")
    assert {
        from_secrets[f"STOIC_KUBERNETES__STORE__{k}"]["name"] for k in ("ACCESS_KEY", "SECRET_KEY")
    } == {secret["metadata"]["name"]}
    assert set(secret["stringData"]) == {objs.ACCESS_KEY, objs.SECRET_KEY}


@pytest.mark.parametrize("mode", ["deployment", "knative", "kubeless"])
def test_function_pods_get_the_cloud_store_and_its_keys_by_reference(mode: str) -> None:
    """Every mode's function container points the function at the cloud store (S3: the
    pods' endpoint, bucket, region) and takes the keys from the Secret by reference; the
    controller's own keys appear nowhere in what it creates."""
    store = {
        "endpoint": "https://s3.edge.example",
        "pod_endpoint": "http://s3.storage.svc:8333",
        "bucket": "stoic-cloud",
        "region": "eu-west-3",
        "access_key": "AKCONTROLLER",
        "secret_key": "controller-s3cr3t",
        "credentials_secret": "site-s3",
    }
    settings = KubernetesSettings(mode=mode, store=store)
    rt = RUNTIMES[1]
    made = {
        "deployment": lambda: objs.deployment(settings, rt, "f")["spec"]["template"],
        "knative": lambda: knative.service(settings, rt, "f")["spec"]["template"],
        "kubeless": lambda: objs.kubeless_function(settings, rt, "f")["spec"]["deployment"]["spec"][
            "template"
        ],
    }[mode]()
    env = {e["name"]: e for e in made["spec"]["containers"][0]["env"]}
    assert {
        k: env[k]["value"] for k in env if k.startswith("STOIC_OBJECTSTORE__") and "value" in env[k]
    } == {
        "STOIC_OBJECTSTORE__KIND": "s3",
        "STOIC_OBJECTSTORE__S3_ENDPOINT": "http://s3.storage.svc:8333",
        "STOIC_OBJECTSTORE__S3_BUCKET": "stoic-cloud",
        "STOIC_OBJECTSTORE__S3_REGION": "eu-west-3",
    }
    assert env["STOIC_OBJECTSTORE__S3_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "site-s3", "key": "access_key"}
    }
    assert env["STOIC_OBJECTSTORE__S3_SECRET_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "site-s3", "key": "secret_key"}
    }
    text = json.dumps(made)
    assert "AKCONTROLLER" not in text and "controller-s3cr3t" not in text

    same = KubernetesSettings(mode=mode, store={"endpoint": "https://s3.example"})
    env = {e["name"]: e for e in objs.container(same, rt)["env"]}
    assert env["STOIC_OBJECTSTORE__S3_ENDPOINT"]["value"] == "https://s3.example"
    bare = KubernetesSettings(mode=mode, store={"credentials_secret": None})
    names = [e["name"] for e in objs.container(bare, rt)["env"]]
    assert "STOIC_OBJECTSTORE__KIND" in names
    assert not {"STOIC_OBJECTSTORE__S3_ENDPOINT", "STOIC_OBJECTSTORE__S3_ACCESS_KEY"} & set(names)


def test_controller_objects_refer_to_each_other() -> None:
    dep = find("Deployment", "stoic-controller")
    pod = dep["spec"]["template"]
    assert (
        pod["spec"]["serviceAccountName"]
        == find("ServiceAccount", "stoic-controller")["metadata"]["name"]
    )
    binding = find("RoleBinding", "stoic-controller")
    assert binding["subjects"][0]["name"] == "stoic-controller"
    assert binding["roleRef"]["name"] == find("Role", "stoic-controller")["metadata"]["name"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    find("ConfigMap", volumes["config"]["configMap"]["name"])
    find("PersistentVolumeClaim", volumes["data"]["persistentVolumeClaim"]["claimName"])
    secret_ref = pod["spec"]["containers"][0]["envFrom"][0]["secretRef"]
    assert secret_ref["optional"] is True
    assert "STOIC_DATABASE__URL" in find("Secret", secret_ref["name"])["stringData"]
    svc = find("Service", "stoic-controller")
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    namespaces = {
        d["metadata"].get("namespace")
        for _, d in all_docs()
        if d["kind"] not in ("Namespace", "Kustomization")
    }
    assert namespaces <= {"stoic", "kubeless", "knative-serving", None}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/stoic-project/stoic-controller:0.1.0"
    )


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_deployment_mode_objects_validate(runtime: Runtime, version: str) -> None:
    settings = cloud_settings(
        mode="deployment",
        runtime_tolerations={"gpu2": [{"key": "big", "operator": "Exists"}]},
        readiness_path=None,
    )
    name = objs.function_name(runtime)
    d = objs.deployment(settings, runtime, name)
    kubernetes_validate.validate(d, version, strict=True)
    kubernetes_validate.validate(objs.service(settings, runtime, name), version, strict=True)
    spec = d["spec"]["template"]["spec"]
    keys = [t["key"] for t in spec["tolerations"]]
    assert (
        keys
        == {
            "cpu": ["cloud"],
            "gpu1": ["cloud", "nvidia.com/gpu"],
            "gpu2": ["cloud", "nvidia.com/gpu", "big"],
        }[runtime.name]
    )
    assert "readinessProbe" not in spec["containers"][0]
    assert d["spec"]["selector"]["matchLabels"].items() <= (
        d["spec"]["template"]["metadata"]["labels"].items()
    )


def test_pod_readiness_and_failure_checks() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert objs.pod_ready(ready)
    assert not objs.pod_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not objs.pod_ready({"status": {}})
    assert not objs.pod_ready({**ready, "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert objs.pod_failure({"status": {"phase": "Failed", "reason": "Evicted"}}) == (
        "pod failed: Evicted"
    )
    backoff = {"state": {"waiting": {"reason": "ImagePullBackOff"}}, "name": "function"}
    assert objs.pod_failure({"status": {"containerStatuses": [backoff]}}) is None


# --------------------------------------------------------------------- pod security

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the ``restricted`` Pod Security Standard (Kubernetes 1.30, "latest") rejects
    in a pod spec: the baseline host and privilege rules, then non-root, no privilege
    escalation, all capabilities dropped, a RuntimeDefault/Localhost seccomp profile
    (pod or every container) and the allowed volume types."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}: {sorted(kinds)}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod seccomp {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation not false")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccomp {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities not dropped")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added {caps['add']}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out


def test_restricted_check_is_not_vacuous() -> None:
    pod = {"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "h", "hostPath": {}}]}
    assert set(restricted_violations(pod)) == {
        "volume h: ['hostPath']",
        "c: allowPrivilegeEscalation not false",
        "c: runAsNonRoot not true",
        "c: seccomp None",
        "c: capabilities not dropped",
    }


def shipped_pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec in deploy/: Deployments, kubeless Functions' templates and
    Knative Services' revision templates."""
    out = []
    for path, doc in all_docs():
        where = f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc.get('metadata', {}).get('name')}"
        if doc["kind"] == "Deployment":
            out.append((where, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Function":
            out.append((where, doc["spec"]["deployment"]["spec"]["template"]["spec"]))
        elif doc["apiVersion"].startswith("serving.knative.dev/"):
            out.append((where, doc["spec"]["template"]["spec"]))
    return out


def test_every_shipped_pod_is_restricted() -> None:
    found = shipped_pod_specs()
    assert len(found) == 1 + 3 * 3  # the controller, three examples in each mode
    for where, pod in found:
        assert restricted_violations(pod) == [], where


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
@pytest.mark.parametrize("mode", ["deployment", "knative", "kubeless"])
def test_every_function_pod_is_restricted_with_requests_and_limits(
    mode: str, runtime: Runtime
) -> None:
    """Whatever the settings, the pods the backend creates pass the restricted standard
    and are never BestEffort: every container has CPU/memory requests and a memory
    limit; GPU runtimes have their GPU limit."""
    settings = KubernetesSettings(
        mode=mode,
        cpu_request_millicores=250,
        cpu_limit_millicores=None,
        memory_request_mib=512,
        memory_limit_mib=768,
        run_as_user=20000,
        readiness_path=None,
        liveness_path=None,
    )
    name = objs.function_name(runtime)
    if mode == "deployment":
        pod = objs.deployment(settings, runtime, name)["spec"]["template"]["spec"]
    elif mode == "knative":
        pod = knative.service(settings, runtime, name)["spec"]["template"]["spec"]
    else:
        fn = objs.kubeless_function(settings, runtime, name)
        pod = fn["spec"]["deployment"]["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    box = pod["containers"][0]
    assert box["securityContext"]["runAsUser"] == 20000
    assert box["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    expected = {"memory": "768Mi"} | ({"nvidia.com/gpu": str(runtime.gpus)} if runtime.gpus else {})
    assert box["resources"]["limits"] == expected
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(box)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"memory_request_mib": 4096, "memory_limit_mib": 2048}, "memory_limit_mib"),
        ({"cpu_request_millicores": 3000, "cpu_limit_millicores": 2000}, "cpu_limit_millicores"),
        ({"knative_min_scale": 3, "knative_max_scale": 2}, "knative_min_scale"),
        ({"mode": "openfaas"}, "kubernetes.mode"),
        ({"cpu_request_millicores": 0}, "kubernetes.cpu_request_millicores"),
    ],
)
def test_bad_resource_settings_are_named(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(kubernetes=values)


def test_knative_is_not_the_default_and_deployment_is() -> None:
    assert KubernetesSettings().mode == "deployment"


def test_controller_probes_and_security() -> None:
    """httpGet liveness /healthz, readiness /readyz, a startup probe long enough for the
    demo model's training (≈ 30 s), a read-only root with a writable /tmp."""
    dep = find("Deployment", "stoic-controller")
    pod = dep["spec"]["template"]["spec"]
    box = pod["containers"][0]
    # The probes ask the health listener (api.health_port), not the API's port.
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    startup = box["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "health"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "persistentVolumeClaim" in volumes[mounts["/data"]]
    assert {"cpu", "memory"} <= set(box["resources"]["requests"])
    assert {"cpu", "memory"} <= set(box["resources"]["limits"])
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    config = tomllib.loads(find("ConfigMap", "stoic-config")["data"]["stoic.toml"])
    assert (config["api"]["port"], config["api"]["health_port"]) == (ports["http"], ports["health"])
    policy = find("NetworkPolicy", "stoic-controller")
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [ports["http"]]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_namespace_enforces_the_restricted_standard() -> None:
    labels = find("Namespace", "stoic")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_service_monitor_selects_the_controller_service() -> None:
    monitor = docs(DEPLOY / "monitoring" / "servicemonitor.yaml")[0]
    svc = find("Service", "stoic-controller")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_knative_mode_objects_validate(runtime: Runtime, version: str) -> None:
    settings = cloud_settings(
        mode="knative",
        knative_min_scale=0,
        knative_max_scale=0,
        knative_container_concurrency=0,
        knative_cluster_local=False,
    )
    svc = knative.service(settings, runtime, objs.function_name(runtime))
    validate_knative(svc, version)
    annotations = svc["spec"]["template"]["metadata"]["annotations"]
    assert (annotations[knative.MIN_SCALE], annotations[knative.MAX_SCALE]) == ("0", "0")
    assert knative.VISIBILITY not in svc["metadata"]["labels"]
    assert svc["spec"]["template"]["spec"]["containerConcurrency"] == 0


def test_liveness_waits_for_start_up_without_a_startup_probe() -> None:
    settings = KubernetesSettings(readiness_path=None, startup_timeout_s=120)
    box = objs.container(settings, RUNTIMES[0])
    assert "startupProbe" not in box and "readinessProbe" not in box
    assert box["livenessProbe"]["initialDelaySeconds"] == 120
    assert (
        "initialDelaySeconds"
        not in objs.container(KubernetesSettings(), RUNTIMES[0])["livenessProbe"]
    )
