"""The device as a cluster node: what it measures of itself, what configuration overrides, what it reports.

``roost agent start --label machine=xavier --capacity memory=16Gi,cpu=8 [--centre]
[--advertise-address A] [--port-range 31000-31999]`` writes ``ROOT/node.json``; every start of the
hub sync reads it and sends the hub a :class:`~roost.hub.contract.cluster.NodeReport`:

- **measured** capacity: memory (the machine's total, or the agent's cgroup limit when lower), CPU
  (the CPUs the agent may run on, or its cgroup quota when lower), accelerators found under ``/dev``
  (NVIDIA GPUs, a Jetson's integrated GPU, Coral Edge TPUs);
- **allocatable** capacity: the measured one with ``--capacity`` overrides applied, so one machine can
  play a heterogeneous cluster (an 8 Gi "xavier" and a 4 Gi "tx2" side by side);
- **labels**, the **tier** (``edge``, or ``centre`` with ``--centre``), the **address** clients reach
  this node's replicas at (``--advertise-address``, else the local address of the route to the hub)
  and the port range replicas listen in.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from roost.cluster.quantity import parse_capacity
from roost.errors import InvalidInputError
from roost.hub.contract.cluster import NodeCapacity, NodeReport, Tier

logger = logging.getLogger(__name__)

NODE_FILE = "node.json"
DEFAULT_PORTS = (31000, 31999)


@dataclass
class NodeSettings:
    labels: dict[str, str] = field(default_factory=dict)
    #: ``--capacity`` overrides: ``{"memory": bytes, "cpu": millicores, "<accelerator>": count}``.
    capacity: dict[str, int] = field(default_factory=dict)
    tier: Tier = "edge"
    address: str | None = None
    port_min: int = DEFAULT_PORTS[0]
    port_max: int = DEFAULT_PORTS[1]

    @classmethod
    def load(cls, root: Path) -> NodeSettings:
        path = root / NODE_FILE
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"{path} is unreadable or not JSON ({err}); remove it or run "
                                    "`roost agent start` with the node options again", code="NODE_SETTINGS_INVALID") \
                from err
        if not isinstance(data, dict):
            raise InvalidInputError(f"{path} is not a JSON object", code="NODE_SETTINGS_INVALID")
        tier: Tier = "centre" if data.get("tier") == "centre" else "edge"
        return cls(labels={str(k): str(v) for k, v in dict(data.get("labels") or {}).items()},
                   capacity={str(k): int(v) for k, v in dict(data.get("capacity") or {}).items()},
                   tier=tier, address=data.get("address") or None,
                   port_min=int(data.get("port_min", DEFAULT_PORTS[0])),
                   port_max=int(data.get("port_max", DEFAULT_PORTS[1])))

    def save(self, root: Path) -> None:
        path = root / NODE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        os.replace(tmp, path)


def settings_from_options(root: Path, labels: dict[str, str], capacity: str | None, centre: bool | None,
                          address: str | None, port_range: str | None) -> NodeSettings:
    """``ROOT/node.json`` updated with the options given (the ones not given keep their saved value)."""
    settings = NodeSettings.load(root)
    if labels:
        settings.labels = {**settings.labels, **labels}
    if capacity is not None:
        settings.capacity = parse_capacity(capacity)
    if centre is not None:
        settings.tier = "centre" if centre else "edge"
    if address is not None:
        if not address.strip() or any(c.isspace() for c in address) or "/" in address:
            raise InvalidInputError(f"--advertise-address {address!r} is not a host name or IP address",
                                    code="INVALID_ARGUMENT")
        settings.address = address.strip()
    if port_range is not None:
        settings.port_min, settings.port_max = parse_port_range(port_range)
    return settings


def parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high if sep else low)
    except ValueError:
        raise InvalidInputError(f"--port-range {text!r} is not LOW-HIGH (like 31000-31999)",
                                code="INVALID_ARGUMENT") from None
    if not 1024 <= lo <= hi <= 65535:
        raise InvalidInputError(f"--port-range {text!r}: need 1024 <= LOW <= HIGH <= 65535", code="INVALID_ARGUMENT")
    return lo, hi


def measure() -> NodeCapacity:
    """What this machine has, as far as the agent can use it."""
    import psutil

    memory = int(psutil.virtual_memory().total)
    limit = _cgroup_memory_limit()
    if limit is not None:
        memory = min(memory, limit)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    millis = cpus * 1000
    quota = _cgroup_cpu_quota()
    if quota is not None:
        millis = min(millis, quota)
    return NodeCapacity(memory_bytes=memory, cpu_millis=millis, accelerators=accelerators())


def accelerators(dev: Path = Path("/dev"), etc: Path = Path("/etc")) -> dict[str, int]:
    found: dict[str, int] = {}
    gpus = [p for p in dev.glob("nvidia[0-9]*") if p.name[6:].isdigit()]
    if gpus:
        found["nvidia.com/gpu"] = len(gpus)
    elif (etc / "nv_tegra_release").exists():  # a Jetson: one integrated GPU
        found["nvidia.com/gpu"] = 1
    tpus = list(dev.glob("apex_[0-9]*"))
    if tpus:
        found["google.com/edgetpu"] = len(tpus)
    return found


def _cgroup_memory_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def _cgroup_cpu_quota() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, int(quota) * 1000 // int(period))


def local_address_towards(hub_url: str) -> str:
    """The local address of the route to the hub (what the hub's clients most likely reach too)."""
    parts = urlsplit(hub_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)  # UDP: picks the route, sends nothing
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def node_report(settings: NodeSettings, hub_url: str, measured: NodeCapacity | None = None) -> NodeReport:
    measured = measured or measure()
    accel = {**measured.accelerators, **{k: v for k, v in settings.capacity.items() if k not in ("memory", "cpu")}}
    allocatable = NodeCapacity(memory_bytes=settings.capacity.get("memory", measured.memory_bytes),
                               cpu_millis=settings.capacity.get("cpu", measured.cpu_millis), accelerators=accel)
    return NodeReport(labels=dict(settings.labels), allocatable=allocatable, measured=measured, tier=settings.tier,
                      address=settings.address or local_address_towards(hub_url), port_min=settings.port_min,
                      port_max=settings.port_max)


__all__ = ["DEFAULT_PORTS", "NODE_FILE", "NodeSettings", "accelerators", "local_address_towards", "measure",
           "node_report", "parse_port_range", "settings_from_options"]
