"""deploy/: the alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``), the
example scrape configuration passes ``promtool check config``, and the dashboards are well-formed Grafana
JSON whose provisioning finds them. (Their queries run against a real Prometheus in test_prometheus_e2e.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_service

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    require_service("promtool", shutil.which("promtool") is not None, "Debian's prometheus (promtool) is not "
                    "installed (make prometheus installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    rules = sorted(str(p) for p in (DEPLOY / "prometheus").glob("*.yml"))
    assert rules
    checked = _promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(str(p) for p in (DEPLOY / "prometheus" / "tests").glob("*.yml"))
    tested = _promtool("test", "rules", *tests)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {r["alert"] for p in rules for g in yaml.safe_load(Path(p).read_text())["groups"] for r in g["rules"]
              if "alert" in r}
    for needed in ("RoostDeviceDown", "RoostDeploymentFailed", "RoostComponentBroken", "RoostInferenceLatencyHigh"):
        assert needed in alerts
    covered = {a for p in tests for t in yaml.safe_load(Path(p).read_text())["tests"]
               for a in (x["alertname"] for x in t.get("alert_rule_test", []))}
    assert alerts <= covered, alerts - covered  # every alert has a unit test


def test_a_broken_rule_fails_promtool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(up[5m]\n")
    assert _promtool("check", "rules", str(bad)).returncode != 0


def test_the_example_scrape_configuration_passes_promtool(tmp_path: Path) -> None:
    text = (DEPLOY / "prometheus" / "config" / "prometheus.yml").read_text()
    token = tmp_path / "token"
    token.write_text("x\n")
    text = text.replace("/etc/prometheus/roost-hub.token", str(token)).replace(
        "/etc/prometheus/roost-agent.token", str(token)).replace(
        "/etc/prometheus/roost/roost-rules.yml", str(DEPLOY / "prometheus" / "roost-rules.yml"))
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    checked = _promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboards_are_grafana_json_and_provisioned() -> None:
    files = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert len(files) == 5
    uids = set()
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids and dashboard["title"].startswith("Roost / ")
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and ids
        for panel in dashboard["panels"]:
            assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel
            assert panel["datasource"]["uid"] == "${datasource}" and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert dashboard["templating"]["list"][0]["name"] == "datasource"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "roost.yml").read_text())
    assert provider["providers"][0]["type"] == "file" and provider["providers"][0]["options"]["path"]
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
