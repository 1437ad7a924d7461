"""Presentation helpers for the console templates: relative times, sizes, progress bars, grouping.

Pure functions over the store's results (the contract's models); no I/O, no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from roost.hub.contract import FAILURE_STATUSES, Component, Deployment
from roost.hub.contract import DeviceDeploymentStatus as Row

#: Per-device statuses shown as one bar segment each: (css class, label, statuses).
SEGMENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ok", "succeeded", (Row.SUCCEEDED,)),
    ("bad", "failed", FAILURE_STATUSES),
    ("busy", "in progress", (Row.IN_PROGRESS,)),
    ("wait", "queued", (Row.QUEUED,)),
    ("off", "canceled", (Row.CANCELED,)),
)

#: Status word → badge colour class.
TONES = {
    "ONLINE": "ok", "HEALTHY": "ok", "SUCCEEDED": "ok", "COMPLETED": "ok", "RUNNING": "ok", "FINISHED": "ok",
    "READY": "ok",
    "OFFLINE": "off", "UNKNOWN": "off", "CANCELED": "off", "SUPERSEDED": "off", "NEW": "off", "INSTALLED": "off",
    "ENDED": "off",
    "REVOKED": "bad", "UNHEALTHY": "bad", "FAILED": "bad", "ROLLED_BACK": "bad", "TIMED_OUT": "bad",
    "ABORTED": "bad", "ERRORED": "bad", "BROKEN": "bad",
    "IN_PROGRESS": "busy", "ACTIVE": "busy", "STARTING": "busy", "STOPPING": "busy",
    "QUEUED": "wait",
}


def tone(status: str | None) -> str:
    return TONES.get(status or "", "off")


def ago(when: datetime | None, now: datetime) -> str:
    """``'12 s ago'``, ``'5 min ago'``, ``'3 h ago'``, ``'2 days ago'``; ``'never'`` for None."""
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now" if seconds > -5 else "in the future"
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return "1 day ago" if days == 1 else f"{days} days ago"


def iso(when: datetime | None) -> str:
    return "" if when is None else when.isoformat(timespec="seconds")


def size(n: int) -> str:
    """A byte count for people: ``'512 B'``, ``'1.5 KiB'``, ``'12.0 MiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short(digest: str, n: int = 12) -> str:
    return digest[:n]


@dataclass(frozen=True)
class Segment:
    css: str
    label: str
    count: int
    width: int  # percent, the widths of a bar sum to 100 (or 0 for an empty deployment)


@dataclass(frozen=True)
class Progress:
    total: int
    done: int  # devices that finished (succeeded or failed)
    segments: list[Segment]

    @property
    def summary(self) -> str:
        parts = [f"{s.count} {s.label}" for s in self.segments if s.count]
        return ", ".join(parts) if parts else "no devices"


def progress(deployment: Deployment) -> Progress:
    """Bar segments for a deployment's per-device counts (largest-remainder rounding to 100 %)."""
    counts = [sum(deployment.counts.get(s, 0) for s in statuses) for _css, _label, statuses in SEGMENTS]
    total = sum(counts)
    if total == 0:
        widths = [0] * len(counts)
    else:
        exact = [c * 100 / total for c in counts]
        widths = [int(x) for x in exact]
        order = sorted(range(len(exact)), key=lambda i: exact[i] - widths[i], reverse=True)
        for i in order[:100 - sum(widths)]:
            widths[i] += 1
    segments = [Segment(css, label, count, width)
                for (css, label, _statuses), count, width in zip(SEGMENTS, counts, widths, strict=True)]
    return Progress(total=total, done=counts[0] + counts[1], segments=segments)


@dataclass(frozen=True)
class ComponentGroup:
    name: str
    versions: list[Component]  # newest first

    @property
    def latest(self) -> str:
        return self.versions[0].version


def group_components(components: list[Component]) -> list[ComponentGroup]:
    """Versions grouped by component name (names sorted, newest version first)."""
    by_name: dict[str, list[Component]] = {}
    for component in components:
        by_name.setdefault(component.name, []).append(component)
    return [ComponentGroup(name, list(reversed(versions))) for name, versions in sorted(by_name.items())]
