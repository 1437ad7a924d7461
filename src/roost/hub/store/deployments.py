"""Deployments to a device or a group."""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any, Literal, overload

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.orm import Session

from roost.hub import contract, desired, rollout
from roost.hub.contract import (
    OPEN_STATUSES,
    DeploymentCreate,
    DeploymentDevice,
    DeploymentStatus,
    DeviceDeploymentStatus,
    FailurePolicy,
    TargetType,
)
from roost.hub.contract.learn import GateCheck
from roost.hub.errors import HubConflictError, HubInvalidInputError, HubNotFoundError, UnprocessableError
from roost.hub.models import Component, Deployment, Device, DeviceDeployment, Group, GroupMember
from roost.hub.names import check_name
from roost.hub.store import models_gate
from roost.hub.store.fleet import FleetStore
from roost.hub.store.secrets import SECRET_MANAGER, parse_secret_manager_config
from roost.recipe import Recipe, RecipeError, parse_recipe, resolve
from roost.recipe.resolve import BUILTINS

#: AWS-provided components a hub deployment may name, for the configuration it gives them: the
#: secret manager's cloudSecrets say which secrets the devices receive (docs/secrets.md).
DEPLOYABLE_BUILTINS = frozenset({SECRET_MANAGER})

logger = logging.getLogger(__name__)

FAILURE_POLICIES: tuple[FailurePolicy, ...] = tuple(FailurePolicy)


#: A deployment id's shortest accepted prefix (the console and the progress bar show 8 characters).
MIN_ID_PREFIX = 4
_ID_PREFIX = re.compile(r"^[0-9a-f-]+$")
#: Candidates named in an ambiguous-prefix error.
_CANDIDATES_SHOWN = 10


def _known_deployment_id(deployment_id: str) -> str:
    """``deployment_id`` if it can name a deployment: a full id, or a prefix of at least 4 characters."""
    text = deployment_id.strip().lower()
    if rollout.DEPLOYMENT_ID.fullmatch(text) or (len(text) >= MIN_ID_PREFIX and _ID_PREFIX.fullmatch(text)):
        return text
    raise HubNotFoundError(f"deployment {deployment_id!r} does not exist (give its id, or a unique prefix of at "
                           f"least {MIN_ID_PREFIX} characters)", code="DEPLOYMENT_NOT_FOUND")


def resolve_deployment_id(s: Session, deployment_id: str) -> str:
    """The full id of the one deployment whose id is or starts with ``deployment_id``.

    Raises ``DEPLOYMENT_NOT_FOUND`` when none matches and ``DEPLOYMENT_ID_AMBIGUOUS`` (listing the
    candidates) when several do.
    """
    text = _known_deployment_id(deployment_id)
    if rollout.DEPLOYMENT_ID.fullmatch(text):
        return text
    matches = list(s.scalars(select(Deployment.id).where(Deployment.id.startswith(text, autoescape=True))
                             .order_by(Deployment.seq.desc()).limit(_CANDIDATES_SHOWN + 1)))
    if not matches:
        raise HubNotFoundError(f"no deployment id starts with {text!r}", code="DEPLOYMENT_NOT_FOUND")
    if len(matches) > 1:
        shown = ", ".join(matches[:_CANDIDATES_SHOWN]) + (", ..." if len(matches) > _CANDIDATES_SHOWN else "")
        raise HubInvalidInputError(f"deployment id prefix {text!r} is ambiguous: it starts {shown}; give more "
                                   "characters", code="DEPLOYMENT_ID_AMBIGUOUS")
    return str(matches[0])


#: The target type of the cluster's replicas on one node (``replicas:NODE``): made by the hub's
#: admission only, never through the API.
REPLICAS_TARGET = "replicas"


def parse_target(target: str) -> tuple[str, str]:
    kind, sep, name = target.partition(":")
    if not sep or kind not in tuple(TargetType) or not name:
        raise UnprocessableError(f"invalid target {target!r}: expected device:NAME or group:NAME",
                                 code="INVALID_TARGET")
    return kind, check_name(name, f"{kind} name")


