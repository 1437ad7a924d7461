"""bench/README.md tells the truth: the results files it names exist, and its tables show the
numbers those files hold (rounded as printed). Historical notes are exempt by name.

A table row is checked cell by cell: a cell "shows" a value if one of the numbers printed in it is
that value rounded to the decimals printed (``4,715`` shows 4715.3, ``0.97`` shows 0.9667).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
README = BENCH / "README.md"
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(k?)")


def _load(name: str) -> Any:
    return json.loads((BENCH / name).read_text())


def numbers(text: str) -> list[tuple[float, float]]:
    """(value, half of its last printed digit) for each number printed in ``text`` (``391.0k`` = 391,000)."""
    out = []
    for whole, frac, kilo in NUMBER.findall(text):
        value = float(whole.replace(",", "") + frac)
        step = 10.0 ** -(len(frac) - 1) if frac else 1.0
        scale = 1000.0 if kilo else 1.0
        out.append((value * scale, step * scale / 2))
    return out


def shows(cell: str, value: float) -> bool:
    return any(abs(v - value) <= half + 1e-9 for v, half in numbers(cell))


def test_numbers_and_shows() -> None:
    assert numbers("4,715 / 2,899") == [(4715.0, 0.5), (2899.0, 0.5)]
    assert shows("**0.97 s**", 0.9667) and not shows("0.97 s", 0.99)
    assert shows("391.0k", 391_047) and shows("24.5 s", 24.47) and not shows("24.5 s", 24.4)


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    nxt = re.search(r"^#{2,3} ", text[start + len(heading):], re.M)
    return text[start: start + len(heading) + (nxt.start() if nxt else len(text))]


def table_rows(heading: str, nth: int = 0) -> list[list[str]]:
    """The body rows (lists of cells) of the ``nth`` markdown table under ``heading``."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in section(heading).splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
                continue  # the header row
            if not set(cells[0]) <= set("-:"):
                current.append(cells)
        else:
            current = None
    return tables[nth]


def table(heading: str, nth: int = 0) -> dict[str, list[str]]:
    """The ``nth`` markdown table under ``heading``: first cell → the other cells (first cells unique)."""
    rows = table_rows(heading, nth)
    out = {cells[0]: cells[1:] for cells in rows}
    assert len(out) == len(rows), f"repeated first cells under {heading}"
    return out


def test_every_results_file_named_exists_and_every_results_file_is_named() -> None:
    text = README.read_text()
    named = set(re.findall(r"results-[\w-]+\.json", text))
    on_disk = {p.name for p in BENCH.glob("results-*.json")}
    assert sorted(named - on_disk) == [], "named in bench/README.md but not committed"
    assert sorted(on_disk - named) == [], "committed but never cited in bench/README.md"


@pytest.mark.parametrize(("heading", "results"), [
    ("### Run 1: the agent as", "results-default.json"),
    ("### Run 2: the agent under uvloop", "results-agent-uvloop.json"),
    ("### Direct channels (issue 10)", "results-ipc.json"),
])
def test_ipc_run_tables(heading: str, results: str) -> None:
    data = _load(results)
    rows = table(heading)
    by_label = {
        "Roost client (asyncio loop) ↔ direct": data["variants"].get("roost-direct"),
        "Roost client (uvloop) ↔ direct": data["variants"].get("roost-direct-uvloop"),
        "Roost client (asyncio loop) ↔": data["variants"]["roost"],
        "Roost client (uvloop) ↔": data["variants"]["roost-uvloop"],
        "awsiotsdk V2": data["variants"].get("aws"),
        "Mosquitto + paho": None, "NATS": None, "ZeroMQ": None, "asyncio Unix socket": None,
        "blocking Unix socket": None,
    }
    peers = {r["transport"]: r for r in data["peers"]["results"]}
    peer_of = {"Mosquitto + paho": "mqtt-thr", "NATS": "nats", "ZeroMQ": "zmq", "asyncio Unix socket": "uds-async",
               "blocking Unix socket": "uds-sync"}
    checked = 0
    for label, cells in rows.items():
        key = next(k for k in by_label if label.startswith(k))
        row = by_label[key] if key not in peer_of else peers[peer_of[key]]
        assert row is not None, label
        for col, field in ((0, "median_us"), (1, "p99_us"), (3, "pipe_rps")):
            assert shows(cells[col], row[field]), (results, label, cells[col], row[field])
        checked += 1
    assert checked == len(rows) >= 7


