"""``/metrics/fleet``: the fleet's latest snapshots as one Prometheus page.

Devices behind NAT cannot be scraped; their agents send snapshots (:mod:`roost.observe.snapshot`)
and Prometheus scrapes this one page of the hub instead. Every series has the labels ``device`` and
``group`` (the device's first group by name, empty when none); the device's ``groups`` (all of them,
comma-separated with a comma at each end, so ``groups=~".*,lab,.*"`` matches members of ``lab``) on one
series per device, ``roost_fleet_device_info`` (join it on ``device``: every series carrying the list
would make the page a third larger).

* ``roost_fleet_<value>`` for every value of a snapshot (``roost_fleet_cpu_ratio``,
  ``roost_fleet_components_broken``...; :data:`roost.observe.snapshot.KNOWN_VALUES`);
* ``roost_fleet_model_requests_total``, ``roost_fleet_model_errors_total``,
  ``roost_fleet_model_latency_p50_seconds``, ``roost_fleet_model_latency_p95_seconds`` (label ``model``);
* ``roost_fleet_snapshot_timestamp_seconds``: when the hub received the device's latest snapshot
  (``time() - roost_fleet_snapshot_timestamp_seconds`` is its age).

The numbers are formatted once, when the hub takes a snapshot (:func:`snapshot_lines`, kept beside it);
a scrape only puts labels on them, as text (no client-library objects per series): bench/README.md has
the time for 10,000 devices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from roost.hub.contract.metrics import KNOWN_VALUES, MetricsSnapshot

PREFIX: Final = "roost_fleet_"
MODEL_FIELDS: Final = (
    ("requests_total", "model_requests_total", "Inference requests per model (as the device last reported)"),
    ("errors_total", "model_errors_total", "Inference requests refused or failed per model"),
    ("latency_p50_seconds", "model_latency_p50_seconds", "Median inference latency per model"),
    ("latency_p95_seconds", "model_latency_p95_seconds", "95th percentile inference latency per model"),
)


@dataclass(frozen=True)
class FleetRow:
    """One device on the page: its name, groups (by name), when its snapshot came, and the snapshot's numbers
    as :func:`snapshot_lines` wrote them when the hub took it."""

    device: str
    groups: tuple[str, ...]
    received_at: datetime
    lines: str


def snapshot_lines(snapshot: MetricsSnapshot) -> str:
    """The snapshot's numbers, formatted once when the hub takes it: ``v NAME VALUE`` per value and
    ``m FIELD MODEL VALUE`` per model field (names have no spaces: the contract's patterns)."""
    out = [f"v {key} {float(value)!r}" for key, value in snapshot.values.items()]
    for model, sample in snapshot.models.items():
        for field, _, _ in MODEL_FIELDS:
            value = getattr(sample, field)
            if value is not None:
                out.append(f"m {field} {model} {float(value)!r}")
    return "\n".join(out)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def device_labels(device: str, groups: tuple[str, ...]) -> str:
    """The labels of one device's series (inside the braces)."""
    return f'device="{escape(device)}",group="{escape(groups[0] if groups else "")}"'


def render_fleet(rows: Iterable[FleetRow]) -> bytes:
    """The Prometheus text page of the fleet's snapshots."""
    values: dict[str, tuple[str, list[str]]] = {}
    models: dict[str, tuple[str, list[str]]] = {field: (f"{PREFIX}{name}{{", []) for field, name, _ in MODEL_FIELDS}
    stamps: list[str] = []
    infos: list[str] = []
    for row in rows:
        labels = device_labels(row.device, row.groups)
        groups = "," + ",".join(row.groups) + "," if row.groups else ""
        infos.append(f'{PREFIX}device_info{{{labels},groups="{escape(groups)}"}} 1')
        stamps.append(f"{PREFIX}snapshot_timestamp_seconds{{{labels}}} {row.received_at.timestamp()!r}")
        if not row.lines:
            continue
        for line in row.lines.split("\n"):
            parts = line.split(" ")
            if parts[0] == "v" and len(parts) == 3:
                entry = values.get(parts[1])
                if entry is None:
                    entry = values[parts[1]] = (f"{PREFIX}{parts[1]}{{", [])
                entry[1].append(f"{entry[0]}{labels}}} {parts[2]}")
            elif parts[0] == "m" and len(parts) == 4 and parts[1] in models:
                head, lines = models[parts[1]]
                lines.append(f'{head}{labels},model="{parts[2]}"}} {parts[3]}')
    out: list[str] = [f"# HELP {PREFIX}device_info The device's groups (always 1; join on device for groups)",
                      f"# TYPE {PREFIX}device_info gauge", *infos,
                      f"# HELP {PREFIX}snapshot_timestamp_seconds When the hub received the device's latest "
                      "snapshot (Unix time)", f"# TYPE {PREFIX}snapshot_timestamp_seconds gauge", *stamps]
    for key in sorted(values):
        help_text = KNOWN_VALUES.get(key, "as the device reported it")
        out += [f"# HELP {PREFIX}{key} {help_text}", f"# TYPE {PREFIX}{key} gauge", *values[key][1]]
    for field, name, help_text in MODEL_FIELDS:
        if models[field][1]:
            out += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge", *models[field][1]]
    out.append("")
    return "\n".join(out).encode("utf-8")


__all__ = ["PREFIX", "FleetRow", "device_labels", "escape", "render_fleet", "snapshot_lines"]
