"""What the console's Cluster page shows: nodes by tier with capacity bars, service types, replicas, sessions.

Pure functions over the cluster store's results (:mod:`roost.hub.contract.cluster`,
:class:`~roost.cluster.service_types.ServiceType`); no I/O, no web framework. Bars are sized by
the stylesheet's ``.w-N`` classes (the console's CSP forbids inline styles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from roost.cluster.affinity import Affinity, Expression
from roost.cluster.service_types import Resources, ServiceType
from roost.hub.console.views import size
from roost.hub.contract.cluster import (
    ClusterNode,
    ClusterReplica,
    ClusterSession,
    ReplicaStatus,
    SessionStatus,
    Tier,
)

#: Active sessions listed (newest first); the counts at the top stay exact beyond it.
LIVE_SHOWN = 500
#: Ended sessions listed (most recently ended first).
ENDED_SHOWN = 25
#: A capacity bar turns amber at this share of the allocatable.
HIGH_PERCENT = 80
#: Replica states that hold capacity (as the store counts them).
LIVE = (ReplicaStatus.STARTING, ReplicaStatus.READY)

TIERS: tuple[tuple[Tier, str, str], ...] = (
    ("edge", "Edge", "Sessions are placed here first."),
    ("centre", "Centre", "Sessions are offloaded here when no edge node has room."),
)


def cores(millis: int) -> str:
    """CPU for people: ``'4'``, ``'1.5'``, ``'250m'``."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    if millis < 1000:
        return f"{millis}m"
    return f"{millis / 1000:.3f}".rstrip("0").rstrip(".")


def memory(n: int) -> str:
    return size(n)


@dataclass(frozen=True)
class Usage:
    """One capacity bar: what the node's live replicas request against what it allocates."""

    resource: str  # "memory" or "cpu"
    requested: int
    allocatable: int
    text: str  # "6.5 GiB of 8.0 GiB"
    #: Rounded share of the allocatable (None: the node allocates none of it).
    percent: int | None
    width: int  # 0-100, the bar's ``w-N`` class
    css: str  # ok, wait (high), bad (over-committed) or off (none allocatable)
    #: ``'measured 15.5 GiB'`` when an override (``--capacity``) differs from what the agent measured.
    measured: str | None = None

    @property
    def label(self) -> str:
        share = "none allocatable" if self.percent is None else f"{self.percent} %"
        return f"{self.resource}: {self.text} requested ({share})"


def usage(resource: str, requested: int, allocatable: int, measured: int | None = None) -> Usage:
    fmt = memory if resource == "memory" else cores
    unit = "" if resource == "memory" else " CPU"
    text = f"{fmt(requested)} of {fmt(allocatable)}{unit}"
    note = f"measured {fmt(measured)}{unit}" if measured is not None and measured != allocatable else None
    if allocatable <= 0:
        return Usage(resource, requested, allocatable, text, None, 0, "bad" if requested > 0 else "off", note)
    exact = requested * 100 / allocatable
    width = min(100, math.ceil(exact)) if requested > 0 else 0
    css = "bad" if requested > allocatable else "wait" if exact >= HIGH_PERCENT else "ok"
    return Usage(resource, requested, allocatable, text, round(exact), width, css, note)


def accelerators(node: ClusterNode) -> list[str]:
    """``['nvidia.com/gpu=1']``, with what was measured when an override differs
    (``'nvidia.com/gpu=2 (measured 1)'``)."""
    allocatable, measured = node.allocatable.accelerators, node.measured.accelerators
    out = []
    for name in sorted(set(allocatable) | set(measured)):
        count, found = allocatable.get(name, 0), measured.get(name, 0)
        out.append(f"{name}={count}" if count == found else f"{name}={count} (measured {found})")
    return out


@dataclass(frozen=True)
class NodeView:
    node: ClusterNode
    memory: Usage
    cpu: Usage
    accelerators: list[str]

    @property
    def status(self) -> str:
        return "ONLINE" if self.node.online else "OFFLINE"


@dataclass(frozen=True)
class TierGroup:
    tier: Tier
    title: str
    note: str
    nodes: list[NodeView]

    @property
    def online(self) -> int:
        return sum(1 for n in self.nodes if n.node.online)


def node_view(node: ClusterNode) -> NodeView:
    requested, allocatable, measured = node.requested, node.allocatable, node.measured
    return NodeView(node=node,
                    memory=usage("memory", requested.memory_bytes, allocatable.memory_bytes, measured.memory_bytes),
                    cpu=usage("cpu", requested.cpu_millis, allocatable.cpu_millis, measured.cpu_millis),
                    accelerators=accelerators(node))


def tiers(nodes: Sequence[ClusterNode]) -> list[TierGroup]:
    """Both tiers, edge first, each with its nodes (in the store's order, by name)."""
    return [TierGroup(tier, title, note, [node_view(n) for n in nodes if n.tier == tier])
            for tier, title, note in TIERS]


def expression(e: Expression) -> str:
    """``'machine NotIn nano'``, ``'gpu Exists'``, ``'cores Gt 4'``."""
    return f"{e.key} {e.operator} {', '.join(e.values)}" if e.values else f"{e.key} {e.operator}"


