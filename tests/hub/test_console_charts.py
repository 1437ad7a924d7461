"""The console's SVG charts: scale, gaps, empty series, escaping, the fleet's status bar."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from roost.hub.console.charts import Series, line_chart, nice_ceiling, number, status_bar

END = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (0.7, 1), (1, 1), (1.2, 2), (2.2, 2.5), (3, 5), (7, 10),
                                                (87, 100), (120, 200), (1e-4, 1e-4)])
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_a_line_over_the_hour_with_its_scale_and_words() -> None:
    points = [(END - timedelta(minutes=60 - i), float(i)) for i in range(0, 60, 1)]
    svg = _svg(line_chart(Series("CPU", "%", points), end=END))
    assert svg.get("aria-label") == "CPU: last 59 %, peak 59 %, 60 samples in the last 1 h"
    lines = svg.findall("polyline")
    assert len(lines) == 1 and len(lines[0].get("points", "").split()) == 60
    scale = [t.text for t in svg.findall("text")]
    assert scale == ["100 %", "0", "-1 h", "now"]
    xs = [float(p.split(",")[0]) for p in lines[0].get("points", "").split()]
    ys = [float(p.split(",")[1]) for p in lines[0].get("points", "").split()]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # later is right, larger is higher


def test_a_gap_breaks_the_line_and_old_samples_are_left_out() -> None:
    points = [(END - timedelta(hours=3), 5.0),
              *[(END - timedelta(minutes=50 - i), 1.0) for i in range(5)],
              *[(END - timedelta(minutes=10 - i), 2.0) for i in range(5)],
              (END - timedelta(minutes=1), float("nan"))]
    svg = _svg(line_chart(Series("Memory", "MiB", points), end=END))
    assert len(svg.findall("polyline")) == 2
    assert "10 samples" in (svg.get("aria-label") or "")
    lone = _svg(line_chart(Series("Latency", "ms", [(END - timedelta(minutes=5), 3.0)]), end=END))
    assert len(lone.findall("circle")) == 1 and not lone.findall("polyline")


def test_no_samples_says_so_and_titles_are_escaped() -> None:
    svg = _svg(line_chart(Series('<b>"x"</b>', "ms", []), end=END))
    assert svg.get("aria-label") == '<b>"x"</b>: no samples in the last 1 h'
    assert [t.text for t in svg.findall("text")] == ["no samples in the last 1 h"]
    assert "<b>" not in str(line_chart(Series("<b>", "ms", []), end=END)).split(">", 1)[1]


def test_status_bar() -> None:
    svg = _svg(status_bar({"ONLINE": 3, "OFFLINE": 1, "NEVER_SEEN": 0, "ODD<": 1}, ["ONLINE", "OFFLINE"]))
    rects = svg.findall("rect")
    assert [r.get("class") for r in rects] == ["bar-online", "bar-offline", "bar-odd<"]  # escaped, then parsed
    widths = [float(r.get("width", "0")) for r in rects]
    assert widths == pytest.approx([192, 64, 64])
    assert svg.get("aria-label") == "3 ONLINE, 1 OFFLINE, 1 ODD<"
    assert _svg(status_bar({}, ["ONLINE"])).get("aria-label") == "no devices"


def test_number() -> None:
    assert number(12.345, "ms") == "12.3 ms" and number(1234.5, "MiB") == "1,234 MiB"
    assert number(0.001, "s") == "1.0e-03 s" and number(50, "%") == "50 %"
    assert re.fullmatch(r"0 ms", number(0, "ms"))


def test_device_charts_from_samples() -> None:
    from roost.hub.console.charts import device_charts
    from roost.hub.contract.metrics import MetricsPoint, ModelSample

    samples = [MetricsPoint(at=END - timedelta(minutes=30 - i),
                            values={"cpu_ratio": 0.1 * (i % 5), "memory_ratio": 0.5},
                            models={"busy": ModelSample(requests_total=100.0 * i, latency_p95_seconds=0.002),
                                    "quiet": ModelSample(requests_total=float(i)),
                                    **{f"m{k}": ModelSample(requests_total=1.0, latency_p95_seconds=0.001)
                                       for k in range(3)}})
               for i in range(30)]
    charts = device_charts(samples, end=END)
    assert (_svg(charts.cpu).get("aria-label") or "").startswith("CPU: last 40 %, peak 40 %, 30 samples")
    assert "last 50 %" in (_svg(charts.memory).get("aria-label") or "")
    # The busiest models are charted; a model without latency says it has no samples.
    assert [name for name, _ in charts.latency] == ["busy", "quiet", "m0"] and charts.more_models == 2
    assert "last 2 ms" in (_svg(charts.latency[0][1]).get("aria-label") or "")
    assert "no samples" in (_svg(charts.latency[1][1]).get("aria-label") or "")
    assert "no samples" in (_svg(device_charts([], end=END).cpu).get("aria-label") or "")
