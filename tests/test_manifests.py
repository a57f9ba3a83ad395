"""Every manifest in ``deploy/`` is valid, and agrees with the code that uses it.

Kubernetes objects are validated offline with ``kubernetes-validate`` (strict: unknown
fields fail). The kubeless Function has no schema there, so Functions are validated
against :data:`stoic.backends.k8s_objects.FUNCTION_SCHEMA` (written from kubeless's
``FunctionSpec``) and their deployment template as an ``apps/v1`` Deployment.
Kustomizations are checked for their structure, and rendered with ``kubectl kustomize``
where kubectl is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stoic.backends import k8s_objects as objs
from stoic.settings import KubernetesSettings, load_settings
from stoic.values import Runtime, RuntimeKind

from .conftest import REPO

DEPLOY = REPO / "deploy"
K8S_VERSIONS = ["1.27.0", "1.30.0", "1.33.0"]
RUNTIMES = [
    Runtime("cpu", RuntimeKind.CPU, 0, "kubernetes"),
    Runtime("gpu1", RuntimeKind.GPU, 1, "kubernetes"),
    Runtime("gpu2", RuntimeKind.GPU, 2, "kubernetes"),
]
FILES = sorted(DEPLOY.rglob("*.yaml"))


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


def validate_function(fn: dict[str, Any], version: str) -> None:
    jsonschema.Draft202012Validator(objs.FUNCTION_SCHEMA).validate(fn)
    template = fn["spec"]["deployment"]
    as_deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": fn["metadata"]["name"], **template.get("metadata", {})},
        "spec": {**template["spec"], "selector": {"matchLabels": fn["metadata"]["labels"]}},
    }
    kubernetes_validate.validate(as_deployment, version, strict=True)
    # What kubeless makes of spec.service: a Service with these fields.
    as_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": fn["metadata"]["name"]},
        "spec": fn["spec"]["service"],
    }
    kubernetes_validate.validate(as_service, version, strict=True)


def validate_any(doc: dict[str, Any], version: str, where: str) -> None:
    if doc["kind"] == "Kustomization":
        assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1", where
        assert set(doc) <= {"apiVersion", "kind", "resources", "images"}, where
    elif doc["apiVersion"].startswith("kubeless.io/"):
        validate_function(doc, version)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


def test_deploy_has_the_expected_files() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in FILES}
    assert names == {
        "kustomization.yaml",
        "namespace.yaml",
        "rbac.yaml",
        "controller.yaml",
        "database-secret.example.yaml",
        "kubeless/kubeless-config.yaml",
        "functions/kustomization.yaml",
        "functions/function-cpu.yaml",
        "functions/function-gpu1.yaml",
        "functions/function-gpu2.yaml",
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


def test_kustomizations_list_existing_files() -> None:
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        for resource in docs(kfile)[0]["resources"]:
            assert (kfile.parent / resource).is_file(), (kfile, resource)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("directory", ["", "functions"])
def test_kustomize_renders_valid_objects(directory: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
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
            ]
        )
    else:
        assert kinds == ["Function"] * 3


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
def test_example_functions_are_what_the_backend_creates(runtime: Runtime) -> None:
    settings = KubernetesSettings(controller_id="example")
    name = f"stoic-{runtime.name}-example"
    assert docs(DEPLOY / "functions" / f"function-{runtime.name}.yaml") == [
        objs.kubeless_function(settings, runtime, name)
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


def test_controller_config_is_valid_settings(tmp_path: Path) -> None:
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
    assert settings.api.host == "0.0.0.0"


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
    assert namespaces <= {"stoic", "kubeless", None}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/stoic-project/stoic-controller:0.1.0"
    )


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_deployment_mode_objects_validate(runtime: Runtime, version: str) -> None:
    settings = KubernetesSettings(
        mode="deployment",
        tolerations=[{"key": "cloud", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
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
