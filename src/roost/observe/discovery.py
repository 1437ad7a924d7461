"""Prometheus HTTP service discovery of every device's metrics endpoint (``GET /v1/prometheus/targets``).

The answer is Prometheus' HTTP SD format: one target group per device that reported an endpoint
(its agent's ``--metrics-address``, sent with its snapshot)::

    [{"targets": ["10.0.0.7:9464"],
      "labels": {"__meta_roost_device": "xavier-1", "__meta_roost_groups": ",lab,",
                 "__meta_roost_group_lab": "true", "__meta_roost_label_machine": "xavier",
                 "__meta_roost_token": "false"}}]

``__meta_*`` labels are dropped after relabelling, so a scrape config copies what it wants (see
docs/metrics.md: ``device`` from ``__meta_roost_device``). Group and label names are made valid label
names (every character outside ``[A-Za-z0-9_]`` becomes ``_``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from roost.hub.store.metrics import TargetRow

META: Final = "__meta_roost_"
_INVALID: Final = re.compile(r"[^A-Za-z0-9_]")


def label_name(text: str) -> str:
    return _INVALID.sub("_", text)


def targets(rows: Iterable[TargetRow]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        labels = {f"{META}device": row.device,
                  f"{META}groups": "," + ",".join(row.groups) + "," if row.groups else "",
                  f"{META}token": "true" if row.token else "false"}
        for group in row.groups:
            labels[f"{META}group_{label_name(group)}"] = "true"
        for key, value in sorted(row.labels.items()):
            labels[f"{META}label_{label_name(str(key))}"] = str(value)
        out.append({"targets": [row.endpoint], "labels": labels})
    return out


__all__ = ["META", "label_name", "targets"]
