"""IPC traffic per component, for the metrics endpoint (:mod:`roost.observe.agent_metrics`).

Cheap on the hot path: a connection adds to its own integer fields (``messages_in``, ``bytes_in``,
``bytes_out``); they are folded into the per-component totals here when it closes, and summed
with the open connections' at scrape time. Drops (slow consumers) and refusals (unauthorised,
over a limit, too large) are rare and counted here directly. Bounded: at most
:data:`MAX_COMPONENTS` components (the rest are counted under ``"(other)"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

MAX_COMPONENTS: Final = 4096
OTHER: Final = "(other)"


@dataclass
class Traffic:
    messages_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    drops: int = 0
    refusals: int = 0


class CountedConnection(Protocol):
    principal: str | None
    messages_in: int
    bytes_in: int
    bytes_out: int


class IpcCounters:
    def __init__(self) -> None:
        self.closed: dict[str, Traffic] = {}

    def _entry(self, principal: str) -> Traffic:
        entry = self.closed.get(principal)
        if entry is None:
            if len(self.closed) >= MAX_COMPONENTS:
                principal = OTHER
                entry = self.closed.get(principal)
            if entry is None:
                entry = self.closed[principal] = Traffic()
        return entry

    def fold(self, conn: CountedConnection) -> None:
        """A connection ends: keep what it carried (once; its fields are zeroed)."""
        if conn.principal is None:
            return
        entry = self._entry(conn.principal)
        entry.messages_in += conn.messages_in
        entry.bytes_in += conn.bytes_in
        entry.bytes_out += conn.bytes_out
        conn.messages_in = conn.bytes_in = conn.bytes_out = 0

    def dropped(self, principal: str | None) -> None:
        if principal is not None:
            self._entry(principal).drops += 1

    def refused(self, principal: str | None) -> None:
        if principal is not None:
            self._entry(principal).refusals += 1

    def totals(self, open_connections: Iterable[CountedConnection]) -> dict[str, Traffic]:
        """Per component: what closed connections carried plus what open ones carry so far."""
        out = {name: Traffic(t.messages_in, t.bytes_in, t.bytes_out, t.drops, t.refusals)
               for name, t in self.closed.items()}
        for conn in open_connections:
            if conn.principal is None:
                continue
            entry = out.get(conn.principal)
            if entry is None:
                entry = out[conn.principal] = Traffic()
            entry.messages_in += conn.messages_in
            entry.bytes_in += conn.bytes_in
            entry.bytes_out += conn.bytes_out
        return out


__all__ = ["MAX_COMPONENTS", "OTHER", "IpcCounters", "Traffic"]
