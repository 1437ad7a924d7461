"""Placement: which node runs a new replica. Pure functions over snapshots; no I/O.

1. **Filter**: the node is in the asked tier, online, allows the service type's required affinity,
   and its free capacity (allocatable minus the requests of the replicas placed there) covers the
   replica's memory and CPU requests.
2. **Score**: the preferred-affinity weights that hold (0-100 each, summed), plus a least-allocation
   score in [0, 100]: the mean, over memory and CPU, of the share of the node left free after the
   replica, as Kubernetes' ``NodeResourcesFit`` LeastAllocated does.
3. **Tie-break**: the node name (so the same cluster state always gives the same answer).

:func:`explain_unschedulable` says why no node of *any* state could take the type (larger than every
node, or affinity nobody matches): such a request is refused outright rather than offloaded forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from roost.cluster.quantity import format_cpu, format_memory
from roost.cluster.service_types import ServiceType

Tier = Literal["edge", "centre"]
TIERS: tuple[Tier, ...] = ("edge", "centre")


@dataclass(frozen=True)
class NodeView:
    """A node as placement sees it."""

    name: str
    tier: Tier
    labels: Mapping[str, Any]
    memory_bytes: int
    cpu_millis: int
    requested_memory: int = 0
    requested_cpu: int = 0
    online: bool = True
    accelerators: Mapping[str, int] = field(default_factory=dict)

    @property
    def free_memory(self) -> int:
        return self.memory_bytes - self.requested_memory

    @property
    def free_cpu(self) -> int:
        return self.cpu_millis - self.requested_cpu

    def fits(self, service: ServiceType) -> bool:
        return self.free_memory >= service.memory_request and self.free_cpu >= service.cpu_request

    def could_ever_fit(self, service: ServiceType) -> bool:
        return self.memory_bytes >= service.memory_request and self.cpu_millis >= service.cpu_request

    def with_replica(self, service: ServiceType) -> NodeView:
        """The node after a replica of ``service`` is placed on it."""
        return NodeView(self.name, self.tier, self.labels, self.memory_bytes, self.cpu_millis,
                        self.requested_memory + service.memory_request, self.requested_cpu + service.cpu_request,
                        self.online, self.accelerators)


def least_allocated(node: NodeView, service: ServiceType) -> float:
    """Kubernetes' LeastAllocated score in [0, 100]: free share after placing, averaged over resources."""
    shares: list[float] = []
    for total, used in ((node.memory_bytes, node.requested_memory + service.memory_request),
                        (node.cpu_millis, node.requested_cpu + service.cpu_request)):
        if total > 0:
            shares.append(max(0.0, (total - used) / total))
    return 100.0 * sum(shares) / len(shares) if shares else 0.0


def score(node: NodeView, service: ServiceType) -> float:
    return service.affinity.score(node.labels) + least_allocated(node, service)


def candidates(service: ServiceType, nodes: Iterable[NodeView], tier: Tier) -> list[NodeView]:
    """The nodes of ``tier`` that may take a replica now, best first."""
    fitting = [n for n in nodes if n.tier == tier and n.online and service.affinity.allows(n.labels)
               and n.fits(service)]
    return sorted(fitting, key=lambda n: (-score(n, service), n.name))


def choose(service: ServiceType, nodes: Iterable[NodeView], tier: Tier) -> NodeView | None:
    """The best node of ``tier`` for a new replica, or ``None`` when none has room."""
    best = candidates(service, nodes, tier)
    return best[0] if best else None


def explain_unschedulable(service: ServiceType, nodes: Sequence[NodeView]) -> str | None:
    """Why no node of any tier could ever run ``service`` (``None`` when some node could)."""
    if not nodes:
        return "no node is enrolled in the cluster"
    matching = [n for n in nodes if service.affinity.allows(n.labels)]
    if not matching:
        required = ", ".join(f"{e.key} {e.operator} {list(e.values)}" for e in service.affinity.required)
        return f"no node's labels satisfy the required affinity ({required})"
    if not any(n.could_ever_fit(service) for n in matching):
        largest = max(matching, key=lambda n: (n.memory_bytes, n.cpu_millis))
        return (f"a replica requests memory {format_memory(service.memory_request)} and cpu "
                f"{format_cpu(service.cpu_request)}, more than any node allocates (the largest, {largest.name}, has "
                f"memory {format_memory(largest.memory_bytes)} and cpu {format_cpu(largest.cpu_millis)})")
    return None


__all__ = ["TIERS", "NodeView", "Tier", "candidates", "choose", "explain_unschedulable", "least_allocated", "score"]
