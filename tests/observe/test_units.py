"""roost.observe's parts on their own: settings, the agent's endpoint (real sockets), the fleet page, service
discovery, snapshots, inference statistics, IPC counters and roost serve's reporter."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from roost.agent.ipc.counters import IpcCounters
from roost.errors import InvalidInputError, RoostError
from roost.hub.contract.metrics import MAX_SNAPSHOT_BYTES, MetricsSnapshot, ModelSample
from roost.hub.store.metrics import TargetRow
from roost.observe.discovery import targets
from roost.observe.endpoint import MetricsEndpoint
from roost.observe.fleet import FleetRow, render_fleet, snapshot_lines
from roost.observe.inference import BUCKETS, InferenceStats
from roost.observe.settings import MetricsSettings, parse_address, settings_from_options, token_digest
from roost.observe.snapshot import parse_snapshot, reported_endpoint
from roost.serve.reporting import MAX_SAMPLES, InferenceReporter, metric_name
from tests.conftest import InProcessCli

TOKEN = "a-token-of-twenty-chars"


# -- settings --------------------------------------------------------------------------------------
def test_settings_persist_in_the_root_with_the_tokens_hash_only(tmp_path: Path) -> None:
    assert MetricsSettings.load(tmp_path) == MetricsSettings(address="127.0.0.1:9464", token_sha256=None)
    (tmp_path / "t").write_text(TOKEN + "\nignored\n")
    settings_from_options(tmp_path, "0.0.0.0:9500", tmp_path / "t").save(tmp_path)
    saved = (tmp_path / "metrics.json").read_text()
    assert TOKEN not in saved and (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o600
    assert MetricsSettings.load(tmp_path) == MetricsSettings("0.0.0.0:9500", token_digest(TOKEN))
    settings_from_options(tmp_path, None, None).save(tmp_path)  # nothing given: unchanged
    assert MetricsSettings.load(tmp_path).token_sha256 == token_digest(TOKEN)
    settings_from_options(tmp_path, "off", None, no_token=True).save(tmp_path)
    assert MetricsSettings.load(tmp_path) == MetricsSettings(None, None)
    assert parse_address("[::1]:9464") == ("::1", 9464)


@pytest.mark.parametrize(("address", "token", "what"), [
    ("localhost", None, "is not HOST:PORT"), ("host:99999", None, "is not HOST:PORT"), (":80", None, "HOST:PORT"),
    (None, "missing", "No such file"), (None, "short", "at least 16 characters"), (None, "empty", "at least 16")])
def test_bad_settings_are_refused_naming_the_option(tmp_path: Path, address: str | None, token: str | None,
                                                   what: str) -> None:
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "empty").write_text("")
    with pytest.raises(InvalidInputError, match=what) as err:
        settings_from_options(tmp_path, address, tmp_path / token if token else None)
    assert err.value.code == "METRICS_SETTINGS_INVALID"


def test_a_malformed_settings_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{oops")
    with pytest.raises(InvalidInputError) as err:
        MetricsSettings.load(tmp_path)
    assert err.value.code == "METRICS_SETTINGS_INVALID" and "metrics.json" in err.value.message


def test_agent_start_refuses_a_bad_metrics_address_before_starting(cli_inproc: InProcessCli) -> None:
    proc = cli_inproc.run("agent", "start", "--metrics-address", "nowhere", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "METRICS_SETTINGS_INVALID" in proc.stdout + proc.stderr
    assert not (cli_inproc.root / "metrics.json").exists() and not (cli_inproc.root / "agent.pid").exists()


# -- the agent's endpoint (real sockets) ------------------------------------------------------------
async def _get(port: int, head: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _req(path: str = "/metrics", method: str = "GET", token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


async def test_the_endpoint_answers_metrics_with_the_token_and_refuses_without() -> None:
    endpoint = MetricsEndpoint("127.0.0.1:0", lambda: b"roost_up 1\n", token_digest(TOKEN))
    await endpoint.start()
    try:
        port = endpoint.bound[1]
        assert await _get(port, _req(token=TOKEN)) == (200, b"roost_up 1\n")
        for head, status, code in ((_req(), 401, "METRICS_TOKEN_REQUIRED"),
                                   (_req(token="wrong-token-xxxxxxxxx"), 401, "METRICS_TOKEN_INVALID"),
                                   (_req("/other", token=TOKEN), 404, "NOT_FOUND"),
                                   (_req(method="POST", token=TOKEN), 405, "METHOD_NOT_ALLOWED"),
                                   (b"garbage\r\n\r\n", 400, "BAD_REQUEST")):
            got, body = await _get(port, head)
            assert (got, json.loads(body)["error"]["code"]) == (status, code)
        _, oversized = await asyncio.open_connection("127.0.0.1", port)
        oversized.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n")  # over the head limit: closed
        await oversized.drain()
        oversized.close()
        assert (await _get(port, _req(token=TOKEN)))[0] == 200  # and the endpoint goes on
    finally:
        await endpoint.stop()


async def test_without_a_token_anyone_local_may_scrape() -> None:
    endpoint = MetricsEndpoint("127.0.0.1:0", lambda: b"x 1\n")
    await endpoint.start()
    try:
        assert await _get(endpoint.bound[1], _req()) == (200, b"x 1\n")
    finally:
        await endpoint.stop()


# -- fleet page, discovery, snapshots ---------------------------------------------------------------
def test_the_fleet_page_parses_with_device_and_group_labels() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    wine = ModelSample(requests_total=7, latency_p95_seconds=0.01)
    first = MetricsSnapshot(values={"cpu_ratio": 0.25, "components_broken": 1}, models={"wine": wine})
    rows = [FleetRow("a-1", ("lab", "zoo"), at, snapshot_lines(first)),
            FleetRow('odd"name', (), at, snapshot_lines(MetricsSnapshot(values={"cpu_ratio": 0.5}))),
            FleetRow("silent", (), at, "")]
    families = {f.name: f for f in text_string_to_metric_families(render_fleet(rows).decode())}
    cpu = {s.labels["device"]: (s.value, s.labels) for s in families["roost_fleet_cpu_ratio"].samples}
    assert cpu["a-1"] == (0.25, {"device": "a-1", "group": "lab"})
    assert cpu['odd"name'][0] == 0.5 and cpu['odd"name'][1]["group"] == ""
    info = {s.labels["device"]: s.labels["groups"] for s in families["roost_fleet_device_info"].samples}
    assert info == {"a-1": ",lab,zoo,", 'odd"name': "", "silent": ""}
    assert {s.labels["device"]: s.value for s in families["roost_fleet_components_broken"].samples} == {"a-1": 1.0}
    (req,) = families["roost_fleet_model_requests_total"].samples
    assert req.labels["model"] == "wine" and req.value == 7
    assert {s.value for s in families["roost_fleet_snapshot_timestamp_seconds"].samples} == {at.timestamp()}
    assert "roost_fleet_model_latency_p50_seconds" not in families  # nothing reported: no series


def test_service_discovery_makes_valid_label_names() -> None:
    (group,) = targets([TargetRow("d", ("lab-1",), {"machine.kind": "xavier"}, "10.0.0.7:9464", False)])
    assert group == {"targets": ["10.0.0.7:9464"], "labels": {
        "__meta_roost_device": "d", "__meta_roost_groups": ",lab-1,", "__meta_roost_token": "false",
        "__meta_roost_group_lab_1": "true", "__meta_roost_label_machine_kind": "xavier"}}


def test_wildcard_binds_are_reported_as_the_nodes_address(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text(json.dumps({"address": "10.1.2.3"}))
    assert reported_endpoint("0.0.0.0", 9464, tmp_path, "http://hub:8080") == "10.1.2.3:9464"
    assert reported_endpoint("127.0.0.1", 9464, tmp_path, "http://hub:8080") == "127.0.0.1:9464"
    assert reported_endpoint("::1", 9, tmp_path, "http://hub:8080") == "[::1]:9"


@pytest.mark.parametrize(("body", "code", "where"), [
    (b"x" * (MAX_SNAPSHOT_BYTES + 1), "METRICS_SNAPSHOT_TOO_LARGE", "at most"),
    (b"\xff\xfe", "METRICS_SNAPSHOT_INVALID", "not JSON"),
    (b"[]", "METRICS_SNAPSHOT_INVALID", "(body)"),
    (b'{"values": {"cpu_ratio": Infinity}}', "METRICS_SNAPSHOT_INVALID", "values.cpu_ratio"),
    (b'{"values": {"9lives": 1}}', "METRICS_SNAPSHOT_INVALID", "values"),
    (b'{"models": {"m": {"requests_total": -1}}}', "METRICS_SNAPSHOT_INVALID", "models.m.requests_total"),
    (json.dumps({"models": {f"m{i}": {} for i in range(17)}}).encode(), "METRICS_SNAPSHOT_INVALID", "models")])
def test_bad_snapshots_get_specific_errors(body: bytes, code: str, where: str) -> None:
    with pytest.raises(RoostError) as err:
        parse_snapshot(body)
    assert err.value.code == code and where in err.value.message


def test_a_good_snapshot_parses() -> None:
    snap = parse_snapshot(b'{"endpoint": "10.0.0.7:9464", "token": true, "values": {"cpu_ratio": 0.5}, '
                          b'"models": {"com.x:wine": {"requests_total": 3}}}')
    assert snap.values == {"cpu_ratio": 0.5} and snap.models["com.x:wine"].requests_total == 3 and snap.token


# -- inference, IPC counters, roost serve's reporter ---------------------------------------------------
class _M:
    def __init__(self, name: str, unit: str, value: float) -> None:
        self.name, self.unit, self.value = name, unit, value


def test_inference_stats_build_histograms_and_counts_per_model() -> None:
    stats = InferenceStats(max_models=2)
    stats.put("c", [_M("InferenceLatency.wine", "SECONDS", 0.003), _M("InferenceLatency.wine", "SECONDS", 0.2),
                    _M("InferenceRequests.wine", "COUNT", 5), _M("InferenceErrors.wine", "COUNT", 1),
                    _M("rows", "COUNT", 9), _M("InferenceLatency.wine", "COUNT", 9)])  # wrong unit: ignored
    stats.put("d", [_M("InferenceLatency", "SECONDS", 0.01)])  # no suffix: the component is the model
    stats.put("e", [_M("InferenceLatency", "SECONDS", 0.01)])  # a third model: over the bound, not recorded
    wine = stats.models[("c", "wine")]
    assert (wine.latency_count, wine.request_total, wine.errors) == (2, 5.0, 1.0)
    assert stats.models[("d", "d")].request_total == 1.0 and ("e", "e") not in stats.models
    assert wine.buckets[BUCKETS.index(0.005)] == 1 and 0.0025 < (wine.quantile(0.5) or 0) <= 0.005
    hist = next(f for f in stats.collect() if f.name == "roost_inference_latency_seconds")
    inf = [s for s in hist.samples if s.labels.get("le") == "+Inf" and s.labels["model"] == "wine"]
    assert inf[0].value == 2
    stats.forget("c")
    assert ("c", "wine") not in stats.models


def test_ipc_counters_fold_closed_connections_into_their_component() -> None:
    class Conn:
        def __init__(self, principal: str | None, n: int) -> None:
            self.principal, self.messages_in, self.bytes_in, self.bytes_out = principal, n, 10 * n, 20 * n

    counters = IpcCounters()
    closed, unauthenticated = Conn("a", 3), Conn(None, 7)
    counters.fold(closed)
    counters.fold(unauthenticated)
    counters.fold(closed)  # folded once: its fields were zeroed
    counters.refused("a")
    counters.dropped("b")
    totals = counters.totals([Conn("a", 1), Conn("c", 2)])
    assert (totals["a"].messages_in, totals["a"].bytes_in, totals["a"].refusals) == (4, 40, 1)
    assert totals["b"].drops == 1 and totals["c"].bytes_out == 40 and None not in totals


def test_metric_names_fit_the_greengrass_limit() -> None:
    assert metric_name("InferenceRequests", "wine-quality") == "InferenceRequests.wine-quality"
    assert metric_name("InferenceRequests", "a-much-longer-model-name") == "InferenceRequests"
    assert metric_name("InferenceLatency", "v1.2") == "InferenceLatency"  # a dot would split the name


async def test_the_reporter_sends_counts_and_a_bounded_latency_sample() -> None:
    """The reporter against a recorder of its calls (the agent's answer is tested end to end in
    tests/agent/test_component_metric.py; this checks what goes into one call)."""
    calls: list[dict[str, Any]] = []

    class Recorder:
        async def call(self, operation: str, request: dict[str, object], timeout: float = 5.0) -> dict[str, object]:
            calls.append({"operation": operation, **request})
            return {}

    reporter = InferenceReporter(Recorder(), "wine")
    for i in range(1000):
        reporter.observe(i / 1000)
    reporter.error()
    await reporter.flush()
    await reporter.flush()  # nothing new: nothing sent
    (call,) = calls
    metrics = call["metrics"]
    assert call["operation"] == "aws.greengrass#PutComponentMetric"
    assert metrics[0] == {"name": "InferenceRequests.wine", "unit": "COUNT", "value": 1000}
    assert metrics[1] == {"name": "InferenceErrors.wine", "unit": "COUNT", "value": 1}
    latencies = [m["value"] for m in metrics[2:]]
    assert len(latencies) == MAX_SAMPLES and all(0 <= v < 1 for v in latencies) and not math.isnan(sum(latencies))
    assert max(latencies) > 0.1  # a sample of all of them, not the first 64


def test_the_exposition_writes_what_prometheus_client_writes() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    from roost.observe.exposition import render

    class Families:
        def collect(self) -> Any:
            g = GaugeMetricFamily("roost_g", 'doc with \\ and\nnewline', labels=["component", "state"])
            for i, v in enumerate((1.0, 0.0, 2.5, 1e22, math.inf, -math.inf, 123456789.0, 0.1, math.nan)):
                g.add_metric([f'odd "name" \\ {i}\n', "RUNNING"], v)
            yield g
            c = CounterMetricFamily("roost_c", "c", labels=["a"])
            c.add_metric(["b"], 3.0)
            yield c
            h = HistogramMetricFamily("roost_h", "h", labels=["a"])
            h.add_metric(["b"], [("0.1", 1.0), ("+Inf", 2.0)], 0.5)
            yield h
            yield GaugeMetricFamily("roost_plain", "no labels", value=7.0)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families())
    Histogram("roost_live", "a live histogram", ["route"], registry=registry).labels("/x").observe(0.2)
    Counter("roost_other", "a live counter", registry=registry).inc()
    assert render(registry.collect()) == generate_latest(registry)