def test_ipc_summary_and_targets_show_the_quiet_run() -> None:
    data = _load("results-ipc.json")
    rows = table("## Summary")
    v, mqtt = data["variants"], next(r for r in data["peers"]["results"] if r["transport"] == "mqtt-thr")
    rtt = next(c for k, c in rows.items() if k.startswith("IPC round trip"))
    for value in (v["roost-uvloop"]["median_us"], mqtt["median_us"], v["roost-uvloop"]["p99_us"], mqtt["p99_us"],
                  v["roost-uvloop"]["median_us"] / mqtt["median_us"], v["roost"]["median_us"]):
        assert shows(" ".join(rtt), value), (rtt, value)
    direct = next(c for k, c in rows.items() if k.startswith("Direct-channel round trip"))
    for value in (v["roost-direct-uvloop"]["median_us"], mqtt["median_us"], v["roost-direct-uvloop"]["p99_us"],
                  v["roost-direct-uvloop"]["median_us"] / mqtt["median_us"], v["roost-direct"]["median_us"]):
        assert shows(" ".join(direct), value), (direct, value)
    assert v["roost-direct"]["direct_channel"] and v["roost-direct-uvloop"]["direct_channel"]
    direct_pipe = next(c for k, c in rows.items() if k.startswith("Direct-channel pipelined"))
    assert shows(" ".join(direct_pipe), v["roost-direct-uvloop"]["pipe_rps"] / mqtt["pipe_rps"])
    pipe = next(c for k, c in rows.items() if k.startswith("IPC pipelined"))
    assert shows(pipe[0], v["roost-uvloop"]["pipe_rps"]) and shows(pipe[0], mqtt["pipe_rps"])
    assert shows(next(c for k, c in rows.items() if k.startswith("agent idle RSS"))[0], data["agent"]["idle_rss_mb"])
    start = next(c for k, c in rows.items() if k.startswith("`agent start`"))[0]
    assert shows(start, data["start"]["start_to_running_median_s"])
    targets = table("## Targets (Roost client)")
    assert shows(targets["idle RSS ≤ 60 MB"][0], data["agent"]["idle_rss_mb"])
    assert shows(targets["start → RUNNING ≤ 1.5 s"][0], data["start"]["start_to_running_median_s"])
    assert "**Met**" in targets["start → RUNNING ≤ 1.5 s"][0]  # the summary and the targets agree


def test_inference_results_table() -> None:
    data = _load("results-inference-quick.json")
    rows = table("### Results: `bench/results-inference-quick.json`")
    engines = {"peer: Lambda": data["peers"]["engines"]["lambda"]["results"],
               "peer: `Booster.inplace_predict`": data["peers"]["engines"]["inplace"]["results"],
               "peer: `DMatrix`": data["peers"]["engines"]["dmatrix"]["results"],
               "peer: treelite → tl2cgen": data["peers"]["engines"]["tl2cgen"]["results"],
               "peer: onnxmltools": data["peers"]["engines"]["onnxrt"]["results"],
               "Roost `xgboost`": data["compute"]["backends"]["xgboost"]["results"],
               "**Roost `compiled`": data["compute"]["backends"]["compiled"]["results"],
               "Roost `onnx`": data["compute"]["backends"]["onnx"]["results"],
               "Roost request path": data["compute"]["paths"]["roost"]}
    assert len(rows) == len(engines)
    for label, cells in rows.items():
        results = {r["batch"]: r for r in engines[next(k for k in engines if label.startswith(k))]}
        for col, batch in enumerate((1, 40, 1000)):
            median, p99 = cells[col].split(" / ")
            assert shows(median, results[batch]["median_us"]), (label, batch)
            assert shows(p99, results[batch]["p99_us"]), (label, batch)
        assert shows(cells[3], results[1000]["rows_per_s"]), label
    summary = " ".join(" ".join(c) for c in table("## Summary").values())
    for value in (data["e2e"]["serve"]["median_us"], data["e2e"]["serve-direct"]["median_us"],
                  data["compute"]["paths"]["lambda_samples"]["median_us"],
                  data["load"]["batched"]["rps"], data["load"]["unbatched"]["rps"],
                  data["load"]["batched"]["avg_batch"]):
        assert shows(summary, value), value


@pytest.mark.parametrize("results", ["results-fleet.json", "results-fleet-1worker.json"])
def test_fleet_table(results: str) -> None:
    rows = table_rows("### Results (2026-11-22, 03:22\u201303:40 UTC)")
    found = 0
    for run in _load(results):
        db = {"postgres": "PostgreSQL", "sqlite": "SQLite"}[run["db"]]
        label = f"{run['devices']:,}"
        matches = [c[1:] for c in rows if c[0] == label and c[1] == db and c[2] == str(run["workers"])]
        assert len(matches) == 1, (label, db, run["workers"])
        cells = matches[0]
        assert shows(cells[2], run["all_succeeded_seconds"]), (label, db, cells[2])
        assert shows(cells[3], run["client_last_succeeded_seconds"])
        assert shows(cells[4], run["hub_rss_before_mb"]) and shows(cells[4], run["hub_rss_peak_mb"])
        assert shows(cells[5], run["hub_cpu_seconds"])
        api = run["api_latency_ms"]
        assert shows(cells[8], api["p50"] / 1000) and shows(cells[8], api["p99"] / 1000)
        assert shows(cells[9], run["delivery_s"]["p50"]) and shows(cells[9], run["delivery_s"]["p99"])
        assert shows(cells[10], run["enrol_seconds"]) and shows(cells[10], run["first_sync_seconds"])
        found += 1
    assert found >= 2


