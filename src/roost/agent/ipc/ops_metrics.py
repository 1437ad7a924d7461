"""``PutComponentMetric`` (a component reports metrics) and Roost's ``GetComponentMetrics`` (the
CLI reads them back). The store is :class:`roost.agent.component_metrics.ComponentMetrics`, which
the agent (the IPC core) carries as ``component_metrics``.

``PutComponentMetric`` is authorised per metric: ``accessControl`` service
``aws.greengrass.ipc.componentmetric``, resource = the metric name (the nucleus' check; unlike the
nucleus, Roost does not limit the operation to ``aws.*`` components: any component with a policy
may report). ``GetComponentMetrics`` needs ``aws.greengrass.Cli`` (resource: the component name,
or none for all), as the CLI operations do.
"""

from __future__ import annotations

from typing import Any, Final

from roost.agent import authz
from roost.agent.component_metrics import ComponentMetrics, parse_metrics
from roost.agent.ipc.types import ConnectionSide
from roost.errors import InvalidInputError, RoostError
from roost.ipc.rpc import OP_GET_COMPONENT_METRICS, OP_PUT_COMPONENT_METRIC

METRIC_SERVICE: Final = "aws.greengrass.ipc.componentmetric"


def _store(conn: ConnectionSide) -> ComponentMetrics:
    found = getattr(conn.core, "component_metrics", None)
    if not isinstance(found, ComponentMetrics):
        raise RoostError("component metrics are not kept by this agent", code="METRICS_UNAVAILABLE")
    return found


def _put_component_metric(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    metrics = parse_metrics(request)
    for name in dict.fromkeys(m.name for m in metrics):
        conn.authorize(METRIC_SERVICE, operation, name)
    _store(conn).put(principal, metrics)
    return {}


def _get_component_metrics(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    conn.require_principal()
    name = request.get("componentName")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError(f"componentName must be a non-empty string, got {name!r}", code="INVALID_REQUEST")
    conn.authorize(authz.CLI_SERVICE, operation, name)
    return {"components": _store(conn).snapshot(name)}


HANDLERS: Final = {
    OP_PUT_COMPONENT_METRIC: _put_component_metric,
    OP_GET_COMPONENT_METRICS: _get_component_metrics,
}