class DeploymentStore(FleetStore):
    """Deployments: validation, dependency resolution, creation (superseding), status, cancelation."""

    # -- deployments -------------------------------------------------------------------------------

    def _deployment_info(self, s: Session, d: Deployment, *, with_devices: bool) -> contract.Deployment:
        devices = None
        if with_devices:
            rows = s.execute(select(DeviceDeployment, Device.name)
                             .join(Device, Device.id == DeviceDeployment.device_id)
                             .where(DeviceDeployment.deployment_id == d.id).order_by(Device.name)).all()
            devices = [DeploymentDevice(device=name, status=DeviceDeploymentStatus(r.status),
                                        reason_code=r.reason_code, message=r.message,
                                        released_at=r.released_at, updated_at=r.updated_at)
                       for r, name in rows]
        tally = rollout.counts(s, d.id)
        tally["total"] = sum(tally.values())
        return contract.Deployment(
            id=d.id, target=f"{d.target_type}:{d.target_name}", components=dict(d.components),
            configuration=dict(d.configuration), failure_policy=FailurePolicy(d.failure_policy),
            max_per_minute=d.max_per_minute,
            abort_failure_percent=d.abort_failure_percent, abort_min_devices=d.abort_min_devices,
            timeout_minutes=d.timeout_minutes, created_at=d.created_at, status=DeploymentStatus(d.status),
            status_reason=d.status_reason, revision=d.seq, counts=tally, devices=devices,
            dependencies={str(k): str(v) for k, v in (d.dependencies or {}).items()},
            component_update_policy=_update_policy(d.update_policy_action, d.update_timeout_seconds),
            configuration_validation_policy=contract.ConfigurationValidationPolicy(
                timeout_seconds=d.validation_timeout_seconds),
            gate=[GateCheck.model_validate(check) for check in d.gate or []])

    def _validate_deployment(self, s: Session, req: DeploymentCreate) -> None:
        for name, version in req.components.items():
            check_name(name, "component name")
            check_name(version, "component version")
            if name in DEPLOYABLE_BUILTINS:
                continue  # configuration only (checked below); the resolver checks its version
            if name in BUILTINS:
                raise UnprocessableError(
                    f"{name} is built into every Roost agent (at version {BUILTINS[name].version}; see "
                    "docs/builtins.md): there is nothing to deploy, and components that depend on it are "
                    "satisfied without it; leave it out of the deployment", code="BUILTIN_NOT_DEPLOYABLE")
            if s.get(Component, (name, version)) is None:
                known = s.scalar(select(Component.name).where(Component.name == name).limit(1)) is not None
                what = f"version {version} of component {name}" if known else f"component {name}"
                raise UnprocessableError(f"{what} is not published", code="UNKNOWN_COMPONENT")
        stray = sorted(set(req.configuration) - set(req.components))
        if stray:
            raise UnprocessableError(f"configuration given for component(s) not in the deployment: "
                                     f"{', '.join(stray)}", code="INVALID_CONFIGURATION")
        for name, update_ in req.configuration.items():
            if not isinstance(update_, dict) or not set(update_) <= {"MERGE", "RESET"}:
                raise UnprocessableError(f"configuration of {name} must be {{\"MERGE\": {{...}}, \"RESET\": [...]}}",
                                         code="INVALID_CONFIGURATION")
            if name == SECRET_MANAGER:
                parse_secret_manager_config(update_)
        if req.failure_policy not in FAILURE_POLICIES:
            raise UnprocessableError(f"failure_policy must be one of {', '.join(FAILURE_POLICIES)}",
                                     code="INVALID_FAILURE_POLICY")
        for label, value, low in (("max_per_minute", req.max_per_minute, 1),
                                  ("abort_failure_percent", req.abort_failure_percent, 0),
                                  ("abort_min_devices", req.abort_min_devices, 1),
                                  ("timeout_minutes", req.timeout_minutes, 1)):
            if value is not None and value < low:
                raise UnprocessableError(f"{label} must be at least {low}", code="INVALID_ROLLOUT")
        if req.abort_failure_percent is not None and req.abort_failure_percent > 100:
            raise UnprocessableError("abort_failure_percent must be at most 100", code="INVALID_ROLLOUT")

    def _resolve_dependencies(self, s: Session, roots: dict[str, str]) -> dict[str, str]:
        """The versions of every component the roots need (ComponentDependencies, transitively).

        Each dependency gets the highest published version that satisfies every requirer
        (:func:`roost.recipe.resolve`, the resolver the agent uses for local deployments). SOFT
        dependencies are resolved like HARD ones; AWS-provided components Roost builds in
        (:data:`roost.recipe.resolve.BUILTINS`) are satisfied by every agent and are not among the
        dependencies; another ``aws.greengrass.*`` name nobody published is ``AWS_COMPONENT_UNAVAILABLE``.
        """
        if not any(name in BUILTINS for name in roots) and not any(
                _declares_dependencies(recipe) for recipe in s.scalars(select(Component.recipe).where(
                    tuple_(Component.name, Component.version).in_(sorted(roots.items()))))):
            # No root is built in or names a dependency: nothing to resolve (the roots were checked above).
            return {}
        available: dict[str, list[Recipe]] = {}
        frontier = sorted(roots)
        while frontier:
            name = frontier.pop()
            if name in available or name in BUILTINS:
                continue
            available[name] = [parse_recipe(json.dumps(recipe), source=f"hub recipe {name}-{version}", fmt="json")
                               for version, recipe in s.execute(select(Component.version, Component.recipe)
                                                                .where(Component.name == name))]
            frontier.extend(sorted({dep for r in available[name] for dep in r.dependencies} - set(available)))
        try:
            resolved = resolve(roots, available)
        except RecipeError as err:
            raise UnprocessableError(f"cannot resolve the deployment's dependencies: {err.message}",
                                     code=err.code) from err
        return {name: recipe.version for name, recipe in resolved.items() if name not in roots}

    def create_deployment(self, req: DeploymentCreate) -> contract.Deployment:
        """A new revision for a target; it supersedes the target's previous deployment.

        A ``group:NAME`` target must be an existing group (``GROUP_NOT_FOUND``: a typo must not make a
        new, empty group) unless ``req.create_group`` asks for it to be created.
        """
        kind, target_name = parse_target(req.target)
        now = self.clock()
        deployment_id = str(uuid.uuid4())

        def run(s: Session) -> contract.Deployment:
            return self._create_deployment(s, req, kind, target_name, deployment_id, now)
        info = self._write(run)
        logger.info("deployment %s to %s: %d devices", deployment_id, req.target, info.counts["total"])
        return info

    @overload
    def _create_deployment(self, s: Session, req: DeploymentCreate, kind: str, target_name: str, deployment_id: str,
                           now: datetime) -> contract.Deployment: ...

    @overload
    def _create_deployment(self, s: Session, req: DeploymentCreate, kind: str, target_name: str, deployment_id: str,
                           now: datetime, *, info: Literal[False]) -> None: ...

    def _create_deployment(self, s: Session, req: DeploymentCreate, kind: str, target_name: str, deployment_id: str,
                           now: datetime, *, info: bool = True) -> contract.Deployment | None:
        """Create the deployment in ``s`` (the caller's transaction): see :meth:`create_deployment`.

        ``kind`` may also be ``replicas`` (:data:`REPLICAS_TARGET`): the cluster's replicas on one node,
        a target of its own so that they never replace what the device's own deployments give it.
        """
        create_group = req.create_group
        self._validate_deployment(s, req)
        # The cluster's replicas follow the service type's version: the gate is for operators' deployments.
        gate = models_gate.gate_checks(s, req, kind, target_name) if kind != REPLICAS_TARGET else []
        dependencies = self._resolve_dependencies(s, req.components)
        if kind in (TargetType.DEVICE, REPLICAS_TARGET):
            target = self._device(s, target_name)
            device_ids = [] if target.revoked_at is not None else [target.id]
        else:
            if create_group:
                self._ensure_group(s, target_name)
            elif s.get(Group, target_name) is None:
                known = list(s.scalars(select(Group.name).order_by(Group.name).limit(20)))
                raise HubNotFoundError(
                    f"group {target_name} does not exist (groups: {', '.join(known) or 'none'}); add devices "
                    "to it first (`roost group add`), or ask for it to be created (create_group, "
                    "`--create-group`)", code="GROUP_NOT_FOUND")
            device_ids = list(s.scalars(select(GroupMember.device_id)
                                        .join(Device, Device.id == GroupMember.device_id)
                                        .where(GroupMember.group_name == target_name,
                                               Device.revoked_at.is_(None)).order_by(GroupMember.device_id)))
        previous = list(s.scalars(select(Deployment).where(
            Deployment.target_type == kind, Deployment.target_name == target_name,
            Deployment.status == DeploymentStatus.ACTIVE).order_by(Deployment.seq).with_for_update()))
        seq = desired.bump_revision(s)
        for prev in previous:
            prev.status = DeploymentStatus.SUPERSEDED
            prev.status_reason = f"superseded by deployment {deployment_id}"
            s.execute(update(DeviceDeployment).where(
                DeviceDeployment.deployment_id == prev.id, DeviceDeployment.status.in_(OPEN_STATUSES),
            ).values(status=DeviceDeploymentStatus.CANCELED, reason_code="SUPERSEDED",
                     message=f"superseded by deployment {deployment_id}", updated_at=now))
        deployment = Deployment(
            id=deployment_id, seq=seq, target_type=kind, target_name=target_name,
            components=dict(req.components), dependencies=dependencies, configuration=dict(req.configuration),
            failure_policy=req.failure_policy, max_per_minute=req.max_per_minute,
            abort_failure_percent=req.abort_failure_percent, abort_min_devices=req.abort_min_devices,
            timeout_minutes=req.timeout_minutes, created_at=now,
            update_policy_action=req.component_update_policy.action,
            update_timeout_seconds=req.component_update_policy.timeout_seconds,
            validation_timeout_seconds=req.configuration_validation_policy.timeout_seconds,
            gate=[check.model_dump(mode="json") for check in gate],
            status=DeploymentStatus.ACTIVE if device_ids else DeploymentStatus.COMPLETED)
        s.add(deployment)
        s.flush()
        first = device_ids if req.max_per_minute is None else device_ids[:req.max_per_minute]
        released = set(first)
        if device_ids:
            s.execute(insert(DeviceDeployment), [
                {"deployment_id": deployment_id, "device_id": i, "status": DeviceDeploymentStatus.QUEUED,
                 "released_at": now if i in released else None, "updated_at": now} for i in device_ids])
        desired.mark_changed(s, released, seq)
        return self._deployment_info(s, deployment, with_devices=True) if info else None

    def get_deployment(self, deployment_id: str) -> contract.Deployment:
        """A deployment by id or unique id prefix (timeouts and the abort rule applied)."""
        _known_deployment_id(deployment_id)
        now = self.clock()

        def run(s: Session) -> contract.Deployment:
            nonlocal deployment_id
            deployment_id = resolve_deployment_id(s, deployment_id)
            desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
            d = s.get(Deployment, deployment_id)
            if d is None:
                raise HubNotFoundError(f"deployment {deployment_id} does not exist", code="DEPLOYMENT_NOT_FOUND")
            return self._deployment_info(s, d, with_devices=True)
        return self._write(run)

    def list_deployments(self, limit: int = 500) -> list[contract.Deployment]:
        now = self.clock()

        def refresh(s: Session) -> None:
            for deployment_id in rollout.open_deployments(s):
                desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
        self._write(refresh)

        def run(s: Session) -> list[contract.Deployment]:
            rows = s.scalars(select(Deployment).order_by(Deployment.seq.desc()).limit(limit))
            return [self._deployment_info(s, d, with_devices=False) for d in rows]
        return self._read(run)

    def cancel_deployment(self, deployment_id: str) -> contract.Deployment:
        """Stop a deployment (by id or unique id prefix): devices that have not started it keep their
        previous state."""
        _known_deployment_id(deployment_id)
        now = self.clock()

        def run(s: Session) -> contract.Deployment:
            nonlocal deployment_id
            deployment_id = resolve_deployment_id(s, deployment_id)
            d = rollout.lock_deployment(s, deployment_id)
            if d is None:
                raise HubNotFoundError(f"deployment {deployment_id} does not exist", code="DEPLOYMENT_NOT_FOUND")
            if d.status == DeploymentStatus.ACTIVE:
                d.status = DeploymentStatus.CANCELED
                d.status_reason = "canceled by an administrator"
                desired.mark_changed(s, rollout.cancel_queued(s, d, now, "CANCELED", "the deployment was canceled"))
            elif d.status != DeploymentStatus.CANCELED:
                raise HubConflictError(f"deployment {deployment_id} is {d.status} and can no longer be canceled",
                                       code="DEPLOYMENT_FINISHED")
            return self._deployment_info(s, d, with_devices=True)
        return self._write(run)


def _declares_dependencies(recipe: dict[str, Any]) -> bool:
    """Whether a stored recipe (Greengrass JSON, keys in any case) lists ComponentDependencies."""
    return any(key.lower() == "componentdependencies" and value for key, value in recipe.items())


def _update_policy(action: str, timeout_seconds: int) -> contract.ComponentUpdatePolicy:
    return contract.ComponentUpdatePolicy.model_validate({"action": action, "timeout_seconds": timeout_seconds})
