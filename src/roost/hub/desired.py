"""A device's desired state and the revision counter.

The desired state of a device is the union of the components of its *effective* deployments: for
the device itself and for each group it belongs to, the newest deployment to that target whose
row for this device is released (a device not yet released for the newest keeps the one before).
A component named by two effective deployments at different versions is a conflict: the newer
deployment's row for this device becomes FAILED with reason ``DESIRED_STATE_CONFLICT`` (the message
names both deployments) and that target falls back to its previous deployment, so the device keeps
a consistent state and the endpoint never fails.

The revision: one global counter (``meta.revision``) bumped once per transaction that changes any
desired state; each affected device's ``desired_revision`` is set to the new value, so a device
long-polls only for its own changes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.orm import Session

from roost.hub.contract import (
    Artifact,
    ComponentUpdatePolicy,
    ConfigurationValidationPolicy,
    Desired,
    DesiredComponent,
    FailurePolicy,
)
from roost.hub.errors import DesiredStateConflictError
from roost.hub.models import ArtifactFile, Component, Deployment, Device, DeviceDeployment, GroupMember, Meta
from roost.hub.rollout import ACTIVE, FAILED, IN_PROGRESS, QUEUED, ROLLED_BACK
from roost.recipe import sort_versions
from roost.recipe.resolve import BUILTINS

#: What a device should run (the contract's :class:`~roost.hub.contract.Desired`), under its store name.
DesiredState = Desired
REVISION_KEY = "revision"
CONFLICT = "DESIRED_STATE_CONFLICT"
#: Largest IN (...) list in one statement.
CHUNK = 500


def current_revision(session: Session) -> int:
    return int(session.scalar(select(Meta.value).where(Meta.key == REVISION_KEY)) or 0)


def bump_revision(session: Session) -> int:
    """Increment the global revision (row-locked until commit) and return the new value."""
    value = session.execute(
        update(Meta).where(Meta.key == REVISION_KEY).values(value=Meta.value + 1).returning(Meta.value)
    ).scalar_one_or_none()
    if value is None:  # a database migrated without the seed row
        session.add(Meta(key=REVISION_KEY, value=1))
        session.flush()
        return 1
    return int(value)


def mark_changed(session: Session, device_ids: Iterable[int], revision: int | None = None) -> int | None:
    """Bump the revision (unless given) and stamp it on the devices. ``None`` if no device."""
    ids = sorted(set(device_ids))
    if not ids:
        return revision
    if revision is None:
        revision = bump_revision(session)
    for start in range(0, len(ids), CHUNK):
        session.execute(update(Device).where(Device.id.in_(ids[start:start + CHUNK])).values(desired_revision=revision))
    return revision


class DeviceRef(NamedTuple):
    """What the desired-state computation needs of a device row."""

    id: int
    name: str
    desired_revision: int


class Probe(NamedTuple):
    revision: int
    #: Rows wait for a rollout release (:func:`roost.hub.rollout.release_pending`).
    pending: bool


def probe(session: Session, device_ids: Iterable[int]) -> dict[int, Probe]:
    """Revision and pending flag of the devices among ``device_ids`` that exist and are not revoked
    (one read-only statement per 500 devices)."""
    ids = sorted(set(device_ids))
    pending = (select(DeviceDeployment.device_id)
               .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
               .where(DeviceDeployment.device_id == Device.id, DeviceDeployment.released_at.is_(None),
                      DeviceDeployment.status == QUEUED, Deployment.status == ACTIVE)
               .correlate(Device).exists())
    out: dict[int, Probe] = {}
    for start in range(0, len(ids), CHUNK):
        for device_id, revision, waiting in session.execute(
                select(Device.id, Device.desired_revision, pending)
                .where(Device.id.in_(ids[start:start + CHUNK]), Device.revoked_at.is_(None))):
            out[int(device_id)] = Probe(int(revision), bool(waiting))
    return out


@dataclass(frozen=True)
class _Candidate:
    """One released, non-conflicting row of a device for a deployment to one of its targets."""

    deployment_id: str
    seq: int
    target: tuple[str, str]
    status: str


@dataclass(frozen=True)
class _DeploymentSpec:
    id: str
    seq: int
    components: dict[str, Any]
    dependencies: dict[str, Any]
    configuration: dict[str, Any]
    failure_policy: str
    timeout_minutes: int
    update_policy: ComponentUpdatePolicy
    validation_policy: ConfigurationValidationPolicy


def device_refs(session: Session, device_ids: Iterable[int]) -> dict[int, DeviceRef]:
    """The devices among ``device_ids`` that exist and are not revoked."""
    ids = sorted(set(device_ids))
    out: dict[int, DeviceRef] = {}
    for start in range(0, len(ids), CHUNK):
        for row in session.execute(select(Device.id, Device.name, Device.desired_revision).where(
                Device.id.in_(ids[start:start + CHUNK]), Device.revoked_at.is_(None))):
            out[int(row[0])] = DeviceRef(int(row[0]), str(row[1]), int(row[2]))
    return out


def _candidates(session: Session, devices: Sequence[DeviceRef]) -> dict[int, list[_Candidate]]:
    """Per device, its released rows for its own targets, newest first (2 queries): not those in conflict, nor
    those the device ROLLED_BACK (it is back on that target's previous deployment, as a Greengrass core
    device keeps only its successful deployments per thing group, so a later change to another target
    does not make it try the failed version again)."""
    ids = [d.id for d in devices]
    targets: dict[int, set[tuple[str, str]]] = {d.id: {("device", d.name), ("replicas", d.name)} for d in devices}
    out: dict[int, list[_Candidate]] = {d.id: [] for d in devices}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        for device_id, group in session.execute(select(GroupMember.device_id, GroupMember.group_name)
                                                .where(GroupMember.device_id.in_(chunk))):
            targets[int(device_id)].add(("group", str(group)))
        rows = session.execute(
            select(DeviceDeployment.device_id, DeviceDeployment.deployment_id, DeviceDeployment.status,
                   Deployment.seq, Deployment.target_type, Deployment.target_name)
            .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
            .where(DeviceDeployment.device_id.in_(chunk), DeviceDeployment.released_at.is_not(None),
                   DeviceDeployment.status != ROLLED_BACK,
                   or_(DeviceDeployment.reason_code.is_(None), DeviceDeployment.reason_code != CONFLICT))
            .order_by(Deployment.seq.desc()))
        for device_id, deployment_id, status, seq, target_type, target_name in rows:
            target = (str(target_type), str(target_name))
            if target in targets[int(device_id)]:
                out[int(device_id)].append(_Candidate(str(deployment_id), int(seq), target, str(status)))
    return out


def _specs(session: Session, deployment_ids: Iterable[str]) -> dict[str, _DeploymentSpec]:
    ids = sorted(set(deployment_ids))
    out: dict[str, _DeploymentSpec] = {}
    for start in range(0, len(ids), CHUNK):
        for d in session.execute(select(Deployment.id, Deployment.seq, Deployment.components, Deployment.dependencies,
                                        Deployment.configuration, Deployment.failure_policy, Deployment.timeout_minutes,
                                        Deployment.update_policy_action, Deployment.update_timeout_seconds,
                                        Deployment.validation_timeout_seconds)
                                 .where(Deployment.id.in_(ids[start:start + CHUNK]))):
            out[str(d[0])] = _DeploymentSpec(
                str(d[0]), int(d[1]), dict(d[2]), dict(d[3] or {}), dict(d[4] or {}), str(d[5]), int(d[6]),
                ComponentUpdatePolicy.model_validate({"action": d[7], "timeout_seconds": int(d[8])}),
                ConfigurationValidationPolicy(timeout_seconds=int(d[9])))
    return out


def _effective(candidates: list[_Candidate], excluded: set[str]) -> list[_Candidate]:
    """For each target, its newest candidate not ``excluded``; ordered by seq."""
    chosen: dict[tuple[str, str], _Candidate] = {}
    for c in candidates:  # newest first
        if c.deployment_id not in excluded:
            chosen.setdefault(c.target, c)
    return sorted(chosen.values(), key=lambda c: c.seq)


def _union(chosen: list[_Candidate], specs: dict[str, _DeploymentSpec]) -> dict[str, tuple[str, _DeploymentSpec]]:
    wanted: dict[str, tuple[str, _DeploymentSpec]] = {}
    for c in chosen:
        spec = specs[c.deployment_id]
        for name, version in sorted(spec.components.items()):
            if name in wanted and wanted[name][0] != str(version):
                first_version, first = wanted[name]
                raise DesiredStateConflictError(name, (first.id, first_version), (spec.id, str(version)))
            wanted[name] = (str(version), spec)
    return wanted


def _dependencies(chosen: list[_Candidate], specs: dict[str, _DeploymentSpec],
                  roots: Collection[str]) -> dict[str, str]:
    """Dependency versions of the deployments in effect, for components no deployment names as a root.

    Two deployments that resolved one dependency differently: the higher version goes (the agent's
    resolver checks it against every requirer's range and fails the deployment if it does not fit).
    """
    found: dict[str, list[str]] = {}
    for c in chosen:
        for name, version in specs[c.deployment_id].dependencies.items():
            if name not in roots:
                found.setdefault(name, []).append(str(version))
    return {name: sort_versions(sorted(set(versions)))[-1] for name, versions in sorted(found.items())}


def compute_many(session: Session, devices: Sequence[DeviceRef], now: datetime, *,
                 deliver: bool = True) -> dict[int, DesiredState]:
    """The desired state of every device in ``devices``, in a handful of statements for all of them.

    Records conflicts (the newer deployment's row FAILED with ``DESIRED_STATE_CONFLICT``; that target
    falls back to its previous deployment) and, when ``deliver``, marks the delivered QUEUED rows
    IN_PROGRESS. Must run in a write transaction.
    """
    if not devices:
        return {}
    candidates = _candidates(session, devices)
    specs = _specs(session, {c.deployment_id for cs in candidates.values() for c in cs})
    chosen: dict[int, list[_Candidate]] = {}
    wanted: dict[int, dict[str, tuple[str, _DeploymentSpec]]] = {}
    for device in devices:
        excluded: set[str] = set()
        while True:
            pairs = _effective(candidates[device.id], excluded)
            try:
                wanted[device.id] = _union(pairs, specs)
                chosen[device.id] = pairs
                break
            except DesiredStateConflictError as err:
                excluded.add(err.second_deployment)
                session.execute(update(DeviceDeployment).where(
                    DeviceDeployment.deployment_id == err.second_deployment,
                    DeviceDeployment.device_id == device.id,
                ).values(status=FAILED, reason_code=CONFLICT, message=err.message, updated_at=now))
    deps = {device_id: _dependencies(chosen[device_id], specs, w) for device_id, w in wanted.items()}
    keys = sorted({(name, version) for w in wanted.values() for name, (version, _) in w.items()}
                  | {(name, version) for d in deps.values() for name, version in d.items()})
    recipes: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(keys), CHUNK):
        for name, version, recipe in session.execute(select(Component.name, Component.version, Component.recipe).where(
                tuple_(Component.name, Component.version).in_(keys[start:start + CHUNK]))):
            recipes[(str(name), str(version))] = recipe
    files = _artifact_lists(session, keys)
    if deliver:
        delivered: dict[str, list[int]] = {}
        for device_id, pairs in chosen.items():
            for c in pairs:
                if c.status == QUEUED:
                    delivered.setdefault(c.deployment_id, []).append(device_id)
        for deployment_id, ids in sorted(delivered.items()):
            for start in range(0, len(ids), CHUNK):
                session.execute(update(DeviceDeployment).where(
                    DeviceDeployment.deployment_id == deployment_id,
                    DeviceDeployment.device_id.in_(sorted(ids)[start:start + CHUNK]),
                    DeviceDeployment.status == QUEUED).values(status=IN_PROGRESS, updated_at=now))
    out: dict[int, DesiredState] = {}
    for device in devices:
        pairs = chosen[device.id]
        components = {
            name: DesiredComponent(version=version, recipe=recipes.get((name, version), {}),
                                   configuration=dict(spec.configuration.get(name) or {}),
                                   artifacts=files.get((name, version), []))
            for name, (version, spec) in sorted(wanted[device.id].items())
            if name not in BUILTINS  # AWS-provided components the agent builds in: nothing to install
        }
        for name, version in deps[device.id].items():
            components[name] = DesiredComponent(version=version, recipe=recipes.get((name, version), {}), root=False,
                                                artifacts=files.get((name, version), []))
        components = dict(sorted(components.items()))
        in_effect = [specs[c.deployment_id] for c in pairs]
        newest = max(in_effect, key=lambda d: d.seq, default=None)
        timeouts = [d.timeout_minutes for d in in_effect if d.timeout_minutes]
        out[device.id] = DesiredState(
            revision=device.desired_revision, deployments=[d.id for d in in_effect], components=components,
            failure_policy=FailurePolicy(newest.failure_policy) if newest is not None else FailurePolicy.ROLLBACK,
            timeout_minutes=max(timeouts) if timeouts else None,
            # As failure_policy: the policies of the newest deployment in effect (the change about to apply).
            component_update_policy=newest.update_policy if newest is not None else ComponentUpdatePolicy(),
            configuration_validation_policy=newest.validation_policy if newest is not None
            else ConfigurationValidationPolicy())
    return out


def _artifact_lists(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Artifact]]:
    """Every artifact file of each ``(name, version)`` in ``keys``, by path (one statement per 500 versions)."""
    out: dict[tuple[str, str], list[Artifact]] = {}
    for start in range(0, len(keys), CHUNK):
        for name, version, file_name, sha256, size in session.execute(
                select(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name, ArtifactFile.sha256,
                       ArtifactFile.size)
                .where(tuple_(ArtifactFile.name, ArtifactFile.version).in_(keys[start:start + CHUNK]))
                .order_by(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name)):
            out.setdefault((str(name), str(version)), []).append(
                Artifact(file=str(file_name), sha256=str(sha256), size=int(size)))
    return out


def wanted_versions_many(session: Session, devices: Sequence[DeviceRef]) -> dict[int, dict[str, str]]:
    """Per device, the component versions it may download (read-only; conflicts leave out the newer)."""
    candidates = _candidates(session, devices)
    specs = _specs(session, {c.deployment_id for cs in candidates.values() for c in cs})
    out: dict[int, dict[str, str]] = {}
    for device in devices:
        wanted: dict[str, str] = {}
        chosen = _effective(candidates[device.id], set())
        for c in chosen:
            for name, version in specs[c.deployment_id].components.items():
                wanted.setdefault(name, str(version))
        wanted.update(_dependencies(chosen, specs, set(wanted)))
        out[device.id] = wanted
    return out


def effective_configurations(session: Session, device: DeviceRef, component: str) -> list[dict[str, Any]]:
    """The configuration updates that the device's deployments in effect give ``component`` (those
    that name it), oldest deployment first (read-only)."""
    candidates = _candidates(session, [device])
    specs = _specs(session, {c.deployment_id for c in candidates[device.id]})
    return [dict(specs[c.deployment_id].configuration.get(component) or {})
            for c in _effective(candidates[device.id], set()) if component in specs[c.deployment_id].components]
