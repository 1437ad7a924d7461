"""Small SVG charts for the console: a metric over the last hour, and the fleet by status.

Pure functions returning markup; no I/O, no JavaScript, nothing fetched from elsewhere (the console
runs offline and its CSP allows no inline script or style: colours come from classes in
``console.css``; SVG geometry is attributes, which the CSP does not govern). Every chart carries an
``aria-label`` saying in words what it draws, and says "no samples" when there are none rather
than drawing an empty axis that looks like zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from roost.hub.contract.metrics import MetricsPoint

WIDTH, HEIGHT = 320, 96
#: Plot area inside the SVG: left margin for the scale, bottom for the time labels.
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 8, 16


@dataclass(frozen=True)
class Series:
    """One metric's samples: (time, value) pairs, oldest first, in ``unit``."""

    title: str
    unit: str
    points: Sequence[tuple[datetime, float]]
    #: A gap longer than this between two samples breaks the line (the device was not reporting).
    gap: timedelta = timedelta(minutes=3)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= value (an axis maximum)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


def number(value: float, unit: str) -> str:
    """A value for a label: at most three significant digits, the unit after it."""
    if value != 0 and abs(value) < 0.01:
        text = f"{value:.1e}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip() if unit != "%" else f"{text} %"


def line_chart(series: Series, *, end: datetime, span: timedelta = timedelta(hours=1)) -> Markup:
    """``series`` over ``[end - span, end]``; samples outside are ignored."""
    start = end - span
    points = [(t, v) for t, v in series.points if start <= t <= end and math.isfinite(v)]
    label = escape(series.title)
    if not points:
        return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                      f'aria-label="{label}: no samples in the last {_span(span)}">'
                      f'<text class="chart-empty" x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
                      f'no samples in the last {_span(span)}</text></svg>')
    top = nice_ceiling(max(v for _, v in points))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    total = span.total_seconds()

    def xy(t: datetime, v: float) -> str:
        x = LEFT + plot_w * (t - start).total_seconds() / total
        y = TOP + plot_h * (1 - max(v, 0.0) / top)
        return f"{x:.1f},{y:.1f}"

    runs: list[list[str]] = [[]]
    previous: datetime | None = None
    for t, v in points:
        if previous is not None and t - previous > series.gap:
            runs.append([])
        runs[-1].append(xy(t, v))
        previous = t
    lines = "".join(f'<polyline class="chart-line" points="{" ".join(r)}"/>' if len(r) > 1 else
                    f'<circle class="chart-dot" cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.8"/>'
                    for r in runs)
    last = points[-1][1]
    peak = max(v for _, v in points)
    words = (f"{label}: last {escape(number(last, series.unit))}, peak {escape(number(peak, series.unit))}, "
             f"{len(points)} samples in the last {_span(span)}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{words}">'
        f'<line class="chart-axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>'
        f'<line class="chart-grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH - RIGHT}" y2="{TOP}"/>'
        f'<text class="chart-scale" x="{LEFT - 3}" y="{TOP + 4}" text-anchor="end">'
        f'{escape(number(top, series.unit))}</text>'
        f'<text class="chart-scale" x="{LEFT - 3}" y="{TOP + plot_h}" text-anchor="end">0</text>'
        f'<text class="chart-scale" x="{LEFT}" y="{HEIGHT - 3}">-{_span(span)}</text>'
        f'<text class="chart-scale" x="{WIDTH - RIGHT}" y="{HEIGHT - 3}" text-anchor="end">now</text>'
        f'{lines}</svg>')


def status_bar(counts: Mapping[str, int], order: Sequence[str]) -> Markup:
    """The fleet by status as one stacked bar (``order`` first, then any other status), with a legend."""
    statuses = [s for s in order if counts.get(s)] + sorted(s for s in counts if s not in order and counts[s])
    total = sum(counts.get(s, 0) for s in statuses)
    if total == 0:
        return Markup(f'<svg class="chart chart-bar" viewBox="0 0 {WIDTH} 28" role="img" aria-label="no devices">'
                      f'<text class="chart-empty" x="{WIDTH // 2}" y="18" text-anchor="middle">no devices</text></svg>')
    x = 0.0
    parts: list[str] = []
    for s in statuses:
        w = WIDTH * counts[s] / total
        parts.append(f'<rect class="bar-{escape(s.lower())}" x="{x:.1f}" y="0" width="{w:.1f}" height="16">'
                     f'<title>{escape(s)}: {counts[s]}</title></rect>')
        x += w
    words = ", ".join(f"{counts[s]} {s}" for s in statuses)
    legend = "".join(f'<text class="chart-scale" x="{i * WIDTH / len(statuses):.0f}" y="27">'
                     f'{escape(s)} {counts[s]}</text>' for i, s in enumerate(statuses))
    return Markup(f'<svg class="chart chart-bar" viewBox="0 0 {WIDTH} 28" role="img" '
                  f'aria-label="{escape(words)}">{"".join(parts)}{legend}</svg>')


def _span(span: timedelta) -> str:
    minutes = round(span.total_seconds() / 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 and minutes >= 60 else f"{minutes} min"


#: The models whose latency a device page charts (the busiest first); the rest are counted in words.
MODELS_CHARTED = 3


@dataclass(frozen=True)
class DeviceCharts:
    """A device page's charts: host CPU and memory, and inference latency (p95) per model."""

    cpu: Markup
    memory: Markup
    latency: list[tuple[str, Markup]]
    #: Models with samples that are not charted (beyond :data:`MODELS_CHARTED`).
    more_models: int


def device_charts(samples: Sequence[MetricsPoint], *, end: datetime) -> DeviceCharts:
    """The charts of one device from its last hour of samples (``GET /v1/devices/{name}/metrics``)."""

    def ratio(key: str) -> list[tuple[datetime, float]]:
        return [(p.at, p.values[key] * 100) for p in samples if key in p.values]

    traffic: dict[str, float] = {}
    for p in samples:
        for name, m in p.models.items():
            traffic[name] = max(traffic.get(name, 0.0), m.requests_total)
    models = sorted(traffic, key=lambda n: (-traffic[n], n))
    def p95_ms(name: str) -> list[tuple[datetime, float]]:
        out = []
        for p in samples:
            seconds = p.models[name].latency_p95_seconds if name in p.models else None
            if seconds is not None:
                out.append((p.at, seconds * 1000))
        return out

    latency = [(name, line_chart(Series(f"{name} latency p95", "ms", p95_ms(name)), end=end))
               for name in models[:MODELS_CHARTED]]
    return DeviceCharts(cpu=line_chart(Series("CPU", "%", ratio("cpu_ratio")), end=end),
                        memory=line_chart(Series("Memory", "%", ratio("memory_ratio")), end=end),
                        latency=latency, more_models=max(0, len(models) - MODELS_CHARTED))
