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

Rendered as text directly (no client-library objects per series): 10,000 devices take well under
a second (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from roost.hub.store.metrics import FleetRow
from roost.observe.snapshot import KNOWN_VALUES

PREFIX: Final = "roost_fleet_"
MODEL_FIELDS: Final = (
    ("requests_total", "model_requests_total", "Inference requests per model (as the device last reported)"),
    ("errors_total", "model_errors_total", "Inference requests refused or failed per model"),
    ("latency_p50_seconds", "model_latency_p50_seconds", "Median inference latency per model"),
    ("latency_p95_seconds", "model_latency_p95_seconds", "95th percentile inference latency per model"),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def device_labels(device: str, groups: tuple[str, ...]) -> str:
    """The labels of one device's series (inside the braces)."""
    return f'device="{escape(device)}",group="{escape(groups[0] if groups else "")}"'


def _number(value: object) -> str | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return repr(value)
    return None


def render_fleet(rows: Iterable[FleetRow]) -> bytes:
    """The Prometheus text page of the fleet's snapshots (values were checked when the hub took them)."""
    values: dict[str, tuple[str, list[str]]] = {}
    models: dict[str, list[str]] = {name: [] for _, name, _ in MODEL_FIELDS}
    stamps: list[str] = []
    infos: list[str] = []
    for row in rows:
        labels = device_labels(row.device, row.groups)
        groups = "," + ",".join(row.groups) + "," if row.groups else ""
        infos.append(f'{PREFIX}device_info{{{labels},groups="{escape(groups)}"}} 1')
        stamps.append(f"{PREFIX}snapshot_timestamp_seconds{{{labels}}} {row.received_at.timestamp()!r}")
        for key, value in (row.snapshot.get("values") or {}).items():
            entry = values.get(key)
            if entry is None:
                entry = values[key] = (f"{PREFIX}{key}{{", [])
            text = repr(value) if type(value) is float or type(value) is int else _number(value)
            if text is not None:
                entry[1].append(f"{entry[0]}{labels}}} {text}")
        for model, sample in (row.snapshot.get("models") or {}).items():
            if not isinstance(sample, dict):
                continue
            model_labels = f'{labels},model="{escape(str(model))}"'
            for field, name, _ in MODEL_FIELDS:
                text = _number(sample.get(field))
                if text is not None:
                    models[name].append(f"{PREFIX}{name}{{{model_labels}}} {text}")
    out: list[str] = [f"# HELP {PREFIX}device_info The device's groups (always 1; join on device for groups)",
                      f"# TYPE {PREFIX}device_info gauge", *infos,
                      f"# HELP {PREFIX}snapshot_timestamp_seconds When the hub received the device's latest "
                      "snapshot (Unix time)", f"# TYPE {PREFIX}snapshot_timestamp_seconds gauge", *stamps]
    for key in sorted(values):
        help_text = KNOWN_VALUES.get(key, "as the device reported it")
        out += [f"# HELP {PREFIX}{key} {help_text}", f"# TYPE {PREFIX}{key} gauge", *values[key][1]]
    for _, name, help_text in MODEL_FIELDS:
        if models[name]:
            out += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge", *models[name]]
    out.append("")
    return "\n".join(out).encode("utf-8")


__all__ = ["PREFIX", "device_labels", "escape", "render_fleet"]
