"""A device's *class*: what its model latency depends on, from its labels (no hub imports).

``ARCH/cpuN/memMg/ACCEL``: the architecture (``arch`` label), the CPU count rounded down to a power
of two (``cpus``), the memory in GiB rounded down to a power of two (``memory_mb``; ``mem0g`` under
1 GiB) and the accelerators (the ``accelerator`` label that provisioning's facts set, else the
cluster node report's accelerator names, else ``none``), sorted and joined by ``+``. Two devices of
one class are expected to run a model at about the same speed, so a benchmark on one stands for
the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["device_class"]


def _pow2_floor(value: int) -> int:
    out = 1
    while out * 2 <= value:
        out *= 2
    return out


def _int(text: Any) -> int | None:
    try:
        number = int(str(text).strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def device_class(labels: Mapping[str, Any], accelerators: Iterable[str] = ()) -> str:
    """The class of a device with ``labels`` (and the cluster node's ``accelerators``, if any)."""
    arch = str(labels.get("arch") or "unknown").strip().lower() or "unknown"
    cpus = _int(labels.get("cpus"))
    memory_mb = _int(labels.get("memory_mb"))
    cpu = f"cpu{_pow2_floor(cpus)}" if cpus else "cpu?"
    if memory_mb is None:
        mem = "mem?"
    else:
        gib = memory_mb // 1024
        mem = f"mem{_pow2_floor(gib) if gib else 0}g"
    named = str(labels.get("accelerator") or "").strip().lower()
    accel = sorted({a for a in named.split(",") if a and a != "none"} | {str(a).lower() for a in accelerators})
    return f"{arch}/{cpu}/{mem}/{'+'.join(accel) or 'none'}"
