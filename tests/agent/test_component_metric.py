"""PutComponentMetric: validation as the nucleus does it, the bounded store, and end to end a
component written with awsiotsdk reporting metrics that `roost component metrics` reads back."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from roost.agent.component_metrics import ComponentMetrics, Metric, canonical_unit, parse_metrics
from roost.errors import ConflictError, InvalidInputError
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module


def test_units_match_as_the_nucleus_matches_them() -> None:
    assert canonical_unit("BYTES_PER_SECOND") == "BYTES_PER_SECOND"
    assert canonical_unit("BytesPerSecond") == "BYTES_PER_SECOND"
    assert canonical_unit("count") == "COUNT"
    for bad in ("PARSECS", "", None, 3):
        with pytest.raises(InvalidInputError) as err:
            canonical_unit(bad)
        assert err.value.code == "METRIC_INVALID" and "BYTES, BYTES_PER_SECOND" in err.value.message


@pytest.mark.parametrize(("request_doc", "words"), [
    ({}, "non-empty list"),
    ({"metrics": []}, "non-empty list"),
    ({"metrics": "x"}, "non-empty list"),
    ({"metrics": [5]}, "metrics[0] must be an object"),
    ({"metrics": [{"unit": "COUNT", "value": 1}]}, "metrics[0].name must be a non-empty string"),
    ({"metrics": [{"name": "n" * 33, "unit": "COUNT", "value": 1}]}, "33 bytes long; the limit is 32 bytes"),
    ({"metrics": [{"name": "é" * 17, "unit": "COUNT", "value": 1}]}, "34 bytes long"),
    ({"metrics": [{"name": "ok", "unit": "COUNT", "value": 1}, {"name": "ok", "unit": "LIGHTYEARS", "value": 1}]},
     "'LIGHTYEARS' is not one of"),
    ({"metrics": [{"name": "ok", "unit": "COUNT", "value": -1}]}, "metrics[0].value must not be negative"),
    ({"metrics": [{"name": "ok", "unit": "COUNT", "value": "7"}]}, "must be a finite number"),
    ({"metrics": [{"name": "ok", "unit": "COUNT", "value": True}]}, "must be a finite number"),
    ({"metrics": [{"name": "ok", "unit": "COUNT", "value": float("inf")}]}, "must be a finite number"),
])
def test_bad_requests(request_doc: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_metrics(request_doc)
    assert err.value.code == "METRIC_INVALID" and words in err.value.message, err.value.message


def test_store_keeps_latest_count_sum_min_max_and_is_bounded() -> None:
    store = ComponentMetrics(max_components=2, max_metrics=2)
    store.put("a", [Metric("rows", "COUNT", 5.0), Metric("rows", "COUNT", 3.0)], now=10.0)
    store.put("a", [Metric("rows", "COUNT", 7.0), Metric("lag", "SECONDS", 0.5)], now=11.0)
    assert store.snapshot("a") == {"a": {
        "lag": {"unit": "SECONDS", "value": 0.5, "count": 1, "sum": 0.5, "min": 0.5, "max": 0.5, "updatedAt": 11.0},
        "rows": {"unit": "COUNT", "value": 7.0, "count": 3, "sum": 15.0, "min": 3.0, "max": 7.0, "updatedAt": 11.0}}}
    with pytest.raises(ConflictError) as err:
        store.put("a", [Metric("third", "COUNT", 1.0)])
    assert err.value.code == "METRIC_LIMIT" and "at most 2 metric names" in err.value.message
    assert store.snapshot("a")["a"]["rows"]["count"] == 3  # the refused request changed nothing
    store.put("b", [Metric("x", "BYTES", 1.0)])
    with pytest.raises(ConflictError):
        store.put("c", [Metric("x", "BYTES", 1.0)])
    assert sorted(store.snapshot()) == ["a", "b"] and store.snapshot("zzz") == {}
    store.forget("a")
    assert sorted(store.snapshot()) == ["b"]


REPORTER = textwrap.dedent("""
    import threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import (InvalidArgumentsError, Metric, MetricUnitType,
                                                UnauthorizedError)

    ipc = GreengrassCoreIPCClientV2()
    ipc.put_component_metric(metrics=[Metric(name="rows", unit=MetricUnitType.COUNT, value=5),
                                      Metric(name="latency", unit=MetricUnitType.SECONDS, value=0.25)])
    ipc.put_component_metric(metrics=[Metric(name="rows", unit=MetricUnitType.COUNT, value=3)])
    for label, metric in (("negative", Metric(name="rows", unit=MetricUnitType.COUNT, value=-1)),
                          ("unit", Metric(name="rows", unit="PARSECS", value=1)),
                          ("secret", Metric(name="secret", unit=MetricUnitType.COUNT, value=1))):
        try:
            ipc.put_component_metric(metrics=[metric])
            print("accepted", label, flush=True)
        except (InvalidArgumentsError, UnauthorizedError) as err:
            print("refused", label, type(err).__name__, err.message, flush=True)
    print("reported", flush=True)
    threading.Event().wait()
""")

NAME = "com.test.Reporter"
POLICY = {"aws.greengrass.ipc.componentmetric": {f"{NAME}:metrics:1": {
    "operations": ["aws.greengrass#PutComponentMetric"], "resources": ["rows", "latency"]}}}


def test_awsiotsdk_component_reports_metrics_the_cli_reads(agent: Cli, tmp_path: Path) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    ws = Workspace(tmp_path / "ws")
    ws.component(NAME, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/r.py"},
                 files={"r.py": REPORTER}, config={"accessControl": POLICY})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", f"{NAME}=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    log_path = agent.root / "logs" / f"{NAME}.log"
    log = wait_until(lambda: log_path.exists() and "reported" in log_path.read_text() and log_path.read_text(),
                     what="the reporter")
    assert "refused negative InvalidArgumentsError" in log and "must not be negative" in log, log
    assert "refused unit InvalidArgumentsError" in log and "'PARSECS' is not one of" in log, log
    assert "refused secret UnauthorizedError" in log, log
    assert "aws.greengrass.ipc.componentmetric:aws.greengrass#PutComponentMetric on resource secret" in log, log
    assert "accepted" not in log, log
    found = agent.json("component", "metrics", NAME)
    rows = found[NAME]["rows"]
    assert (rows["unit"], rows["value"], rows["count"], rows["sum"], rows["min"], rows["max"]) == \
        ("COUNT", 3.0, 2, 8.0, 3.0, 5.0)
    assert found[NAME]["latency"]["value"] == 0.25 and "secret" not in found[NAME]
    assert NAME in agent.json("component", "metrics")
    text = agent.run("component", "metrics")
    assert text.returncode == 0 and "latency" in text.stdout and "rows" in text.stdout
