"""A real Prometheus (Debian's) scrapes a real hub and agent: PromQL through its HTTP API returns the
expected series; every Grafana panel's query returns data; the alert rules load and evaluate.

One module-scoped stack: a `roost hub serve` process, one agent enrolled into group ``lab`` with
``--metrics-address`` and a metrics token, running an inference-reporting component and one that
goes BROKEN (one hub deployment, DO_NOTHING: it FAILS and stays), and a prometheus process scraping
the hub's /metrics and /metrics/fleet and the agent found through /v1/prometheus/targets, every second.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_service
from tests.hub.conftest import free_port, hub_init
from tests.sync.conftest import Agent, Hub, roost, roost_json, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEVICE = "edge-m"
INFER, FLAKY = "com.test.Infer", "com.test.Flaky"
AGENT_TOKEN = "agent-metrics-token-0123456789"
ENV = {"ROOST_METRICS_SNAPSHOT_SECONDS": "1"}

INFER_PY = """
import asyncio, random
from roost.ipc.client import IpcClient

async def main():
    ipc = await IpcClient.connect()
    await ipc.update_state("RUNNING")
    while True:
        metrics = [{"name": "InferenceRequests.wine", "unit": "COUNT", "value": 5},
                   {"name": "InferenceErrors.wine", "unit": "COUNT", "value": 0}]
        metrics += [{"name": "InferenceLatency.wine", "unit": "SECONDS", "value": random.uniform(0.001, 0.02)}
                    for _ in range(5)]
        await ipc.call("aws.greengrass#PutComponentMetric", {"metrics": metrics})
        await ipc.publish("local/noise", {"n": 1})
        await asyncio.sleep(0.2)