def affinity_summary(affinity: Affinity) -> tuple[list[str], list[str]]:
    """The required expressions and the preferred terms (``'70: machine In xavier'``), as text."""
    required = [expression(e) for e in affinity.required]
    preferred = [f"{p.weight}: {' and '.join(expression(e) for e in p.match)}" for p in affinity.preferred]
    return required, preferred


def resources(r: Resources) -> str:
    """``'memory 3.3 GiB, cpu 500m'``; ``'—'`` when nothing is set."""
    parts = []
    if r.memory is not None:
        parts.append(f"memory {memory(r.memory_bytes)}")
    if r.cpu is not None:
        parts.append(f"cpu {cores(r.cpu_millis)}")
    return ", ".join(parts) if parts else "—"


@dataclass(frozen=True)
class TypeView:
    spec: ServiceType
    requests: str
    limits: str
    required: list[str]
    preferred: list[str]
    live_replicas: int
    sessions: int

    @property
    def component(self) -> str:
        return f"{self.spec.component}@{self.spec.version or 'newest'}"


def type_views(types: Sequence[ServiceType], replicas: Sequence[ClusterReplica]) -> list[TypeView]:
    out = []
    for spec in types:
        live = [r for r in replicas if r.type == spec.name and r.status in LIVE]
        required, preferred = affinity_summary(spec.affinity)
        out.append(TypeView(spec=spec, requests=resources(spec.resources.requests),
                            limits=resources(spec.resources.limits), required=required, preferred=preferred,
                            live_replicas=len(live), sessions=sum(r.sessions for r in live)))
    return out


@dataclass(frozen=True)
class SessionCounts:
    total: int
    edge: int
    centre: int

    @property
    def summary(self) -> str:
        """``'12 sessions: 9 at the edge, 3 offloaded to the centre'``."""
        noun = "session" if self.total == 1 else "sessions"
        if self.total == 0:
            return "No live session"
        return f"{self.total} {noun}: {self.edge} at the edge, {self.centre} offloaded to the centre"


def session_counts(live: Sequence[ClusterSession], nodes: Sequence[ClusterNode], limit: int) -> SessionCounts:
    """Live sessions by tier: from the listed sessions when the list is complete (fewer than ``limit``),
    else from the nodes' session counts (exact, by the node's tier)."""
    if len(live) < limit:
        centre = sum(1 for s in live if s.offloaded)
        return SessionCounts(total=len(live), edge=len(live) - centre, centre=centre)
    edge = sum(n.sessions for n in nodes if n.tier == "edge")
    centre = sum(n.sessions for n in nodes if n.tier == "centre")
    return SessionCounts(total=edge + centre, edge=edge, centre=centre)


def recently_ended(sessions: Sequence[ClusterSession], n: int = ENDED_SHOWN) -> list[ClusterSession]:
    """The ``n`` ended sessions that ended last."""
    ended = [s for s in sessions if s.status == SessionStatus.ENDED]
    return sorted(ended, key=lambda s: s.ended_at or s.created_at, reverse=True)[:n]


def replica_since(replica: ClusterReplica) -> datetime:
    """When a replica entered its state, as far as the store records it (ready, else placed)."""
    if replica.status == ReplicaStatus.READY and replica.ready_at is not None:
        return replica.ready_at
    return replica.created_at


@dataclass(frozen=True)
class ClusterPage:
    tiers: list[TierGroup]
    types: list[TypeView]
    replicas: list[ClusterReplica]
    live: list[ClusterSession]
    ended: list[ClusterSession]
    counts: SessionCounts
    #: More live sessions than listed (the counts stay exact).
    live_truncated: bool
    failed: int = 0
    nodes: int = 0
    busy: bool = field(default=False)  # a replica is starting or stopping: the page refreshes itself

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.types and not self.replicas and not self.live and not self.ended


def cluster_page(nodes: Sequence[ClusterNode], types: Sequence[ServiceType], replicas: Sequence[ClusterReplica],
                 live: Sequence[ClusterSession], recent: Sequence[ClusterSession],
                 live_limit: int = LIVE_SHOWN) -> ClusterPage:
    """Everything the page shows. ``live`` is ``list_sessions(active_only=True, limit=live_limit)``;
    ``recent`` is a (bounded) ``list_sessions()`` holding the ended sessions to pick from."""
    return ClusterPage(
        tiers=tiers(nodes), types=type_views(types, replicas), replicas=list(replicas), live=list(live),
        ended=recently_ended(recent), counts=session_counts(live, nodes, live_limit),
        live_truncated=len(live) >= live_limit,
        failed=sum(1 for r in replicas if r.status == ReplicaStatus.FAILED), nodes=len(nodes),
        busy=any(r.status in (ReplicaStatus.STARTING, ReplicaStatus.STOPPING) for r in replicas))


__all__ = ["ENDED_SHOWN", "LIVE_SHOWN", "ClusterPage", "NodeView", "SessionCounts", "TierGroup", "TypeView", "Usage",
           "accelerators", "affinity_summary", "cluster_page", "cores", "recently_ended", "replica_since",
           "session_counts", "tiers", "type_views", "usage"]