def test_request_path_breakdown_shows_its_file() -> None:
    data = _load("results-request-path.json")
    text = section("## Summary")
    paragraph = text[text.index("`bench/results-request-path.json`"):][:400]
    for step in ("unwrap_event (orjson)", "decode_tabular", "compiled predict", "whole path",
                 "peer: Booster.inplace_predict"):
        assert shows(paragraph, data["steps"][step]["median_us"]), (step, paragraph)
    assert shows(paragraph, data["path_vs_inplace_rows_per_s"])


def test_cluster_table_and_summary_show_their_file() -> None:
    data = _load("results-cluster.json")
    live, scale = data["live"], data["admission"]
    rows = table("## `bench/cluster.py`: edge clusters (issue 11)")

    def row(prefix: str) -> str:
        return " ".join(next(cells for label, cells in rows.items() if label.startswith(prefix)))

    warm = row("request → ready endpoint, warm")
    assert shows(warm, live["warm_client_ms"]["p50"]) and shows(warm, live["warm_ready_ms"]["p50"])
    cold = row("request → ready endpoint, cold")
    assert shows(cold, live["cold_ready_ms"]["p50"]) and shows(cold, live["cold_ready_ms"]["p50"] / 5000)
    wine = live["windows_wine"]
    binary = row("40-row window round trip, wine, binary")
    assert shows(binary, wine["binary"]["e2e_ms"]["p50"]) and shows(binary, wine["original_40_frames"]["e2e_ms"]["p50"])
    assert shows(binary, wine["binary"]["rtt_p50_vs_original"])
    size = row("bytes per 40-row window, wine")
    assert shows(size, wine["binary"]["total_bytes_per_window"]) and shows(size, wine["binary"]["bytes_vs_original"])
    assert wine["binary"]["bytes_vs_original"] <= 1 / 3
    driving = row("40-row window, the original's CAN-bus rows")
    assert shows(driving, live["windows_driving"]["binary"]["e2e_ms"]["p50"])
    assert shows(driving, live["windows_driving"]["binary"]["bytes_vs_original"])
    assert shows(row("switch to the centre"), live["switch_to_centre_cold_ms"]["p50"])
    assert shows(row("admission decision"), scale["sqlite"]["placement_only"]["p99_ms"])
    sqlite_warm = row("admission transaction, warm")
    assert shows(sqlite_warm, scale["sqlite"]["warm"]["p50_ms"])
    assert shows(sqlite_warm, scale["sqlite"]["warm"]["p99_ms"])
    assert shows(row("the same on PostgreSQL"), scale["postgresql"]["warm"]["p50_ms"])
    summary = " ".join(" ".join(c) for k, c in table("## Summary").items() if k.startswith("edge cluster"))
    for value in (live["cold_ready_ms"]["p50"], live["warm_client_ms"]["p50"], wine["binary"]["e2e_ms"]["p50"],
                  wine["binary"]["bytes_vs_original"], scale["sqlite"]["warm"]["p99_ms"]):
        assert shows(summary, value), value