asyncio.run(main())
"""


def _component(base: Path, name: str, run: str, files: dict[str, str], config: dict[str, Any]) -> tuple[Path, Path]:
    art = base / f"{name}-art"
    art.mkdir(parents=True)
    for fname, text in files.items():
        (art / fname).write_text(text)
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
              "ComponentConfiguration": {"DefaultConfiguration": config},
              "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": run},
                             "Artifacts": [{"URI": f"s3://b/{name}/1.0.0/{f}"} for f in files]}]}
    path = base / f"{name}-1.0.0.json"
    path.write_text(json.dumps(recipe))
    return path, art


@dataclass
class Stack:
    hub: Hub
    agent: Agent
    agent_port: int
    metrics_token: str
    prometheus: str
    prom_log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def eventually(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        return wait_for(lambda: self.query(expr), timeout=timeout, what=f"data for {expr}", interval=0.5)


def _prometheus_config(hub: Hub, metrics_token: Path, agent_token: Path) -> str:
    target = f"127.0.0.1:{hub.port}"
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {DEPLOY / "prometheus" / "roost-rules.yml"}
scrape_configs:
  - job_name: roost-hub
    authorization: {{type: Bearer, credentials_file: {metrics_token}}}
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: roost-fleet
    metrics_path: /metrics/fleet
    honor_labels: true
    authorization: {{type: Bearer, credentials_file: {metrics_token}}}
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: roost-agents
    authorization: {{type: Bearer, credentials_file: {agent_token}}}
    http_sd_configs:
      - url: http://{target}/v1/prometheus/targets
        refresh_interval: 1s
        authorization: {{type: Bearer, credentials_file: {metrics_token}}}
    relabel_configs:
      - source_labels: [__meta_roost_device]
        target_label: device
      - source_labels: [__meta_roost_groups]
        target_label: groups
      - regex: __meta_roost_label_(.+)
        action: labelmap
        replacement: label_$1
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_service("prometheus", shutil.which("prometheus") is not None, "Debian's prometheus is not installed "
                    "(make prometheus installs it)")
    base = tmp_path_factory.mktemp("observe")
    hub = Hub(base / "hub", free_port(), hub_init(base / "hub"), base)
    hub.start()
    agent = Agent(DEVICE, base / "agent")
    prom: subprocess.Popen[bytes] | None = None
    try:
        metrics_token = roost_json("hub", "metrics-token", "--root", str(hub.root))["token"]
        (base / "metrics.token").write_text(metrics_token)
        (base / "agent.token").write_text(AGENT_TOKEN + "\n")
        enroll = roost_json(*hub.cli("device", "enroll-token", "--group", "lab"))["token"]
        port = free_port()
        proc = roost("agent", "start", "--root", str(agent.root), "--detach", "--hub", hub.url, "--enroll-token",
                     enroll, "--thing-name", DEVICE, "--label", "machine=xavier", "--metrics-address",
                     f"127.0.0.1:{port}", "--metrics-token-file", str(base / "agent.token"), env=ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        agent.started = True
        policy = {"accessControl": {"aws.greengrass.ipc.componentmetric": {f"{INFER}:m:1": {
            "operations": ["aws.greengrass#PutComponentMetric"], "resources": ["*"]}},
            "aws.greengrass.ipc.pubsub": {f"{INFER}:p:1": {
                "operations": ["aws.greengrass#PublishToTopic"], "resources": ["local/noise"]}}}}
        for name, run, files, config in (
                (INFER, f"exec {sys.executable} -u {{artifacts:path}}/infer.py", {"infer.py": INFER_PY}, policy),
                (FLAKY, "exit 1", {"note.txt": "fails at once\n"}, {})):
            recipe, art = _component(base / "components", name, run, files, config)
            roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
        roost(*hub.cli("deployment", "create", "--target", "group:lab", "--component", f"{INFER}=1.0.0",
                       "--component", f"{FLAKY}=1.0.0", "--failure-policy", "DO_NOTHING"))
        config = base / "prometheus.yml"
        config.write_text(_prometheus_config(hub, base / "metrics.token", base / "agent.token"))
        prom_port = free_port()
        prom_log = base / "prometheus.log"
        with open(prom_log, "wb") as fh:
            prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={base / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                    stdout=fh, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{prom_port}"

        def ready() -> bool:
            assert prom is not None and prom.poll() is None, prom_log.read_text()
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(ready, timeout=30, what="prometheus ready")
        yield Stack(hub, agent, port, metrics_token, url, prom_log)
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        agent.stop()
        hub.stop()


def test_promql_returns_the_agents_the_hubs_and_the_fleets_series(stack: Stack) -> None:
    up = stack.eventually(f'up{{job="roost-agents", device="{DEVICE}"}} == 1')
    assert up[0]["metric"]["groups"] == ",lab," and up[0]["metric"]["label_machine"] == "xavier"
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{stack.agent_port}"
    running = stack.eventually(f'roost_component_state{{device="{DEVICE}", component="{INFER}", state="RUNNING"}} == 1')
    assert len(running) == 1
    broken = stack.eventually(f'roost_component_state{{device="{DEVICE}", component="{FLAKY}", state="BROKEN"}} == 1')
    assert len(broken) == 1
    requests = stack.eventually(f'roost_inference_requests_total{{device="{DEVICE}", component="{INFER}", '
                                'model="wine"} > 0')
    assert float(requests[0]["value"][1]) > 0
    p95 = stack.eventually('histogram_quantile(0.95, sum by (le) (rate(roost_inference_latency_seconds_bucket'
                           f'{{device="{DEVICE}", model="wine"}}[1m])))')
    assert 0 < float(p95[0]["value"][1]) <= 0.025
    ipc = stack.eventually(f'roost_ipc_messages_received_total{{device="{DEVICE}", component="{INFER}"}} > 0')
    assert ipc
    assert stack.eventually(f'roost_host_memory_total_bytes{{device="{DEVICE}"}} > 0')
    assert stack.eventually(f'roost_agent_deployments_total{{device="{DEVICE}", status="FAILED"}} >= 1')
    # the hub
    assert stack.eventually('roost_hub_devices{job="roost-hub", status="ONLINE"} == 1')
    assert stack.eventually('roost_hub_rollout_devices{job="roost-hub", target="group:lab", status="FAILED"} == 1')
    assert stack.eventually('roost_hub_cluster_nodes{job="roost-hub", tier="edge"} == 1')
    latency = stack.eventually('roost_hub_api_request_duration_seconds_count{job="roost-hub", route="/metrics"} > 0')
    assert latency[0]["metric"]["status"] == "2xx"
    assert not stack.query('roost_hub_api_request_duration_seconds_count{route=~".*edge-m.*"}')  # templates only
    # the fleet page: the same device, from its snapshots, with its group
    cpu = stack.eventually(f'roost_fleet_cpu_ratio{{job="roost-fleet", device="{DEVICE}", group="lab"}}')
    assert 0 <= float(cpu[0]["value"][1]) <= 1
    assert stack.eventually(f'roost_fleet_components_broken{{device="{DEVICE}"}} == 1')
    assert stack.eventually(f'roost_fleet_model_requests_total{{device="{DEVICE}", model="{INFER}:wine"}} > 0')


def test_service_discovery_lists_the_device_with_its_metadata(stack: Stack) -> None:
    r = httpx.get(f"{stack.hub.url}/v1/prometheus/targets", headers={"Authorization": f"Bearer {stack.metrics_token}"})
    assert r.status_code == 200, r.text
    (group,) = r.json()
    assert group["targets"] == [f"127.0.0.1:{stack.agent_port}"]
    expected = {"__meta_roost_device": DEVICE, "__meta_roost_groups": ",lab,", "__meta_roost_group_lab": "true",
                "__meta_roost_label_machine": "xavier", "__meta_roost_token": "true"}
    assert {k: v for k, v in group["labels"].items() if k in expected} == expected
    assert group["labels"]["__meta_roost_label_os"] == "linux"  # the labels the agent sent at enrolment too


def test_every_dashboard_panel_returns_data(stack: Stack) -> None:
    stack.eventually(f'roost_inference_requests_total{{device="{DEVICE}"}}')
    stack.eventually(f'roost_fleet_model_requests_total{{device="{DEVICE}"}}')
    stack.eventually(f'roost_component_state{{device="{DEVICE}", state="BROKEN"}} == 1')
    stack.eventually(f'roost_agent_deployments_total{{device="{DEVICE}"}}')
    files = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert {f.stem for f in files} == {"roost-fleet", "roost-device", "roost-inference", "roost-deployments",
                                       "roost-cluster"}
    checked = 0
    empty: list[str] = []
    for path in files:
        dashboard = json.loads(path.read_text())
        names = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = _substitute(target["expr"], names)
                assert "$" not in expr, f"{path.name} {panel['title']}: unknown variable in {expr}"
                try:
                    found = wait_for(lambda e=expr: stack.query(e), timeout=20, what=expr, interval=0.5)  # type: ignore[misc]
                except AssertionError:
                    found = []
                if not found:
                    empty.append(f"{path.name} / {panel['title']}: {expr}")
                checked += 1
        for var in dashboard["templating"]["list"]:
            if var["type"] == "query":  # label_values(metric, label) has values
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"]).groups()  # type: ignore[union-attr]
                assert any(label in s["metric"] for s in stack.query(metric)), var
    assert empty == [] and checked >= 30


def _substitute(expr: str, names: set[str]) -> str:
    """What Grafana does with the variables the dashboards use ("All" selected)."""
    out = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    for name in names - {"datasource"}:
        out = out.replace(f"${name}", ".+")
    return out


def test_the_alert_rules_load_and_a_broken_component_raises_its_alert(stack: Stack) -> None:
    r = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()
    groups = {g["name"]: g for g in r["data"]["groups"]}
    assert set(groups) == {"roost-devices", "roost-deployments", "roost-inference"}
    assert all(rule["health"] != "err" for g in groups.values() for rule in g["rules"]), groups
    alert = stack.eventually(f'ALERTS{{alertname="RoostComponentBroken", device="{DEVICE}", component="{FLAKY}"}}')
    assert alert[0]["metric"]["alertstate"] in ("pending", "firing")
    assert stack.eventually('ALERTS{alertname="RoostDeploymentFailed", target="group:lab"}')


def test_metrics_without_the_token_are_refused_with_a_code(stack: Stack) -> None:
    agent = f"http://127.0.0.1:{stack.agent_port}/metrics"
    missing = httpx.get(agent, timeout=5)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "METRICS_TOKEN_REQUIRED"
    wrong = httpx.get(agent, headers={"Authorization": "Bearer not-the-token-at-all"}, timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "METRICS_TOKEN_INVALID"
    good = httpx.get(agent, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, timeout=5)
    assert good.status_code == 200 and "roost_component_state" in good.text
    assert AGENT_TOKEN not in (stack.agent.root / "metrics.json").read_text()
    assert AGENT_TOKEN not in stack.agent.log.read_text()
    hub = stack.hub.url
    for path in ("/metrics", "/metrics/fleet", "/v1/prometheus/targets"):
        refused = httpx.get(hub + path, timeout=5)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED", path
        bad = httpx.get(hub + path, headers={"Authorization": "Bearer rst_metrics_nope"}, timeout=5)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "INVALID_TOKEN", path
        assert httpx.get(hub + path, headers={"Authorization": f"Bearer {stack.hub.token}"}, timeout=5).status_code \
            == 200
    credential = stack.agent.hub_config()["credential"]
    device = httpx.get(hub + "/metrics", headers={"Authorization": f"Bearer {credential}"}, timeout=5)
    assert device.status_code == 403 and device.json()["error"]["code"] == "FORBIDDEN"
    # a metrics token reads metrics only
    admin_route = httpx.get(hub + "/v1/devices", headers={"Authorization": f"Bearer {stack.metrics_token}"}, timeout=5)
    assert admin_route.status_code == 403 and admin_route.json()["error"]["code"] == "FORBIDDEN"


def test_bad_snapshots_are_refused_alone(stack: Stack) -> None:
    credential = stack.agent.hub_config()["credential"]
    url = f"{stack.hub.url}/v1/device/metrics"
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    big = httpx.put(url, headers=headers, content=json.dumps({"values": {"x": 1.0}, "pad": "y" * 20000}), timeout=5)
    assert big.status_code == 413 and big.json()["error"]["code"] == "METRICS_SNAPSHOT_TOO_LARGE"
    for body, where in (("{not json", "not JSON"), (json.dumps({"values": {"Bad-Name": 1}}), "values"),
                        (json.dumps({"values": {"cpu_ratio": "high"}}), "values.cpu_ratio"),
                        (json.dumps({"values": {f"v{i}": 1 for i in range(65)}}), "values"),
                        (json.dumps({"endpoint": "no port here"}), "endpoint"),
                        (json.dumps({"surprise": 1}), "surprise")):
        bad = httpx.put(url, headers=headers, content=body, timeout=5)
        assert bad.status_code == 422, body
        assert bad.json()["error"]["code"] == "METRICS_SNAPSHOT_INVALID" and where in bad.json()["error"]["message"]
    # nothing else lost: the device's latest snapshot, its history, its status and reports go on
    admin = stack.hub.api()
    series = wait_for(lambda: (d := admin.get(f"/v1/devices/{DEVICE}/metrics").json())["samples"] and d,
                      what="the device's history")
    assert series["latest"]["values"]["components"] == 2 and series["window_seconds"] == 3600
    assert "cpu_ratio" in series["samples"][-1]["values"] and "memory_ratio" in series["samples"][-1]["values"]
    assert series["samples"][-1]["models"][f"{INFER}:wine"]["requests_total"] > 0
    assert admin.get(f"/v1/devices/{DEVICE}").json()["status"] == "ONLINE"
    forbidden = httpx.get(f"{stack.hub.url}/v1/devices/{DEVICE}/metrics",
                          headers={"Authorization": f"Bearer {stack.metrics_token}"}, timeout=5)
    assert forbidden.status_code == 403
    missing = admin.get("/v1/devices/nobody/metrics")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DEVICE_NOT_FOUND"


def test_a_plain_restart_keeps_the_metrics_settings(stack: Stack) -> None:
    """Last in the module: ``roost agent start --root R`` (as under systemd) uses ROOT/metrics.json."""
    stack.agent.stop()
    proc = roost("agent", "start", "--root", str(stack.agent.root), "--detach", env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stack.agent.started = True
    url = f"http://127.0.0.1:{stack.agent_port}/metrics"
    assert httpx.get(url, timeout=5).json()["error"]["code"] == "METRICS_TOKEN_REQUIRED"
    page = httpx.get(url, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, timeout=5)
    assert page.status_code == 200 and f'thing="{DEVICE}"' in page.text
    started = time.time()
    stack.eventually(f'roost_agent_start_time_seconds{{device="{DEVICE}"}} > {started - 60}')
