"""Validation reports at the hub, the deployment gate, benchmarks and recommendation, with every refusal.

A small XGBoost wine model (and a pruned variant of it) is published to a real hub (uvicorn in a
thread); the CLI runs in process. Devices are enrolled through the API (no agent: the deployments
are only created, the rollout itself is the e2e test's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from roost.cli.main import app
from roost.hub.contract import Candidate
from roost.hub.store.models_gate import choose
from roost.learn.assess import file_sha256
from roost.learn.device_class import device_class
from roost.learn.lighten import optimize
from roost.learn.validation import write_validation_csv
from roost.serve.wine import FEATURES, holdout, load_wine, split
from tests.hub.conftest import HubServer, enroll_device, publish
from tests.hub.test_console import sign_in

runner = CliRunner()
WINE = "com.example.Wine"


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def _error(result: Any) -> str:
    return str(json.loads(result.stdout)["error"]["code"])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    x, y = load_wine()
    train, _ = split(len(x))
    booster = xgb.train({"max_depth": 3, "eta": 0.3, "base_score": 0.5, "nthread": 1, "seed": 1},
                        xgb.DMatrix(x[train], label=y[train], feature_names=list(FEATURES)), 30)
    booster.save_model(str(root / "wine.json"))
    hx, hy = holdout()
    write_validation_csv(root / "holdout.csv", hx, hy, FEATURES)
    return {"root": root, "xgb": root / "wine.json", "data": root / "holdout.csv"}


def _recipe(name: str, version: str) -> bytes:
    return (f'RecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: {version}\n'
            "Manifests:\n  - Platform: {os: linux}\n    Lifecycle:\n"
            "      Run: roost serve --model {artifacts:path}/model.json --engine xgboost\n"
            f"    Artifacts:\n      - URI: s3://b/{name}/{version}/model.json\n").encode()


def _report(value: float, data_sha: str = "a" * 64, **extra: Any) -> dict[str, Any]:
    return {"metric": "rmse", "value": value, "rows": 100, "data": "holdout.csv", "data_sha256": data_sha,
            "size_bytes": 1000, "latency_us": {"x86_64/cpu2/mem4g/none": 100.0}, **extra}


def test_validate_publish_and_show(models: dict[str, Path], hub_server: HubServer, tmp_path: Path) -> None:
    hub = ("--hub", hub_server.url, "--token", hub_server.token)
    with hub_server.client() as admin:
        assert publish(admin, WINE, "1.0.0", files={"model.json": models["xgb"].read_bytes()},
                       recipe=_recipe(WINE, "1.0.0")).status_code == 201
    done = _cli("model", "validate", f"{WINE}=1.0.0", "--data", str(models["data"]), "--latency-calls", "5", *hub,
                "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)["validation"]
    assert report["metric"] == "rmse" and 0.5 < report["value"] < 0.9 and report["rows"] == 1330
    assert report["data_sha256"] == file_sha256(models["data"]) and report["size_bytes"] == models["xgb"].stat().st_size
    assert list(report["latency_us"]) == [device_class(_labels())]
    shown = _cli("component", "show", WINE, "1.0.0", *hub, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["validation"]["value"] == report["value"]
    assert "validation" in _cli("component", "show", WINE, "1.0.0", *hub).stdout
    with httpx.Client(base_url=hub_server.url, timeout=30) as page:  # the console's components page
        sign_in(hub_server, page)
        html = page.get("/console/components").text
    assert f"rmse {report['value']:.4g}" in html and "holdout.csv (1330 rows)" in html

    # A variant published with --validate carries the same file's metric and its own gate.
    pruned = optimize(models["xgb"], "pruned", models["data"], out=tmp_path / "p", max_regression=0.05,
                      latency_calls=5)
    out = _cli("model", "publish", str(pruned.path), "--component", WINE, "--version", "1.1.0", "--validate",
               str(models["data"]), *hub, "--json")
    assert out.exit_code == 0, out.output
    validation = json.loads(out.stdout)["validation"]
    assert validation["data_sha256"] == report["data_sha256"] and validation["variant"]["passed"] is True
    assert validation["variant"]["regression"] == pytest.approx(pruned.variant.report.regression)

    # Bad input: data of the wrong schema; a model file that does not load; no such version.
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("alcohol,quality\n1,5\n")
    bad = _cli("model", "validate", f"{WINE}=1.0.0", "--data", str(wrong), *hub, "--json")
    assert bad.exit_code == 3 and _error(bad) == "VALIDATION_COLUMN_MISSING"
    with hub_server.client() as admin:
        assert publish(admin, "com.example.Broken", "1.0.0", files={"model.json": b"{not a model"},
                       recipe=_recipe("com.example.Broken", "1.0.0")).status_code == 201
    broken = _cli("model", "validate", "com.example.Broken=1.0.0", "--data", str(models["data"]), *hub, "--json")
    assert broken.exit_code == 3 and _error(broken) == "MODEL_UNREADABLE"
    gone = _cli("model", "validate", f"{WINE}=9.9.9", "--data", str(models["data"]), *hub, "--json")
    assert gone.exit_code == 4 and _error(gone) == "COMPONENT_NOT_FOUND"


def _labels() -> dict[str, str]:
    from roost.agent.enrolment import detect_labels

    return detect_labels()


def test_reports_that_contradict_their_numbers_are_refused(hub_server: HubServer) -> None:
    with hub_server.client() as admin:
        published = publish(admin, WINE, "2.0.0", files={"model.json": b"{}"}, recipe=_recipe(WINE, "2.0.0"))
        assert published.status_code == 201
        url = f"/v1/components/{WINE}/2.0.0/validation"
        lying = _report(0.8, variant={"metric_before": 0.7, "metric_after": 0.8, "regression": 0.01,
                                      "max_regression": 0.05, "passed": True})  # 0.7 -> 0.8 is +14 %
        r = admin.put(url, json=lying)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_REPORT_INCONSISTENT"
        claims = _report(0.8, variant={"metric_before": 0.7, "metric_after": 0.8, "regression": 0.142857142857,
                                       "max_regression": 0.05, "passed": True})  # passed, though 14 % > 5 %
        r = admin.put(url, json=claims)
        assert r.status_code == 422 and "passed=True" in r.json()["error"]["message"]
        r = admin.put(url, json={**_report(0.8), "metric": "accuracy", "value": 1.5})
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_REPORT_INCONSISTENT"
        r = admin.put(url, json={**_report(0.8), "baseline": {"version": "1.0.0", "value": 0.7, "regression": -0.1}})
        assert r.status_code == 422 and "baseline 1.0.0" in r.json()["error"]["message"]  # 0.7 -> 0.8 is +14 %
        r = admin.get(url)
        assert r.status_code == 404 and r.json()["error"]["code"] == "VALIDATION_REPORT_MISSING"


def test_the_gate_refuses_a_regression_unless_overridden_with_a_reason(hub_server: HubServer) -> None:
    enroll_device(hub_server, "gate-dev")
    hub = ("--hub", hub_server.url, "--token", hub_server.token)
    with hub_server.client() as admin:
        for version, value, sha in (("1.0.0", 0.70, "a"), ("1.1.0", 0.705, "a"), ("1.2.0", 0.80, "a"),
                                    ("1.3.0", 0.60, "b")):
            assert publish(admin, "com.example.M", version, files={"model.json": b"{}"},
                           recipe=_recipe("com.example.M", version)).status_code == 201
            r = admin.put(f"/v1/components/com.example.M/{version}/validation", json=_report(value, sha * 64))
            assert r.status_code == 200, r.text

    def deploy(version: str, *extra: str) -> Any:
        return _cli("deployment", "create", "--target", "device:gate-dev", "--component", f"com.example.M={version}",
                    *extra, *hub, "--json")

    first = deploy("1.0.0")  # nothing deployed before: nothing to compare with
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["gate"][0]["baseline_source"] == "none"
    # 0.70 -> 0.705 is +0.7 %: within the default 1 %.
    ok = json.loads(deploy("1.1.0").stdout)
    assert ok["gate"][0]["baseline_version"] == "1.0.0" and ok["gate"][0]["passed"] is True
    # 0.705 -> 0.80 is +13 %: refused, nothing deployed.
    refused = deploy("1.2.0")
    assert refused.exit_code == 7 and _error(refused) == "DEPLOYMENT_GATE_FAILED"
    assert "13.4" in json.loads(refused.stdout)["error"]["message"]
    wider = deploy("1.2.0", "--max-regression", "0.2")
    assert wider.exit_code == 0, wider.output  # the operator's gate: 20 %
    # Against a named baseline (1.0.0: 0.70 -> 0.80, +14 %) with the default gate: refused.
    named = deploy("1.2.0", "--baseline", "com.example.M=1.0.0")
    assert named.exit_code == 7 and _error(named) == "DEPLOYMENT_GATE_FAILED"
    no_reason = deploy("1.2.0", "--baseline", "com.example.M=1.0.0", "--override-gate")
    assert no_reason.exit_code == 3 and _error(no_reason) == "GATE_OVERRIDE_REASON_MISSING"
    forced = deploy("1.2.0", "--baseline", "com.example.M=1.0.0", "--override-gate", "--override-reason",
                    "hotfix: the old model misreads the new sensor")
    assert forced.exit_code == 0, forced.output
    gate = json.loads(forced.stdout)["gate"][0]
    assert gate["overridden"] is True and gate["passed"] is False and gate["reason"].startswith("hotfix")
    shown = _cli("deployment", "status", json.loads(forced.stdout)["id"], *hub, "--json")
    assert json.loads(shown.stdout)["gate"][0]["reason"].startswith("hotfix")
    # Validated on other data: cannot be compared.
    other = deploy("1.3.0")
    assert other.exit_code == 3 and _error(other) == "GATE_BASELINE_INCOMPARABLE"
    # An explicit gate on a version without a report.
    with hub_server.client() as admin:
        assert publish(admin, "com.example.M", "0.9.0", files={"model.json": b"{}"},
                       recipe=_recipe("com.example.M", "0.9.0")).status_code == 201
    bare = deploy("0.9.0", "--max-regression", "0.01")
    assert bare.exit_code == 3 and _error(bare) == "VALIDATION_REPORT_MISSING"
    # A client of the model (never validated: not a model) deploys beside it under an explicit gate.
    with hub_server.client() as admin:
        assert publish(admin, "com.example.Client", "1.0.0", files={"model.json": b"{}"},
                       recipe=_recipe("com.example.Client", "1.0.0")).status_code == 201
    both = deploy("1.1.0", "--component", "com.example.Client=1.0.0", "--max-regression", "0.2")
    assert both.exit_code == 0, both.output
    assert [g["component"] for g in json.loads(both.stdout)["gate"]] == ["com.example.M"]


def test_recommendation_from_benchmarks_per_device_class(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "rec-dev")
    klass = device_class({"arch": "x86_64"})  # what enroll_device gives the device
    hub = ("--hub", hub_server.url, "--token", hub_server.token)
    with hub_server.client() as admin:
        for name, value in (("com.example.Full", 0.70), ("com.example.Pruned", 0.72), ("com.example.Tiny", 0.95)):
            assert publish(admin, name, "1.0.0", files={"model.json": b"{}"},
                           recipe=_recipe(name, "1.0.0")).status_code == 201
            assert admin.put(f"/v1/components/{name}/1.0.0/validation", json=_report(value)).status_code == 200
    none_yet = _cli("model", "recommend", "--device", "rec-dev", *hub, "--json")
    assert none_yet.exit_code == 4 and _error(none_yet) == "BENCHMARK_MISSING"
    assert "roost model benchmark" in json.loads(none_yet.stdout)["error"]["message"]
    unknown = _cli("model", "recommend", "--device", "nobody", *hub, "--json")
    assert unknown.exit_code == 4 and _error(unknown) == "DEVICE_NOT_FOUND"

    device = httpx.Client(base_url=hub_server.url, headers={"Authorization": f"Bearer {credential}"}, timeout=30)
    with device:
        def record(*measurements: dict[str, Any]) -> httpx.Response:
            return device.post("/v1/device/benchmarks", json={"measurements": list(measurements)})
        r = record({"component": "com.example.Full", "version": "1.0.0", "latency_us": 900.0, "calls": 300},
                   {"component": "com.example.Pruned", "version": "1.0.0", "latency_us": 300.0, "calls": 300},
                   {"component": "com.example.Tiny", "version": "1.0.0", "latency_us": 20.0, "calls": 300})
        assert r.status_code == 200, r.text
        assert {x["device_class"] for x in r.json()} == {klass}
        for bad in ({"latency_us": -1.0}, {"latency_us": 0.0}, {"calls": 0}, {"version": "7.0.0"}):
            one = {"component": "com.example.Full", "version": "1.0.0", "latency_us": 5.0, "calls": 3, **bad}
            r = record(one)
            assert r.status_code == 422 and r.json()["error"]["code"] == "BENCHMARK_RECORD_INVALID", (bad, r.text)
        r = device.post("/v1/device/benchmarks", content=b'{"measurements": [{"component": "com.example.Full", '
                        b'"version": "1.0.0", "latency_us": NaN, "calls": 3}]}',
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert device.get("/v1/models/benchmarks").status_code in (401, 403)  # admins read
    with hub_server.client() as admin:
        assert admin.post("/v1/device/benchmarks", json={"measurements": []}).status_code in (401, 403)
        listed = admin.get("/v1/models/benchmarks", params={"device_class": klass}).json()
        assert {(b["component"], b["latency_us"]) for b in listed} >= {("com.example.Full", 900.0)}

    best = _cli("model", "recommend", "--device", "rec-dev", "--max-latency-ms", "0.5", *hub, "--json")
    assert best.exit_code == 0, best.output
    doc = json.loads(best.stdout)
    assert doc["chosen"] == "com.example.Pruned=1.0.0" and doc["device_class"] == klass
    why = {c["component"]: c for c in doc["candidates"]}
    assert why["com.example.Full"]["meets"] is False and "0.9 ms > 0.5 ms" in why["com.example.Full"]["why"]
    assert why["com.example.Tiny"]["meets"] is True and "not better" in why["com.example.Tiny"]["why"]
    assert "chosen" in why["com.example.Pruned"]["why"]
    people = _cli("model", "recommend", "--device", "rec-dev", "--max-latency-ms", "0.5", *hub)
    assert people.exit_code == 0 and "chosen: com.example.Pruned=1.0.0" in people.stdout
    # No candidate meets both: the nearest is named.
    tight = _cli("model", "recommend", "--device", "rec-dev", "--max-latency-ms", "0.1", "--min-metric", "0.75",
                 *hub, "--json")
    assert tight.exit_code == 7 and _error(tight) == "NO_CANDIDATE_FITS"
    assert "nearest is com.example.Tiny" in json.loads(tight.stdout)["error"]["message"]
    with hub_server.client() as admin:
        r = admin.get("/v1/models/recommend", params={"device": "rec-dev", "component": "com.example.Full"})
        assert r.status_code == 200 and r.json()["chosen"] == "com.example.Full=1.0.0"


def test_choose_and_device_classes() -> None:
    rows = [Candidate(component="a", version="1", metric="accuracy", value=0.9, latency_us=10, why=""),
            Candidate(component="b", version="1", metric="accuracy", value=0.9, latency_us=5, why=""),
            Candidate(component="c", version="1", metric="accuracy", value=0.95, latency_us=None, why="")]
    out = {c.component: c for c in choose(rows, None, 0.85)}
    assert out["b"].chosen and not out["a"].chosen and "not measured" in out["c"].why  # tie: lower latency
    assert device_class({"arch": "aarch64", "cpus": "6", "memory_mb": "7800", "accelerator": "jetson"}) == \
        "aarch64/cpu4/mem4g/jetson"
    assert device_class({"arch": "x86_64", "cpus": "2", "memory_mb": "512"}, ["nvidia.com/gpu"]) == \
        "x86_64/cpu2/mem0g/nvidia.com/gpu"