def test_lightening_table_shows_its_file() -> None:
    data = _load("results-lighten.json")
    heading = "## Lightening: `bench/lighten.py`"
    rows = table(heading)
    found = {(v["model"], v["target"], json.dumps(v.get("options", {}), sort_keys=True)): v for v in data["variants"]}

    def variant(label: str) -> dict[str, Any]:
        name, rest = label.split(" → ")
        model = {"sample": "sample", "seed": "seed", "wine MLP": "mlp", "image fp32 reconstruction": "image-fp32"}[name]
        target = rest.split()[0].rstrip(",")
        options: dict[str, str] = {}
        if target == "pruned":
            options["max_regression"] = {"1 %": "0.01", "2 %": "0.02", "5 %": "0.05"}[label.split(", ")[1][:3]]
        if target == "int8":
            options["int8_mode"] = rest.split()[1]
            if model == "image-fp32":
                options["max_regression"] = "0.25"
        return found[(model, target, json.dumps(options, sort_keys=True))]  # type: ignore[no-any-return]

    assert len(rows) == len([v for v in data["variants"] if "report" in v]) == 12
    for label, (gate, metric, loss, publishable, size, latency, ratio) in rows.items():
        v = variant(label)
        r = v["report"]
        assert shows(gate, r["max_regression"] * 100), label
        assert shows(metric, r["metric_before"]) and shows(metric, r["metric_after"]), label
        assert shows(loss, abs(r["regression"]) * 100) and (r["regression"] < 0) == loss.startswith("-"), label
        assert publishable.startswith("yes") == v["publishable"] == r["passed"], label
        assert shows(size, r["size_bytes_before"]) and shows(size, r["size_bytes"]), label
        assert shows(latency, r["latency_us_before"]) and shows(latency, r["latency_us"]), label
        if "trees_after" in r["details"]:
            assert shows(label, r["details"]["trees_after"]), label
        base = data["inplace_predict_batch1_us"].get(v["model"], r["latency_us_before"])
        assert shows(ratio, r["latency_us"] / base), label
        assert ("agreement" in metric) == (r["measured_against"] == "agreement"), label
    text = section(heading)
    for model, us in data["inplace_predict_batch1_us"].items():
        assert shows(text, us), model
    for engine, us in data["peers"]["batch1_median_us"].items():
        assert shows(text, us), engine
    assert shows(text, data["validation_rows"]) and shows(text, data["calls"]) and shows(text, data["image_calls"])
    for v in data["variants"]:
        if "refused" in v:
            assert f"`{v['refused']}`" in text, v


def test_metrics_table_shows_its_file() -> None:
    data = _load("results-metrics.json")
    agent, fleet = data["agent"], data["fleet"]
    rows = table("## `bench/metrics.py`: metrics endpoints (issue 12)")

    def row(prefix: str) -> list[str]:
        return next(cells for label, cells in rows.items() if label.startswith(prefix))

    scrape = row("agent `/metrics`, 100 components")
    assert shows(scrape[0], agent["scrape_ms"]["p50"]) and shows(scrape[0], agent["scrape_ms"]["p99"])
    assert shows(scrape[0], agent["series"]) and shows(scrape[0], agent["bytes"]) and agent["components"] == 100
    assert shows(scrape[1], agent["peer"]["http_ms"]["p50"])
    assert shows(scrape[1], agent["peer"]["generate_latest_ms"]["p50"])
    assert shows(scrape[2], agent["ratio_vs_peer_http_p50"])
    assert ("met" in scrape[3]) == (agent["scrape_ms"]["p50"] <= data["targets"]["agent_scrape_ms"])
    page = row("hub `/metrics/fleet`, 10,000 devices")
    assert fleet["devices"] == 10_000
    assert shows(page[0], fleet["http_ms"]["p50"]) and shows(page[0], fleet["http_ms"]["p99"])
    assert shows(page[0], fleet["series"]) and shows(page[0], fleet["bytes"] / 1e6)
    assert shows(page[1], fleet["peer"]["generate_latest_ms"]["p50"])
    assert shows(page[2], fleet["ratio_vs_peer_generate_latest_p50"])
    assert ("met" in page[3]) == (fleet["http_ms"]["p50"] <= 1000 * data["targets"]["fleet_10k_s"])
    parts = row("of which")
    assert shows(parts[0], fleet["store_read_ms"]["p50"]) and shows(parts[0], fleet["render_ms"]["p50"])
    assert shows(parts[2], fleet["render_vs_peer_generate_latest_p50"])
    notes = section("## `bench/metrics.py`: metrics endpoints (issue 12)")
    assert shows(notes, agent["agent_rss_mb"])
    assert shows(notes, data["load_before"]) and shows(notes, data["load_after"])


def test_provision_table_shows_its_file() -> None:
    data = _load("results-provision.json")
    rows = table("## `bench/provision.py`: `roost device add` over SSH to the first deployment (issue 12)")

    def row(prefix: str) -> list[str]:
        return next(cells for label, cells in rows.items() if label.startswith(prefix))

    for prefix, key in (("hub, dependencies from the hub's wheelhouse", "wheelhouse"),
                        ("hub, dependencies from the package index", "index"), ("by hand over SSH", "manual")):
        cells, run = row(prefix), data[key]
        assert shows(cells[0], run["device_add_s"]) and shows(cells[1], run["total_s"]), key
        assert shows(cells[2], run["steps_s"]["install roost"]) and shows(cells[3], run["steps_s"]["create venv"])
        met = "not met" not in cells[4]
        if key != "manual":
            assert met == (run["total_s"] <= 90), key
    build = data["wheelhouse_build"]
    label = next(k for k in rows if k.startswith("`roost hub wheelhouse build`"))
    assert shows(row("`roost hub wheelhouse build`")[0], build["seconds"])
    assert shows(label, build["wheels"]) and shows(label, build["mb"])
