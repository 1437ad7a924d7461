"""Service types: what a client may ask the cluster for (``scalar``, ``image``, ...).

A service type names the component (published in the hub's registry) whose replicas serve it, the
resources each replica requests (what placement counts against a node's allocatable) and is limited
to, node affinity, how many sessions one replica serves, replica bounds and the idle timeout after
which a session ends and an unused replica is stopped. Written as YAML or JSON, camelCase as in
Kubernetes (snake_case is accepted too)::

    name: scalar
    component: com.roost.ClusterScalar
    version: 1.0.0            # optional: the newest published version when absent
    kind: tabular             # tabular (windows of rows) or image
    window: 40
    resources:
      requests: {memory: 3417969Ki}
      limits: {memory: 3906250Ki}
    affinity:
      required: [{key: machine, operator: NotIn, values: [nano]}]
      preferred:
        - {weight: 70, match: [{key: machine, operator: In, values: [xavier]}]}
        - {weight: 30, match: [{key: machine, operator: In, values: [tx2]}]}
    sessionsPerReplica: 1
    minReplicas: 0
    maxReplicas: 64
    idleTimeoutSeconds: 300

:data:`SHIPPED` holds ``scalar`` and ``image`` with the original edge cluster's requests, limits and
affinity, and its one session per replica.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from roost.cluster.affinity import Affinity
from roost.cluster.errors import QuantityError, ServiceTypeInvalidError
from roost.cluster.quantity import cpu_millis, memory_bytes

Kind = Literal["tabular", "image"]
#: The largest service-type file read.
MAX_FILE_BYTES = 256 * 1024


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class Resources(_Spec):
    """``{memory, cpu}`` quantities; either may be absent (0: not counted)."""

    memory: str | None = Field(None, max_length=32)
    cpu: str | None = Field(None, max_length=32)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                memory_bytes(value, "memory")
            except QuantityError as err:
                raise ValueError(err.message) from err
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                cpu_millis(value, "cpu")
            except QuantityError as err:
                raise ValueError(err.message) from err
        return value

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory) if self.memory is not None else 0

    @property
    def cpu_millis(self) -> int:
        return cpu_millis(self.cpu) if self.cpu is not None else 0


class Requirements(_Spec):
    requests: Resources = Field(default_factory=lambda: Resources.model_validate({}))
    limits: Resources = Field(default_factory=lambda: Resources.model_validate({}))

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Requirements:
        if self.limits.memory is not None and self.limits.memory_bytes < self.requests.memory_bytes:
            raise ValueError(f"the memory limit {self.limits.memory} is below the request {self.requests.memory}")
        if self.limits.cpu is not None and self.limits.cpu_millis < self.requests.cpu_millis:
            raise ValueError(f"the cpu limit {self.limits.cpu} is below the request {self.requests.cpu}")
        return self


#: A service type's name: a DNS label (it also names the Kubernetes Deployment).
SERVICE_TYPE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ServiceType(_Spec):
    name: str = Field(..., pattern=SERVICE_TYPE_NAME.pattern,
                      description="A DNS label (it also names the Kubernetes Deployment)")
    component: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    version: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
    kind: Kind = "tabular"
    window: int = Field(40, ge=1, le=10_000, description="Rows per window (tabular)")
    resources: Requirements = Field(default_factory=lambda: Requirements.model_validate({}))
    affinity: Affinity = Field(default_factory=lambda: Affinity())
    sessions_per_replica: int = Field(1, ge=1, le=1000)
    min_replicas: int = Field(0, ge=0, le=1000)
    max_replicas: int = Field(64, ge=1, le=1000)
    idle_timeout_seconds: float = Field(300.0, gt=0, le=86400)
    #: Accept clients of the original protocol (40 JSON frames per window, no token) for sessions the
    #: compatibility routes (/app-service, /driver-*) admitted.
    legacy_clients: bool = True

    @model_validator(mode="after")
    def _bounds(self) -> ServiceType:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas {self.min_replicas} is above maxReplicas {self.max_replicas}")
        return self

    @cached_property
    def memory_request(self) -> int:
        return self.resources.requests.memory_bytes

    @cached_property
    def cpu_request(self) -> int:
        return self.resources.requests.cpu_millis

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form (what files and the API use)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_service_type(data: Any, source: str = "service type") -> ServiceType:
    """A :class:`ServiceType` from parsed YAML/JSON; ``SERVICE_TYPE_INVALID`` naming the field otherwise."""
    if not isinstance(data, dict):
        raise ServiceTypeInvalidError(f"{source}: expected a mapping with name and component, got "
                                      f"{type(data).__name__}")
    try:
        return ServiceType.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
        raise ServiceTypeInvalidError(f"{source}: {problems}") from err


def load_service_types(path: Path) -> list[ServiceType]:
    """Every service type in a YAML or JSON file: one document, a list, or several YAML documents."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ServiceTypeInvalidError(f"{path}: {size} bytes is more than a service-type file may hold "
                                          f"({MAX_FILE_BYTES})")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as err:
        raise ServiceTypeInvalidError(f"{path}: cannot be read: {err}") from err
    try:
        docs = [json.loads(text)] if path.suffix == ".json" else [d for d in yaml.safe_load_all(text) if d is not None]
    except (ValueError, yaml.YAMLError) as err:
        raise ServiceTypeInvalidError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                      f"{err}") from err
    items: list[Any] = []
    for doc in docs:
        items.extend(doc if isinstance(doc, list) else [doc])
    if not items:
        raise ServiceTypeInvalidError(f"{path}: holds no service type")
    out = [parse_service_type(item, f"{path} item {i + 1}") for i, item in enumerate(items)]
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ServiceTypeInvalidError(f"{path}: service type(s) {', '.join(dupes)} defined twice")
    return out


def _shipped(name: str, component: str, kind: Kind, window: int, request: str, limit: str) -> ServiceType:
    machine = "machine"
    return ServiceType.model_validate({
        "name": name, "component": component, "version": "1.0.0", "kind": kind, "window": window,
        "resources": {"requests": {"memory": request}, "limits": {"memory": limit}},
        "affinity": {"required": [{"key": machine, "operator": "NotIn", "values": ["nano"]}],
                     "preferred": [{"weight": 70, "match": [{"key": machine, "operator": "In", "values": ["xavier"]}]},
                                   {"weight": 30, "match": [{"key": machine, "operator": "In", "values": ["tx2"]}]}]},
        "sessionsPerReplica": 1})


#: The original edge cluster's two types: its memory requests and limits, node affinity, and one
#: session per replica.
SHIPPED: dict[str, ServiceType] = {
    "scalar": _shipped("scalar", "com.roost.ClusterScalar", "tabular", 40, "3417969Ki", "3906250Ki"),
    "image": _shipped("image", "com.roost.ClusterImage", "image", 1, "4394531Ki", "4882812Ki"),
}

__all__ = ["MAX_FILE_BYTES", "SHIPPED", "Kind", "Requirements", "Resources", "ServiceType", "load_service_types",
           "parse_service_type"]
