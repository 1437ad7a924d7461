"""The hub's storage interface: every operation the API (and the console) needs.

No FastAPI here. :class:`Store` owns a :class:`~roost.hub.db.Database`, an
:class:`~roost.hub.artifacts.ArtifactStore` and a clock (injectable for tests). Each method is
one transaction (retried on a PostgreSQL deadlock or serialisation failure) and returns plain
dataclasses, which the REST layer serialises as they are.

Concurrency: several hub processes may share one PostgreSQL. Read-modify-writes lock the rows
they depend on (``SELECT ... FOR UPDATE``: the enrolment token, the deployment, the revision
counter); unique constraints are the final guard (device names, component versions, report ids).
On SQLite every write transaction holds the database write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import logging
import secrets
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from roost.hub import desired, reports, rollout
from roost.hub.artifacts import ArtifactStore, StagedFile, Staging, digest_b64
from roost.hub.db import Database
from roost.hub.desired import DesiredState
from roost.hub.errors import (
    AuthenticationError,
    ForbiddenError,
    GoneError,
    HubConflictError,
    HubError,
    HubNotFoundError,
    UnprocessableError,
)
from roost.hub.models import (
    ApiToken,
    ArtifactFile,
    Component,
    Deployment,
    Device,
    DeviceDeployment,
    EnrollToken,
    Group,
    GroupMember,
    Meta,
)
from roost.hub.names import check_file_name, check_name
from roost.hub.reports import Report as Report
from roost.hub.reports import ReportResult as ReportResult
from roost.hub.tokens import ADMIN_PREFIX, DEVICE_PREFIX, ENROLL_PREFIX, hash_token, new_token
from roost.recipe import Recipe, RecipeError, parse_recipe, recipe_to_dict, resolve

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]

#: Artifacts up to this size are read whole when a device's access is checked and served from memory
#: (streaming a file costs several worker-thread hops; a rollout of a small component to 10,000
#: devices is dominated by them). Larger ones stream from disk.
INLINE_ARTIFACT_BYTES = 64 * 1024
#: Devices seen within this window are ONLINE.
ONLINE_WINDOW = timedelta(seconds=120)
#: last_seen_at / last_used_at are written at most this often per device / token.
SEEN_THROTTLE = timedelta(seconds=10)
FAILURE_POLICIES = ("ROLLBACK", "DO_NOTHING")
UNHEALTHY_STATES = ("ERRORED", "BROKEN")


def _known_deployment_id(deployment_id: str) -> str:
    if not rollout.DEPLOYMENT_ID.fullmatch(deployment_id):
        raise HubNotFoundError(f"deployment {deployment_id!r} does not exist", code="DEPLOYMENT_NOT_FOUND")
    return deployment_id


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Results (also the REST response schemas)


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "device"]
    id: int
    name: str


@dataclass(frozen=True)
class EnrollTokenInfo:
    token: str
    expires_at: datetime
    group: str | None = None


@dataclass(frozen=True)
class Enrolment:
    device: str
    credential: str


@dataclass(frozen=True)
class ReportedComponent:
    version: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class DeviceDeploymentInfo:
    deployment_id: str
    status: str
    reason_code: str | None
    message: str | None
    released_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    labels: dict[str, Any]
    groups: list[str]
    created_at: datetime
    last_seen_at: datetime | None
    revoked: bool
    components: dict[str, ReportedComponent]
    status: Literal["ONLINE", "OFFLINE", "REVOKED"]
    health: Literal["HEALTHY", "UNHEALTHY", "UNKNOWN"]
    applied_revision: int | None
    desired_revision: int
    deployments: list[DeviceDeploymentInfo] | None = None


@dataclass(frozen=True)
class GroupInfo:
    name: str
    devices: list[str]


@dataclass(frozen=True)
class ArtifactInfo:
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ComponentInfo:
    name: str
    version: str
    artifacts: list[ArtifactInfo]
    created_at: datetime | None = None
    recipe: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeploymentDevice:
    device: str
    status: str
    reason_code: str | None
    message: str | None
    released_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class DeploymentInfo:
    id: str
    target: str
    components: dict[str, str]
    configuration: dict[str, Any]
    failure_policy: str
    max_per_minute: int | None
    abort_failure_percent: int | None
    abort_min_devices: int
    timeout_minutes: int
    created_at: datetime
    status: str
    status_reason: str | None
    revision: int
    counts: dict[str, int]
    devices: list[DeploymentDevice] | None = None
    #: Dependency versions the hub resolved for ``components`` (not listed there).
    dependencies: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentRequest:
    target: str
    components: dict[str, str]
    configuration: dict[str, Any] = field(default_factory=dict)
    failure_policy: str = "ROLLBACK"
    max_per_minute: int | None = None
    abort_failure_percent: int | None = None
    abort_min_devices: int = 1
    timeout_minutes: int = 60


@dataclass(frozen=True)
class ArtifactLocation:
    path: str
    sha256: str
    size: int
    file_name: str
    #: The file itself when it is small (at most INLINE_ARTIFACT_BYTES), read with the access check.
    content: bytes | None = None


# ---------------------------------------------------------------------------------------------


def _is_retryable(err: OperationalError) -> bool:
    code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
    return code in ("40001", "40P01")


def parse_target(target: str) -> tuple[str, str]:
    kind, sep, name = target.partition(":")
    if not sep or kind not in ("device", "group") or not name:
        raise UnprocessableError(f"invalid target {target!r}: expected device:NAME or group:NAME",
                                 code="INVALID_TARGET")
    return kind, check_name(name, f"{kind} name")


_KEY_PREFIX = "console.session_key."
_KEY_WORDS = 8


def _read_session_key(s: Session) -> bytes | None:
    rows = {str(k): int(v) for k, v in s.execute(select(Meta.key, Meta.value).where(Meta.key.startswith(_KEY_PREFIX)))}
    words = [rows.get(f"{_KEY_PREFIX}{i}") for i in range(_KEY_WORDS)]
    if any(w is None for w in words):
        return None
    return struct.pack(f">{_KEY_WORDS}i", *words)


class Store:
    """Every hub operation, each one transaction. See the module docstring."""

    def __init__(self, db: Database, artifacts: ArtifactStore, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.artifacts = artifacts
        self.clock = clock

    # -- plumbing --------------------------------------------------------------------------------

    def _write(self, fn: Callable[[Session], T], attempts: int = 5) -> T:
        for attempt in range(attempts):
            try:
                with self.db.write() as session:
                    return fn(session)
            except OperationalError as err:
                if not _is_retryable(err) or attempt == attempts - 1:
                    raise
                logger.info("transaction conflict (%s); retrying", type(err.orig).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Session], T]) -> T:
        with self.db.read() as session:
            return fn(session)

    def _device(self, session: Session, name: str, *, lock: bool = False) -> Device:
        query = select(Device).where(Device.name == check_name(name, "device name"))
        if lock:
            query = query.with_for_update()
        device = session.scalars(query).first()
        if device is None:
            raise HubNotFoundError(f"device {name} is not enrolled", code="DEVICE_NOT_FOUND")
        return device

    def revision(self) -> int:
        """The global desired-state revision (cheap; long-polls watch it)."""
        return self._read(desired.current_revision)

    # -- tokens ------------------------------------------------------------------------------------

    def admin_token_name(self, token_id: int) -> str | None:
        """The name of the admin API token ``token_id`` while it is valid, else None (console sessions)."""
        def run(s: Session) -> str | None:
            row = s.execute(select(ApiToken.name).where(ApiToken.id == token_id, ApiToken.role == "admin",
                                                        ApiToken.revoked_at.is_(None))).first()
            return None if row is None else str(row[0])
        return self._read(run)

    def console_session_key(self) -> bytes:
        """The console's cookie-signing key: random, created once (race-safe across hub processes).

        ``meta.value`` is an integer column, so the 256-bit key is kept as eight 32-bit words.
        """
        key = self._read(_read_session_key)
        if key is not None:
            return key

        def create(s: Session) -> bytes:
            existing = _read_session_key(s)
            if existing is not None:
                return existing
            words = struct.unpack(f">{_KEY_WORDS}i", secrets.token_bytes(4 * _KEY_WORDS))
            s.add_all(Meta(key=f"{_KEY_PREFIX}{i}", value=w) for i, w in enumerate(words))
            s.flush()
            return struct.pack(f">{_KEY_WORDS}i", *words)
        try:
            return self._write(create)
        except IntegrityError:  # another hub process created it first
            key = self._read(_read_session_key)
            if key is None:
                raise
            return key

    def create_admin_token(self, name: str = "admin") -> str:
        token = new_token(ADMIN_PREFIX)

        def run(s: Session) -> None:
            s.add(ApiToken(name=name, token_hash=hash_token(token), role="admin", created_at=self.clock()))
        self._write(run)
        logger.info("created admin API token %r", name)
        return token

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; :class:`AuthenticationError` when unknown or revoked."""
        digest = hash_token(token)
        now = self.clock()
        if token.startswith(DEVICE_PREFIX):
            def find_device(s: Session) -> tuple[int, str, datetime | None, datetime | None] | None:
                row = s.execute(select(Device.id, Device.name, Device.revoked_at, Device.last_seen_at)
                                .where(Device.credential_hash == digest)).first()
                return None if row is None else (row[0], row[1], row[2], row[3])
            found = self._read(find_device)
            if found is None:
                raise AuthenticationError("unknown device credential", code="INVALID_CREDENTIAL")
            device_id, name, revoked_at, last_seen = found
            if revoked_at is not None:
                raise AuthenticationError(f"device {name} was revoked; enrol it again", code="DEVICE_REVOKED")
            if last_seen is None or now - last_seen >= SEEN_THROTTLE:
                self._write(lambda s: s.execute(update(Device).where(Device.id == device_id)
                                                .values(last_seen_at=now)))
            return Principal("device", device_id, name)

        def find_token(s: Session) -> tuple[int, str, datetime | None, datetime | None] | None:
            row = s.execute(select(ApiToken.id, ApiToken.name, ApiToken.revoked_at, ApiToken.last_used_at)
                            .where(ApiToken.token_hash == digest)).first()
            return None if row is None else (row[0], row[1], row[2], row[3])
        found_token = self._read(find_token)
        if found_token is None:
            raise AuthenticationError("unknown API token", code="INVALID_TOKEN")
        token_id, token_name, revoked, last_used = found_token
        if revoked is not None:
            raise AuthenticationError("this API token was revoked", code="TOKEN_REVOKED")
        if last_used is None or now - last_used >= timedelta(seconds=60):
            self._write(lambda s: s.execute(update(ApiToken).where(ApiToken.id == token_id)
                                            .values(last_used_at=now)))
        return Principal("admin", token_id, token_name)

    # -- enrolment ---------------------------------------------------------------------------------

    def create_enroll_token(self, group: str | None = None, ttl_seconds: int = 3600) -> EnrollTokenInfo:
        if group is not None:
            check_name(group, "group name")
        if ttl_seconds <= 0:
            raise UnprocessableError("ttl_seconds must be positive", code="INVALID_TTL")
        token = new_token(ENROLL_PREFIX)
        now = self.clock()
        expires = now + timedelta(seconds=ttl_seconds)

        def run(s: Session) -> None:
            if group is not None:
                self._ensure_group(s, group)
            s.add(EnrollToken(token_hash=hash_token(token), group_name=group, created_at=now, expires_at=expires))
        self._write(run)
        return EnrollTokenInfo(token=token, expires_at=expires, group=group)

    def enroll(self, token: str, name: str, labels: dict[str, Any] | None = None) -> Enrolment:
        """Redeem a one-time enrolment token for a new device credential (exactly once)."""
        check_name(name, "device name")
        credential = new_token(DEVICE_PREFIX)
        now = self.clock()

        def run(s: Session) -> None:
            row = s.scalars(select(EnrollToken).where(EnrollToken.token_hash == hash_token(token))
                            .with_for_update()).first()
            if row is None:
                raise AuthenticationError("unknown enrolment token", code="ENROLL_TOKEN_INVALID")
            if row.used_at is not None:
                raise GoneError("this enrolment token was already used", code="ENROLL_TOKEN_USED")
            if row.expires_at <= now:
                raise AuthenticationError("this enrolment token has expired; ask for a new one",
                                          code="ENROLL_TOKEN_EXPIRED")
            if s.scalar(select(Device.id).where(Device.name == name)) is not None:
                raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS")
            # The guarded UPDATE is what makes redemption once-only, whatever the isolation level.
            claimed = s.execute(update(EnrollToken).where(EnrollToken.id == row.id, EnrollToken.used_at.is_(None))
                                .values(used_at=now))
            if getattr(claimed, "rowcount", 0) != 1:
                raise GoneError("this enrolment token was already used", code="ENROLL_TOKEN_USED")
            # A new device starts at the current revision: its first poll (after=0) is answered at once
            # with its state, and nothing wakes the fleet's long polls (only a hub that has never
            # changed anything moves its counter, once). Joining a group with a released deployment
            # moves it as any change does.
            revision = desired.current_revision(s) or desired.bump_revision(s)
            device = Device(name=name, credential_hash=hash_token(credential), labels=dict(labels or {}),
                            created_at=now, last_seen_at=now, reported={}, desired_revision=revision)
            s.add(device)
            try:
                s.flush()
            except IntegrityError as err:
                raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS") from err
            s.execute(update(EnrollToken).where(EnrollToken.id == row.id).values(device_id=device.id))
            if row.group_name is not None:
                self._join_group(s, row.group_name, device, now)

        try:
            self._write(run)
        except IntegrityError as err:  # a concurrent enrolment took the name at commit
            raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS") from err
        logger.info("device %s enrolled", name)
        return Enrolment(device=name, credential=credential)

    # -- devices -----------------------------------------------------------------------------------

    def _device_info(self, s: Session, device: Device, groups: list[str], now: datetime,
                     deployments: list[DeviceDeploymentInfo] | None = None) -> DeviceInfo:
        reported = {
            name: ReportedComponent(version=(v or {}).get("version") if isinstance(v, dict) else None,
                                    state=(v or {}).get("state") if isinstance(v, dict) else None)
            for name, v in sorted((device.reported or {}).items())
        }
        if device.revoked_at is not None:
            status: Literal["ONLINE", "OFFLINE", "REVOKED"] = "REVOKED"
        elif device.last_seen_at is not None and now - device.last_seen_at <= ONLINE_WINDOW:
            status = "ONLINE"
        else:
            status = "OFFLINE"
        health: Literal["HEALTHY", "UNHEALTHY", "UNKNOWN"]
        if not reported:
            health = "UNKNOWN"
        elif any(c.state in UNHEALTHY_STATES for c in reported.values()):
            health = "UNHEALTHY"
        else:
            health = "HEALTHY"
        return DeviceInfo(name=device.name, labels=dict(device.labels or {}), groups=groups,
                          created_at=device.created_at, last_seen_at=device.last_seen_at,
                          revoked=device.revoked_at is not None, components=reported, status=status,
                          health=health, applied_revision=device.applied_revision,
                          desired_revision=device.desired_revision, deployments=deployments)

    def _groups_of(self, s: Session, device_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [] for i in device_ids}
        if not device_ids:
            return out
        rows = s.execute(select(GroupMember.device_id, GroupMember.group_name)
                         .order_by(GroupMember.group_name))
        for device_id, group in rows:
            if device_id in out:
                out[device_id].append(group)
        return out

    def list_devices(self) -> list[DeviceInfo]:
        now = self.clock()

        def run(s: Session) -> list[DeviceInfo]:
            devices = list(s.scalars(select(Device).order_by(Device.name)))
            groups = self._groups_of(s, [d.id for d in devices])
            return [self._device_info(s, d, groups[d.id], now) for d in devices]
        return self._read(run)

    def get_device(self, name: str) -> DeviceInfo:
        now = self.clock()

        def run(s: Session) -> DeviceInfo:
            device = self._device(s, name)
            for deployment_id in rollout.open_deployments(s, self._deployment_ids_of(s, device.id)):
                desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
            rows = s.execute(select(DeviceDeployment, Deployment.seq)
                             .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
                             .where(DeviceDeployment.device_id == device.id)
                             .order_by(Deployment.seq.desc())).all()
            deployments = [DeviceDeploymentInfo(r.deployment_id, r.status, r.reason_code, r.message,
                                                r.released_at, r.updated_at) for r, _seq in rows]
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now, deployments)
        return self._write(run)

    def _deployment_ids_of(self, s: Session, device_id: int) -> list[str]:
        return list(s.scalars(select(DeviceDeployment.deployment_id).where(DeviceDeployment.device_id == device_id)))

    def revoke_device(self, name: str) -> DeviceInfo:
        """Cut a device off: its credential stops working at once; its open rows are CANCELED."""
        now = self.clock()

        def run(s: Session) -> DeviceInfo:
            device = self._device(s, name, lock=True)
            if device.revoked_at is None:
                device.revoked_at = now
                s.execute(update(DeviceDeployment).where(
                    DeviceDeployment.device_id == device.id, DeviceDeployment.status.in_(rollout.OPEN_STATUSES),
                ).values(status=rollout.CANCELED, reason_code="DEVICE_REVOKED", message="the device was revoked",
                         updated_at=now))
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now)
        info = self._write(run)
        logger.info("device %s revoked", name)
        return info

    def set_labels(self, name: str, labels: dict[str, Any]) -> DeviceInfo:
        now = self.clock()

        def run(s: Session) -> DeviceInfo:
            device = self._device(s, name, lock=True)
            device.labels = dict(labels)
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now)
        return self._write(run)

    # -- groups ------------------------------------------------------------------------------------

    def _ensure_group(self, s: Session, name: str) -> None:
        if s.get(Group, name) is None:
            try:
                with s.begin_nested():
                    s.add(Group(name=name, created_at=self.clock()))
            except IntegrityError:
                pass  # created concurrently

    def _join_group(self, s: Session, group: str, device: Device, now: datetime) -> bool:
        """Add a member; it receives the group's current deployment (rate limits apply)."""
        self._ensure_group(s, group)
        if s.get(GroupMember, (group, device.id)) is not None:
            return False
        s.add(GroupMember(group_name=group, device_id=device.id))
        s.flush()
        current = s.scalars(select(Deployment).where(
            Deployment.target_type == "group", Deployment.target_name == group,
            Deployment.status.in_((rollout.ACTIVE, rollout.COMPLETED))).order_by(Deployment.seq.desc())
            .limit(1).with_for_update()).first()
        if current is not None and device.revoked_at is None:
            quota = rollout.release_quota(s, current, now)
            released = now if quota is None or quota > 0 else None
            existing = s.get(DeviceDeployment, (current.id, device.id))
            if existing is None:
                s.add(DeviceDeployment(deployment_id=current.id, device_id=device.id, status=rollout.QUEUED,
                                       released_at=released, updated_at=now))
                current.status = rollout.ACTIVE
                if released is not None:
                    # Only then does the device's desired state change (and the revision move, waking
                    # long polls): joining a group without a deployment, or before the rollout
                    # releases the device, changes nothing the device would receive.
                    desired.mark_changed(s, [device.id])
        return True

    def _group_info(self, s: Session, name: str) -> GroupInfo:
        members = s.scalars(select(Device.name).join(GroupMember, GroupMember.device_id == Device.id)
                            .where(GroupMember.group_name == name).order_by(Device.name))
        return GroupInfo(name=name, devices=list(members))

    def add_group_members(self, group: str, devices: list[str]) -> GroupInfo:
        check_name(group, "group name")
        now = self.clock()

        def run(s: Session) -> GroupInfo:
            self._ensure_group(s, group)
            for name in devices:
                self._join_group(s, group, self._device(s, name), now)
            return self._group_info(s, group)
        return self._write(run)

    def remove_group_member(self, group: str, device_name: str) -> GroupInfo:
        check_name(group, "group name")
        now = self.clock()

        def run(s: Session) -> GroupInfo:
            if s.get(Group, group) is None:
                raise HubNotFoundError(f"group {group} does not exist", code="GROUP_NOT_FOUND")
            device = self._device(s, device_name)
            member = s.get(GroupMember, (group, device.id))
            if member is None:
                raise HubNotFoundError(f"device {device_name} is not a member of group {group}",
                                       code="MEMBER_NOT_FOUND")
            s.delete(member)
            group_deployments = select(Deployment.id).where(Deployment.target_type == "group",
                                                            Deployment.target_name == group)
            s.execute(update(DeviceDeployment).where(
                DeviceDeployment.device_id == device.id, DeviceDeployment.status.in_(rollout.OPEN_STATUSES),
                DeviceDeployment.deployment_id.in_(group_deployments),
            ).values(status=rollout.CANCELED, reason_code="REMOVED_FROM_GROUP",
                     message=f"the device left group {group}", updated_at=now))
            desired.mark_changed(s, [device.id])
            return self._group_info(s, group)
        return self._write(run)

    def list_groups(self) -> list[GroupInfo]:
        def run(s: Session) -> list[GroupInfo]:
            members: dict[str, list[str]] = {g: [] for g in s.scalars(select(Group.name).order_by(Group.name))}
            rows = s.execute(select(GroupMember.group_name, Device.name)
                             .join(Device, Device.id == GroupMember.device_id).order_by(Device.name))
            for group, device in rows:
                members.setdefault(group, []).append(device)
            return [GroupInfo(name=g, devices=d) for g, d in members.items()]
        return self._read(run)

    # -- components --------------------------------------------------------------------------------

    def publish_component(self, recipe_text: bytes, staging: Staging, files: list[StagedFile],
                          recipe_source: str = "recipe") -> ComponentInfo:
        """Register a recipe and its uploaded artifacts (matched by the URIs' last path segment).

        The stored recipe carries the hub-computed ``Digest`` (base64 SHA-256) of every artifact.
        Versions are immutable (``VERSION_EXISTS``). ``staging`` is installed or left for the caller
        to clean up.
        """
        try:
            recipe = parse_recipe(recipe_text, source=recipe_source)
        except RecipeError as err:
            raise UnprocessableError(str(err), code="RECIPE_INVALID") from err
        check_name(recipe.name, "component name")
        check_name(recipe.version, "component version")
        by_name: dict[str, StagedFile] = {}
        for staged in files:
            if staged.file_name in by_name:
                raise UnprocessableError(f"artifact {staged.file_name} was uploaded twice", code="ARTIFACT_DUPLICATE")
            by_name[staged.file_name] = staged
        document = recipe_to_dict(recipe)
        needed: set[str] = set()
        for manifest, raw_manifest in zip(recipe.manifests, document.get("Manifests", []), strict=True):
            for artifact, raw in zip(manifest.artifacts, raw_manifest.get("Artifacts", []), strict=True):
                if artifact.scheme == "docker":
                    continue
                file_name = check_file_name(artifact.file_name)
                needed.add(file_name)
                uploaded = by_name.get(file_name)
                if uploaded is None:
                    continue
                given = raw.get("Digest")
                digest = digest_b64(uploaded.sha256)
                if given and given != digest and given.lower() != uploaded.sha256:
                    raise UnprocessableError(
                        f"artifact {file_name}: the recipe's Digest {given} does not match the uploaded file "
                        f"({digest})", code="ARTIFACT_DIGEST_MISMATCH")
                raw["Digest"] = digest
                raw["Algorithm"] = "SHA-256"
        missing = sorted(needed - by_name.keys())
        if missing:
            raise UnprocessableError(f"{recipe.name} {recipe.version}: no file uploaded for artifact(s) "
                                     f"{', '.join(missing)} named by the recipe's URIs", code="ARTIFACT_MISSING")
        extra = sorted(by_name.keys() - needed)
        if extra:
            raise UnprocessableError(f"{recipe.name} {recipe.version}: uploaded file(s) {', '.join(extra)} are "
                                     "not named by any artifact URI of the recipe", code="ARTIFACT_UNEXPECTED")
        now = self.clock()
        exists = HubConflictError(f"component {recipe.name} version {recipe.version} is already published; "
                                  "versions are immutable, publish a new version", code="VERSION_EXISTS")

        def run(s: Session) -> ComponentInfo:
            if s.get(Component, (recipe.name, recipe.version)) is not None:
                raise exists
            s.add(Component(name=recipe.name, version=recipe.version, recipe=document, created_at=now))
            try:
                s.flush()
            except IntegrityError as err:
                raise exists from err
            for staged in by_name.values():
                s.add(ArtifactFile(name=recipe.name, version=recipe.version, file_name=staged.file_name,
                                   sha256=staged.sha256, size=staged.size))
            s.flush()
            self.artifacts.install(staging, recipe.name, recipe.version, list(by_name.values()))
            return ComponentInfo(name=recipe.name, version=recipe.version, created_at=now,
                                 artifacts=[ArtifactInfo(f.file_name, f.sha256, f.size)
                                            for f in sorted(by_name.values(), key=lambda f: f.file_name)])
        try:
            info = self._write(run)
        except IntegrityError as err:
            raise exists from err
        logger.info("published %s %s (%d artifacts)", recipe.name, recipe.version, len(by_name))
        return info

    def _artifact_infos(self, s: Session) -> dict[tuple[str, str], list[ArtifactInfo]]:
        out: dict[tuple[str, str], list[ArtifactInfo]] = {}
        for a in s.scalars(select(ArtifactFile).order_by(ArtifactFile.file_name)):
            out.setdefault((a.name, a.version), []).append(ArtifactInfo(a.file_name, a.sha256, a.size))
        return out

    def list_components(self) -> list[ComponentInfo]:
        def run(s: Session) -> list[ComponentInfo]:
            artifacts = self._artifact_infos(s)
            rows = s.execute(select(Component.name, Component.version, Component.created_at)
                             .order_by(Component.name, Component.created_at))
            return [ComponentInfo(name=n, version=v, created_at=c, artifacts=artifacts.get((n, v), []))
                    for n, v, c in rows]
        return self._read(run)

    def get_component(self, name: str, version: str) -> ComponentInfo:
        check_name(name, "component name")
        check_name(version, "component version")

        def run(s: Session) -> ComponentInfo:
            comp = s.get(Component, (name, version))
            if comp is None:
                raise HubNotFoundError(f"component {name} version {version} is not published",
                                       code="COMPONENT_NOT_FOUND")
            artifacts = [ArtifactInfo(a.file_name, a.sha256, a.size) for a in s.scalars(
                select(ArtifactFile).where(ArtifactFile.name == name, ArtifactFile.version == version)
                .order_by(ArtifactFile.file_name))]
            return ComponentInfo(name=name, version=version, created_at=comp.created_at, artifacts=artifacts,
                                 recipe=comp.recipe)
        return self._read(run)

    # -- deployments -------------------------------------------------------------------------------

    def _deployment_info(self, s: Session, d: Deployment, *, with_devices: bool) -> DeploymentInfo:
        devices = None
        if with_devices:
            rows = s.execute(select(DeviceDeployment, Device.name)
                             .join(Device, Device.id == DeviceDeployment.device_id)
                             .where(DeviceDeployment.deployment_id == d.id).order_by(Device.name)).all()
            devices = [DeploymentDevice(name, r.status, r.reason_code, r.message, r.released_at, r.updated_at)
                       for r, name in rows]
        tally = rollout.counts(s, d.id)
        tally["total"] = sum(tally.values())
        return DeploymentInfo(
            id=d.id, target=f"{d.target_type}:{d.target_name}", components=dict(d.components),
            configuration=dict(d.configuration), failure_policy=d.failure_policy, max_per_minute=d.max_per_minute,
            abort_failure_percent=d.abort_failure_percent, abort_min_devices=d.abort_min_devices,
            timeout_minutes=d.timeout_minutes, created_at=d.created_at, status=d.status,
            status_reason=d.status_reason, revision=d.seq, counts=tally, devices=devices,
            dependencies={str(k): str(v) for k, v in (d.dependencies or {}).items()})

    def _validate_deployment(self, s: Session, req: DeploymentRequest) -> None:
        for name, version in req.components.items():
            check_name(name, "component name")
            check_name(version, "component version")
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
        (:func:`roost.recipe.resolve`, the resolver the agent uses for local deployments).
        """
        available: dict[str, list[Recipe]] = {}
        frontier = sorted(roots)
        while frontier:
            name = frontier.pop()
            if name in available:
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

    def create_deployment(self, req: DeploymentRequest) -> DeploymentInfo:
        """A new revision for a target; it supersedes the target's previous deployment."""
        kind, target_name = parse_target(req.target)
        now = self.clock()
        deployment_id = str(uuid.uuid4())

        def run(s: Session) -> DeploymentInfo:
            self._validate_deployment(s, req)
            dependencies = self._resolve_dependencies(s, req.components)
            if kind == "device":
                target = self._device(s, target_name)
                device_ids = [] if target.revoked_at is not None else [target.id]
            else:
                self._ensure_group(s, target_name)
                device_ids = list(s.scalars(select(GroupMember.device_id)
                                            .join(Device, Device.id == GroupMember.device_id)
                                            .where(GroupMember.group_name == target_name,
                                                   Device.revoked_at.is_(None)).order_by(GroupMember.device_id)))
            previous = list(s.scalars(select(Deployment).where(
                Deployment.target_type == kind, Deployment.target_name == target_name,
                Deployment.status == rollout.ACTIVE).order_by(Deployment.seq).with_for_update()))
            seq = desired.bump_revision(s)
            for prev in previous:
                prev.status = rollout.SUPERSEDED
                prev.status_reason = f"superseded by deployment {deployment_id}"
                s.execute(update(DeviceDeployment).where(
                    DeviceDeployment.deployment_id == prev.id, DeviceDeployment.status.in_(rollout.OPEN_STATUSES),
                ).values(status=rollout.CANCELED, reason_code="SUPERSEDED",
                         message=f"superseded by deployment {deployment_id}", updated_at=now))
            deployment = Deployment(
                id=deployment_id, seq=seq, target_type=kind, target_name=target_name,
                components=dict(req.components), dependencies=dependencies, configuration=dict(req.configuration),
                failure_policy=req.failure_policy, max_per_minute=req.max_per_minute,
                abort_failure_percent=req.abort_failure_percent, abort_min_devices=req.abort_min_devices,
                timeout_minutes=req.timeout_minutes, created_at=now,
                status=rollout.ACTIVE if device_ids else rollout.COMPLETED)
            s.add(deployment)
            s.flush()
            first = device_ids if req.max_per_minute is None else device_ids[:req.max_per_minute]
            released = set(first)
            if device_ids:
                s.execute(insert(DeviceDeployment), [
                    {"deployment_id": deployment_id, "device_id": i, "status": rollout.QUEUED,
                     "released_at": now if i in released else None, "updated_at": now} for i in device_ids])
            desired.mark_changed(s, released, seq)
            return self._deployment_info(s, deployment, with_devices=True)
        info = self._write(run)
        logger.info("deployment %s to %s: %d devices", deployment_id, req.target, info.counts["total"])
        return info

    def get_deployment(self, deployment_id: str) -> DeploymentInfo:
        _known_deployment_id(deployment_id)
        now = self.clock()

        def run(s: Session) -> DeploymentInfo:
            desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
            d = s.get(Deployment, deployment_id)
            if d is None:
                raise HubNotFoundError(f"deployment {deployment_id} does not exist", code="DEPLOYMENT_NOT_FOUND")
            return self._deployment_info(s, d, with_devices=True)
        return self._write(run)

    def list_deployments(self, limit: int = 500) -> list[DeploymentInfo]:
        now = self.clock()

        def refresh(s: Session) -> None:
            for deployment_id in rollout.open_deployments(s):
                desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
        self._write(refresh)

        def run(s: Session) -> list[DeploymentInfo]:
            rows = s.scalars(select(Deployment).order_by(Deployment.seq.desc()).limit(limit))
            return [self._deployment_info(s, d, with_devices=False) for d in rows]
        return self._read(run)

    def cancel_deployment(self, deployment_id: str) -> DeploymentInfo:
        """Stop a deployment: devices that have not started it keep their previous state."""
        _known_deployment_id(deployment_id)
        now = self.clock()

        def run(s: Session) -> DeploymentInfo:
            d = rollout.lock_deployment(s, deployment_id)
            if d is None:
                raise HubNotFoundError(f"deployment {deployment_id} does not exist", code="DEPLOYMENT_NOT_FOUND")
            if d.status == rollout.ACTIVE:
                d.status = rollout.DEPLOYMENT_CANCELED
                d.status_reason = "canceled by an administrator"
                desired.mark_changed(s, rollout.cancel_queued(s, d, now, "CANCELED", "the deployment was canceled"))
            elif d.status != rollout.DEPLOYMENT_CANCELED:
                raise HubConflictError(f"deployment {deployment_id} is {d.status} and can no longer be canceled",
                                       code="DEPLOYMENT_FINISHED")
            return self._deployment_info(s, d, with_devices=True)
        return self._write(run)

    # -- device sync -------------------------------------------------------------------------------
    #
    # Each operation takes the requests of many devices and runs them in one transaction (the API
    # coalesces concurrent requests: :mod:`roost.hub.coalesce`), answering each request on its own:
    # a revoked device gets its own AuthenticationError in the result list, the others are unaffected.
    # The single-device forms call the batched ones.

    def desired_states(self, requests: Sequence[tuple[int, int | None]],
                       ) -> list[tuple[DesiredState | None, bool] | HubError]:
        """Long-poll checks of many devices: per ``(device_id, after)``, ``(state, pending)``.

        ``state`` is the device's desired state if its revision is newer than ``after`` (always when
        ``after`` is None), else None. ``pending`` says rows wait for a rollout release (check again
        soon). One read for all; one write only for the devices that need one, which releases due
        rows, records conflicts and marks delivered rows IN_PROGRESS.
        """
        now = self.clock()
        probes = self._read(lambda s: desired.probe(s, [d for d, _ in requests]))
        work = sorted({d for d, after in requests if d in probes
                       and (after is None or probes[d].revision > after or probes[d].pending)})

        def run(s: Session) -> tuple[dict[int, desired.DeviceRef], dict[int, DesiredState], set[int]]:
            released: list[int] = []
            still_pending: set[int] = set()
            for device_id in work:
                if probes[device_id].pending:
                    got, waiting = rollout.release_pending(s, device_id, now)
                    if got:
                        released.append(device_id)
                    if waiting:
                        still_pending.add(device_id)
            desired.mark_changed(s, released)
            refs = desired.device_refs(s, work)
            due = {d: refs[d] for d, after in requests
                   if d in refs and (after is None or refs[d].desired_revision > after)}
            states = desired.compute_many(s, list(due.values()), now)
            return refs, states, still_pending
        refs, states, still_pending = self._write(run) if work else ({}, {}, set())
        out: list[tuple[DesiredState | None, bool] | HubError] = []
        for device_id, after in requests:
            if device_id not in probes or (device_id in work and device_id not in refs):
                out.append(AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED"))
            elif device_id in states and (after is None or states[device_id].revision > after):
                out.append((states[device_id], device_id in still_pending))
            else:
                out.append((None, device_id in still_pending if device_id in work else probes[device_id].pending))
        return out

    def desired_state(self, device_id: int, after: int | None = None) -> tuple[DesiredState | None, bool]:
        """One long-poll check: see :meth:`desired_states`."""
        return _one(self.desired_states([(device_id, after)]))

    def record_reports_many(self, batch: Sequence[tuple[int, Sequence[Report]]]) -> list[ReportResult | HubError]:
        """Apply the reports of many devices, in order, each exactly once by id (one transaction)."""
        now = self.clock()
        return self._write(lambda s: reports.record(s, batch, now))

    def record_reports(self, device_id: int, items: Sequence[Report]) -> ReportResult:
        """Apply a device's reports in order, each exactly once by id."""
        return _one(self.record_reports_many([(device_id, items)]))

    def touch_devices(self, seen: dict[int, datetime]) -> None:
        """Record when devices were last seen (batched by the API; never moves a time backwards)."""
        if seen:
            self._write(lambda s: reports.touch(s, seen))

    # -- artifacts ---------------------------------------------------------------------------------

    def artifacts_for_devices(self, requests: Sequence[tuple[int, str, str, str]],
                              ) -> list[ArtifactLocation | HubError]:
        """Per ``(device_id, name, version, file)``: where the artifact is, if that device may read
        it (it is in the device's desired state). One read for all the requests."""
        checked: list[tuple[int, str, str, str] | HubError] = []
        for device_id, name, version, file_name in requests:
            try:
                checked.append((device_id, check_name(name, "component name"), check_name(version, "component version"),
                                check_file_name(file_name)))
            except HubError as err:
                checked.append(err)

        def run(s: Session) -> tuple[dict[int, desired.DeviceRef], dict[int, dict[str, str]],
                                     dict[tuple[str, str, str], tuple[str, int]]]:
            refs = desired.device_refs(s, [c[0] for c in checked if not isinstance(c, HubError)])
            wanted = desired.wanted_versions_many(s, list(refs.values()))
            keys = sorted({c[1:] for c in checked if not isinstance(c, HubError)
                           and c[0] in refs and wanted[c[0]].get(c[1]) == c[2]})
            rows: dict[tuple[str, str, str], tuple[str, int]] = {}
            for start in range(0, len(keys), desired.CHUNK):
                key = tuple_(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name)
                for n, v, f, sha, size in s.execute(
                        select(ArtifactFile.name, ArtifactFile.version, ArtifactFile.file_name, ArtifactFile.sha256,
                               ArtifactFile.size).where(key.in_(keys[start:start + desired.CHUNK]))):
                    rows[(str(n), str(v), str(f))] = (str(sha), int(size))
            return refs, wanted, rows
        refs, wanted, rows = self._read(run)
        out: list[ArtifactLocation | HubError] = []
        for c in checked:
            if isinstance(c, HubError):
                out.append(c)
                continue
            device_id, name, version, file_name = c
            if device_id not in refs:
                out.append(AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED"))
            elif wanted[device_id].get(name) != version:
                out.append(ForbiddenError(f"component {name} {version} is not in this device's desired state",
                                          code="ARTIFACT_FORBIDDEN"))
            else:
                out.append(self._artifact_location(rows.get((name, version, file_name)), name, version, file_name,
                                                   inline=True))
        return out

    def _artifact_location(self, row: tuple[str, int] | None, name: str, version: str,
                           file_name: str, *, inline: bool = False) -> ArtifactLocation | HubError:
        if row is None:
            return HubNotFoundError(f"artifact {name}/{version}/{file_name} does not exist", code="ARTIFACT_NOT_FOUND")
        try:
            path = self.artifacts.existing(name, version, file_name)
            content = path.read_bytes() if inline and row[1] <= INLINE_ARTIFACT_BYTES else None
        except HubError as err:
            return err
        except OSError as err:
            return HubNotFoundError(f"artifact {name}/{version}/{file_name} cannot be read: {err.strerror}",
                                    code="ARTIFACT_NOT_FOUND")
        return ArtifactLocation(path=str(path), sha256=row[0], size=row[1], file_name=file_name, content=content)

    def artifact(self, principal: Principal, name: str, version: str, file_name: str) -> ArtifactLocation:
        """Where an artifact is, if ``principal`` may read it (admins: all; devices: their desired state)."""
        if principal.kind == "device":
            return _one(self.artifacts_for_devices([(principal.id, name, version, file_name)]))
        check_name(name, "component name")
        check_name(version, "component version")
        check_file_name(file_name)
        row = self._read(lambda s: s.execute(select(ArtifactFile.sha256, ArtifactFile.size).where(
            ArtifactFile.name == name, ArtifactFile.version == version, ArtifactFile.file_name == file_name)).first())
        return _one([self._artifact_location(None if row is None else (str(row[0]), int(row[1])),
                                             name, version, file_name)])


def _one(results: Sequence[T | HubError]) -> T:
    """The single result of a batched operation run for one request (raised if it is an error)."""
    (result,) = results
    if isinstance(result, HubError):
        raise result
    return result
