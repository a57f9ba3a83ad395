"""The monitoring files agree with the daemon: the Grafana dashboard and the Prometheus
alert rules query only metrics the controller or the function server exports, the
rules pass ``promtool check rules`` and their unit tests (``promtool test rules``), and
the daemon's ``/metrics`` passes ``promtool check metrics``.

promtool comes from Debian's ``prometheus`` package. Where it is absent the promtool
tests skip, naming it; ``.ci/run`` installs it and sets ``CI_REQUIRE_PROMTOOL=1``,
which turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.daemon import files, start_daemon
from tests.support.images import jpeg
from tests.support.metrics import function_server, metric_names, series_names
from tests.support.paths import REPO
from tests.support.settings import make_settings
from tests.support.uplink import far_side

DASHBOARD = REPO / "deploy" / "grafana" / "stoic-dashboard.json"
RULES = REPO / "deploy" / "monitoring" / "alerts.yaml"
RULE_TESTS = REPO / "tests" / "monitoring" / "alerts_test.yaml"

# Metrics the rules may name before the daemon exports them, each with the work that
# adds it. An entry must go once the daemon exports the metric (a test says so).
PENDING: dict[str, str] = {}

ALERTS = {
    "StoicQueueStuck",
    "StoicQueueNotDraining",
    "StoicResultsUnrecorded",
    "StoicDeployTimeouts",
    "StoicUplinkDown",
    "StoicCloudBudgetExhausted",
}


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(doc["panels"])
    return exprs


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


async def daemon_exposition(tmp_path: Path) -> str:
    """``/metrics`` of an in-process daemon with every optional collector on (the
    inquisitor, the uplink check), after one batch."""
    async with far_side() as link:
        settings = make_settings(
            tmp_path,
            controller={"inquisitor": True},
            inquisitor={"uplink_check_url": link.url, "uplink_check_timeout_s": 0.5},
        )
        async with start_daemon(settings) as daemon:
            r = await daemon.client.post("/v1/batches", files=files(("a.jpg", jpeg())))
            await daemon.wait_done(r.json()["id"])
            return (await daemon.client.get("/metrics")).text


@pytest.fixture
async def expositions(tmp_path: Path) -> dict[str, str]:
    """What the controller's and the function server's ``/metrics`` answer."""
    controller = await daemon_exposition(tmp_path)
    with function_server() as url:
        function = await asyncio.to_thread(httpx.get, f"{url}/metrics")
    return {"controller": controller, "function": function.text}


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian's prometheus package: apt-get install prometheus)"
        if os.environ.get("CI_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"CI_REQUIRE_PROMTOOL=1 but {reason}")
        pytest.skip(reason)
    return path


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, runtime) (rate(stoic_deployment_seconds_bucket"
        '{outcome="ok"}[$__rate_interval]))) / on (runtime) stoic_runtime_available * 60'
    )
    assert metric_names(expr) == {"stoic_deployment_seconds_bucket", "stoic_runtime_available"}
    expr = (
        'sum without (state) (stoic_batches{state="queued"}) > 1e3\n'
        "unless on (job, instance) stoic_batches_running offset 1h == 0"
    )
    assert metric_names(expr) == {"stoic_batches", "stoic_batches_running"}


async def test_dashboard_and_rules_query_only_exported_metrics(
    expositions: dict[str, str],
) -> None:
    exposed = series_names(expositions["controller"]) | series_names(expositions["function"])
    queries = dashboard_queries() + [rule["expr"] for rule in rules()]
    used = set().union(*(metric_names(q) for q in queries))
    missing = {
        name: [q for q in queries if name in metric_names(q)]
        for name in used - set(exposed) - set(PENDING)
    }
    assert not missing, f"queries name metrics the daemon does not export: {missing}"
    assert not set(PENDING) & set(exposed), "now exported: take it out of PENDING"
    assert set(PENDING) <= used, "pending but no longer queried: take it out of PENDING"
    assert "stoic_cloud_budget_remaining_pod_seconds" in exposed
    # What the dashboard is for (issues 12 and 25): batches, decisions by runtime,
    # predicted vs actual T_s, deployment times, cloud seconds used and wasted, the
    # uplink, probes and dropped connections.
    assert {
        "stoic_batches",
        "stoic_batches_finished_total",
        "stoic_decisions_total",
        "stoic_predicted_response_seconds_sum",
        "stoic_response_seconds_sum",
        "stoic_deployment_seconds_bucket",
        "stoic_cloud_used_seconds_total",
        "stoic_cloud_wasted_seconds_total",
        "stoic_uplink_up",
        "stoic_probe_cloud_seconds_total",
        "stoic_http_connections_dropped_total",
    } <= set().union(*(metric_names(q) for q in dashboard_queries()))
    # Quantiles only over histogram buckets.
    for q in queries:
        for name in metric_names(q):
            if name.endswith("_bucket"):
                assert exposed[name] == "histogram", q


def test_every_alert_is_unit_tested_firing() -> None:
    """Each rule has a severity and a summary, and tests/monitoring/alerts_test.yaml has
    a case in which it fires (promtool runs them in the test below)."""
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].startswith("stoic: "), rule["alert"]
    cases = yaml.safe_load(RULE_TESTS.read_text())
    assert [(RULE_TESTS.parent / f).resolve() for f in cases["rule_files"]] == [RULES]
    fired = {
        check["alertname"]
        for case in cases["tests"]
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == ALERTS


def test_the_prometheusrule_wrapping_in_the_rules_header_works() -> None:
    """The header's command for Prometheus Operator users makes a PrometheusRule whose
    spec is the rules file."""
    lines = RULES.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "wrap it in a PrometheusRule" in line)
    command = []
    for line in lines[start + 1 :]:
        if not line.startswith("#   "):
            break
        command.append(line.removeprefix("#   "))
    script = "\n".join(command).replace("| kubectl apply -f -", "")
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    doc = yaml.safe_load(out.stdout)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert doc["metadata"] == {"name": "stoic", "namespace": "stoic"}
    assert doc["spec"] == yaml.safe_load(RULES.read_text())


def test_rules_pass_promtool_check(promtool: str) -> None:
    out = run(promtool, "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    out = run(promtool, "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


async def test_metrics_pass_promtool_check(promtool: str, expositions: dict[str, str]) -> None:
    for source, text in expositions.items():
        out = await asyncio.to_thread(run, promtool, "check", "metrics", stdin=text)
        assert (out.returncode, out.stdout + out.stderr) == (0, ""), source


def test_promtool_check_metrics_finds_a_bad_name(promtool: str) -> None:
    """The check above can fail: a counter without ``_total`` is reported."""
    text = "# HELP stoic_x_seconds x\n# TYPE stoic_x_seconds counter\nstoic_x_seconds 1\n"
    out = run(promtool, "check", "metrics", stdin=text)
    assert out.returncode != 0
    assert '"_total" suffix' in out.stdout + out.stderr
