"""The Prometheus text format (0.0.4) of metric families, written directly.

``prometheus_client.generate_latest`` checks every label name of every sample against the legacy
name pattern (and escapes it) on each scrape: about 8 µs a sample here, 18 ms for an agent with
100 components. Roost's names are its own and valid, so :func:`render` skips that work and writes
the same bytes (tests/observe/test_units.py compares them) several times faster (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
          "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")


def _label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _value(value: float) -> str:
    if value == 1.0:
        return "1.0"
    if value == 0.0:
        return "0.0"
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def render(families: Iterable[Metric]) -> bytes:
    out: list[str] = []
    for metric in families:
        name = metric.name
        kind = metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_TYPES.get(kind, kind)}\n")
        extra: dict[str, list[str]] = {}
        for sample in metric.samples:
            labels = sample.labels
            if labels:
                text = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels.items()))
                line = f"{sample.name}{{{text}}} {_value(sample.value)}"
            else:
                line = f"{sample.name} {_value(sample.value)}"
            if sample.timestamp is not None:
                line += f" {int(float(sample.timestamp) * 1000):d}"
            if sample.name.startswith(metric.name) and sample.name[len(metric.name):] in _OM_SUFFIXES:
                extra.setdefault(sample.name[len(metric.name):], []).append(line + "\n")
            else:
                out.append(line + "\n")
        for suffix, lines in sorted(extra.items()):
            out.append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")


__all__ = ["render"]
