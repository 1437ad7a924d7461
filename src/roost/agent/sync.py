"""The agent's hub sync: the desired-state long poll, applying revisions, reporting.

A device enrolled with a hub (``ROOT/hub.json``, see :mod:`roost.agent.enrolment`) runs a
:class:`HubSync` beside its supervisor and deployer. Three tasks:

* **poll** — ``GET /v1/device/desired?after=REV&wait=25``. On a newer revision: report
  IN_PROGRESS for each hub deployment in it, download every file of every component's artifact
  folder (streamed into ``ROOT/hub-downloads/rev-N/artifacts/<name>/<version>/<path>``; SHA-256
  checked against the desired state's list, the hub's ``X-Roost-Sha256`` header and the recipe's
  ``Digest``), write the recipes beside them, and submit one deployment to the agent's own
  :class:`~roost.agent.deployer.Deployer` with ``hubComponents`` (the hub's root set, which
  replaces the previous one and wins over local roots), ``componentToConfiguration`` and
  ``hubRevision``. Its outcome becomes one report per hub deployment: SUCCEEDED, FAILED (with
  the deployer's failure cause as reason code), ROLLED_BACK (``FAILED_ROLLBACK_COMPLETE``) or
  TIMED_OUT, with the device's component states and the deployer's notes (a local component the
  hub overrode). The revision counts as applied (``state.db`` meta ``hub_applied_revision``) once
  its result is spooled: a crash before that re-applies it after restart (a no-op if it was done).
* **heartbeat** — soon after any component state change, and every ``heartbeat_seconds``
  (300) otherwise, a report without a deployment id carrying the component states. Liveness
  (the hub's last-seen) comes from the long poll itself, at least every ``poll_wait`` seconds, so
  an unchanged fleet sends no periodic reports that would only repeat what the hub knows.
* **secrets** — ``GET /v1/device/secrets`` at start, before each revision is applied and every
  ``periodicRefreshIntervalMin`` (else ``ROOST_SECRETS_REFRESH_SECONDS``, 900): the secrets the
  device's deployments name, kept sealed by :mod:`roost.agent.secrets` and served offline.
* **metrics** — every ``ROOST_METRICS_SNAPSHOT_SECONDS`` (60), beside the heartbeat, the compact metrics
  snapshot (:mod:`roost.observe.snapshot`; ``PUT /v1/device/metrics``), not spooled: only the latest counts.
* **send** — delivers the :class:`~roost.agent.spool.Spool` in order, in batches, deleting
  reports once the hub acknowledged them.

When the hub cannot be reached the agent keeps running what it has, keeps spooling, and retries
with :class:`~roost.agent.spool.Backoff` (full jitter, capped): the outage is logged once and the
recovery once. A refused credential (a revoked device) is logged once too; the agent keeps
running its components and retries at the backoff cap. The credential is never logged.

Tuning for labs and tests (environment of the agent process): ``ROOST_SYNC_HEARTBEAT_SECONDS``
(default 300), ``ROOST_SYNC_POLL_WAIT`` (25), ``ROOST_SYNC_BACKOFF_CAP`` (60),
``ROOST_SYNC_SPOOL_MAX`` (1000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from roost.agent.artifacts import digest_matches, file_digest
from roost.agent.deployer import SUCCEEDED, TERMINAL, Deployer
from roost.agent.enrolment import HubConfig
from roost.agent.errors import ArtifactError
from roost.agent.paths import AgentPaths
from roost.agent.secrets import DEFAULT_REFRESH_SECONDS, DeviceSecretStore, SecretRefresher
from roost.agent.spool import DEFAULT_MAX_REPORTS, Backoff, Spool
from roost.agent.store import DeploymentRecord, Store
from roost.errors import InvalidInputError, RoostError, UnauthorizedError
from roost.hub.client import Desired, HubError, HubProtocolError
from roost.hub.contract import DeviceDeploymentStatus as HubStatus
from roost.hub.contract.metrics import MetricsSnapshot
from roost.hub.device_client import DeviceClient
from roost.paths import safe_join
from roost.recipe import Artifact, current_platform, parse_recipe

log = logging.getLogger(__name__)

#: Closing the sync: rounds of cancel-and-wait, and the seconds each waits.
CLOSE_ROUNDS = 3
CLOSE_SECONDS = 5.0

APPLIED_META = "hub_applied_revision"
#: Longest text of a report's message (the hub keeps 2000 characters).
MAX_MESSAGE = 1900
#: Reports sent per ``POST /v1/device/reports``.
BATCH = 50
#: Deployment status of the hub when the deployer's outcome is X.
ROLLED_BACK, FAILED, TIMED_OUT = HubStatus.ROLLED_BACK, HubStatus.FAILED, HubStatus.TIMED_OUT
IN_PROGRESS, CANCELED = HubStatus.IN_PROGRESS, HubStatus.CANCELED
#: Store meta: the hub deployments this device reported SUCCEEDED (not reported again while effective).
SUCCEEDED_META = "hub_succeeded_deployments"


# -- outage bookkeeping ------------------------------------------------------------------------
class HubHealth:
    """Logs a degradation once and its recovery once, however many loops notice it."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self.state = "up"
        self.since = 0.0

    def down(self, err: RoostError) -> None:
        if self.state != "down":
            log.warning("hub %s unavailable (%s); components keep running, reports are spooled and retried "
                        "with backoff", self.hub, err.message)
            self.state, self.since = "down", time.monotonic()

    def refused(self, err: RoostError) -> None:
        if self.state != "refused":
            log.error("hub %s refused this device's credential (%s): the device was revoked or its credential "
                      "is wrong; components keep running; re-enrol to reconnect", self.hub, err.message)
            self.state, self.since = "refused", time.monotonic()

    def up(self) -> None:
        if self.state != "up":
            log.info("hub %s reachable again after %.0f s", self.hub, time.monotonic() - self.since)
            self.state = "up"


class _RetryLater(Exception):
    """A revision could not be fetched for a passing reason (hub unreachable): poll again later."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class AgentParts(Protocol):
    """What the sync needs of an agent (:class:`roost.agent.agent.Agent`; not imported: no cycle)."""

    paths: AgentPaths
    deployer: Deployer
    store: Store
    secrets: DeviceSecretStore


# -- the sync task ---------------------------------------------------------------------------------
class HubSync:
    def __init__(self, paths: AgentPaths, config: HubConfig, deployer: Deployer, store: Store, *,
                 client: DeviceClient | None = None, heartbeat_seconds: float = 300.0, poll_wait: float = 25.0,
                 backoff_cap: float = 60.0, spool_max: int = DEFAULT_MAX_REPORTS,
                 rand: Callable[[], float] = random.random, secrets: DeviceSecretStore | None = None,
                 secrets_refresh: float = DEFAULT_REFRESH_SECONDS) -> None:
        self.paths = paths
        self.config = config
        self.deployer = deployer
        self.store = store
        self.client = client or DeviceClient(config.hub, config.credential)
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_wait = poll_wait
        self.spool = Spool(paths.root / "spool", max_reports=spool_max)
        self.health = HubHealth(config.hub)
        self._poll_backoff = Backoff(cap=backoff_cap, rand=rand)
        self._send_backoff = Backoff(cap=backoff_cap, rand=rand)
        self._wake_sender = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_states: dict[str, dict[str, str]] | None = None
        self._last_heartbeat = 0.0
        self._effective: list[str] = []
        #: The agent's metrics snapshot (roost.observe.snapshot), sent every snapshot_seconds when set.
        self.snapshot: Callable[[], MetricsSnapshot] | None = None
        self.snapshot_seconds = _env_float("ROOST_METRICS_SNAPSHOT_SECONDS", 60.0)
        self.downloads = paths.root / "hub-downloads"
        #: The device's secrets (aws.greengrass.SecretManager's cloudSecrets), refreshed from the hub.
        self.secrets: SecretRefresher | None = None
        if secrets is not None:
            self.secrets = SecretRefresher(secrets, self.client.secrets, default_interval=secrets_refresh)
            secrets.refresher = self.secrets.refresh

    @classmethod
    def for_agent(cls, agent: AgentParts) -> HubSync | None:
        """The sync of an agent whose root is enrolled with a hub (``ROOT/hub.json``), else None."""
        config = HubConfig.load(agent.paths)
        if config is None:
            return None
        return cls(agent.paths, config, agent.deployer, agent.store,
                   heartbeat_seconds=_env_float("ROOST_SYNC_HEARTBEAT_SECONDS", 300.0),
                   poll_wait=_env_float("ROOST_SYNC_POLL_WAIT", 25.0),
                   backoff_cap=_env_float("ROOST_SYNC_BACKOFF_CAP", 60.0),
                   spool_max=int(_env_float("ROOST_SYNC_SPOOL_MAX", DEFAULT_MAX_REPORTS)),
                   secrets=agent.secrets,
                   secrets_refresh=_env_float("ROOST_SECRETS_REFRESH_SECONDS", DEFAULT_REFRESH_SECONDS))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        # httpx logs every request at INFO: one line per long poll is noise in the agent log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        shutil.rmtree(self.downloads, ignore_errors=True)
        self._tasks = [asyncio.create_task(self._poll_loop(), name="hub-poll"),
                       asyncio.create_task(self._send_loop(), name="hub-send"),
                       asyncio.create_task(self._heartbeat_loop(), name="hub-heartbeat")]
        if self.secrets is not None:
            self._tasks.append(asyncio.create_task(self._secrets_loop(), name="hub-secrets"))
        self._tasks.append(asyncio.create_task(self._node_report(), name="hub-node"))
        if self.snapshot is not None:
            self._tasks.append(asyncio.create_task(self._metrics_loop(), name="hub-metrics"))
        log.info("hub sync started: hub %s, device %s, applied revision %d, %d spooled report(s)",
                 self.config.hub, self.config.device, self.applied_revision, len(self.spool))

    async def close(self) -> None:
        """Cancel the sync tasks and wait for them, bounded: a task whose await chain swallowed one
        cancellation (a deployment step that turns it into a result) is cancelled again, and one that
        still runs after :data:`CLOSE_ROUNDS` rounds is logged and left, so the agent always stops."""
        tasks, self._tasks = self._tasks, []
        pending = [task for task in tasks if not task.done()]
        for _ in range(CLOSE_ROUNDS):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=CLOSE_SECONDS)
            pending = list(still)
        for task in pending:
            log.warning("hub sync task %s did not stop within %d rounds of %g s; left behind", task.get_name(),
                        CLOSE_ROUNDS, CLOSE_SECONDS)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.debug("hub sync task %s ended with %r", task.get_name(), task.exception())
        await self.client.close()

    @property
    def applied_revision(self) -> int:
        value = self.store.get_meta(APPLIED_META)
        return int(value) if value and value.isdigit() else 0

    def _set_applied(self, revision: int) -> None:
        self.store.set_meta(APPLIED_META, str(revision))

    def _succeeded(self) -> set[str]:
        try:
            value = json.loads(self.store.get_meta(SUCCEEDED_META) or "[]")
        except ValueError:
            return set()
        return {str(v) for v in value} if isinstance(value, list) else set()

    # -- reports -----------------------------------------------------------------------------------
    def component_states(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, record in self.store.components().items():
            state = self.deployer.supervisor_state(name)
            out[name] = {"version": record.version, "state": state.value if state else record.state}
        return out

    def report(self, status: str | None, *, deployment_id: str | None = None, revision: int | None = None,
               reason_code: str | None = None, message: str | None = None,
               notes: list[str] | None = None) -> None:
        """Spool one report (durably) and wake the sender."""
        states = self.component_states()
        body: dict[str, Any] = {"revision": self.applied_revision if revision is None else revision,
                                "components": states, "at": _now()}
        if status:
            body["status"] = status
        if deployment_id:
            body["deployment_id"] = deployment_id
        if reason_code:
            body["reason_code"] = reason_code[:64]
        if notes:
            message = "; ".join([*([message] if message else []), *notes])
        if message:
            body["message"] = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"
        self.spool.add(body)
        if deployment_id is None:
            self._last_states = states
            self._last_heartbeat = time.monotonic()
        self._wake_sender.set()

    # -- send ------------------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        batch_size = BATCH
        while True:
            self._wake_sender.clear()
            batch = self.spool.pending(batch_size)
            if not batch:
                await self._wake_sender.wait()
                continue
            try:
                await self.client.send_reports([e.report for e in batch])
            except UnauthorizedError as err:
                self.health.refused(err)
                await self._send_backoff.wait()
                continue
            except HubError as err:
                if getattr(err, "retryable", False) or isinstance(err, HubProtocolError):
                    self.health.down(err)
                    await self._send_backoff.wait()
                    continue
                # The hub refused the content. Find the offending report alone, then set it aside.
                if len(batch) > 1:
                    batch_size = 1
                    continue
                where = self.spool.reject(batch[0])
                log.error("the hub refused report %s (%s); moved to %s", batch[0].id, err.message, where)
                batch_size = BATCH
                continue
            self.health.up()
            self._send_backoff.reset()
            self.spool.ack(e.id for e in batch)
            batch_size = BATCH

    # -- heartbeat ---------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        self.report(None)
        check = min(2.0, self.heartbeat_seconds)
        while True:
            await asyncio.sleep(check)
            since = time.monotonic() - self._last_heartbeat
            if since >= self.heartbeat_seconds or (since >= min(5.0, self.heartbeat_seconds)
                                                   and self.component_states() != self._last_states):
                self.report(None)

    async def _metrics_loop(self) -> None:
        """The metrics snapshot, every ``snapshot_seconds``; a refused one is logged once per code, and costs
        nothing else (the reports are sent apart)."""
        assert self.snapshot is not None
        refused: set[str] = set()
        while True:
            try:
                await self.client.send_metrics(self.snapshot())
            except HubError as err:
                if getattr(err, "status", None) in (404, 405):
                    log.info("the hub takes no metrics snapshots (%s)", err.code)
                    return
                if not getattr(err, "retryable", False) and err.code not in refused:
                    refused.add(err.code)
                    log.warning("the hub refused this device's metrics snapshot (%s): %s", err.code, err.message)
            except RoostError as err:
                log.warning("no metrics snapshot: %s", err.message)
            await asyncio.sleep(max(1.0, self.snapshot_seconds))

    # -- secrets -----------------------------------------------------------------------------------
    async def _node_report(self) -> None:
        """Tell the hub what this device offers as a cluster node (:mod:`roost.agent.node`), once per
        start, retried with backoff until the hub took it."""
        from roost.agent.node import NodeSettings, node_report

        backoff = Backoff(cap=self._poll_backoff.cap)
        try:
            report = await asyncio.to_thread(lambda: node_report(NodeSettings.load(self.paths.root), self.config.hub))
        except RoostError as err:
            log.warning("no cluster node report: %s", err.message)
            return
        while True:
            try:
                node = await self.client.report_node(report)
            except HubError as err:
                if getattr(err, "status", None) in (404, 405):
                    log.info("the hub has no cluster routes (%s): this device is no cluster node", err.code)
                    return
                await backoff.wait()
                continue
            log.info("cluster node: %s tier at %s, memory %d bytes, cpu %dm, labels %s", node.tier, node.address,
                     node.allocatable.memory_bytes, node.allocatable.cpu_millis, node.labels)
            return

    async def _secrets_loop(self) -> None:
        assert self.secrets is not None
        await self.secrets.refresh()
        await self.secrets.run()

    # -- poll + apply ------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                desired = await self.client.desired(self.applied_revision, self.poll_wait)
            except UnauthorizedError as err:
                self.health.refused(err)
                await self._poll_backoff.wait()
                continue
            except HubError as err:
                self.health.down(err)
                await self._poll_backoff.wait()
                continue
            self.health.up()
            self._poll_backoff.reset()
            if desired is not None and desired.revision > self.applied_revision:
                try:
                    await self.apply(desired)
                except _RetryLater:
                    await self._poll_backoff.wait()
                continue
            if time.monotonic() - started < 1.0:
                await asyncio.sleep(1.0)  # a hub answering at once with nothing new: no busy loop

    async def apply(self, desired: Desired) -> str:
        """Apply one desired revision and report it; the status reported."""
        revision = desired.revision
        # The desired state names every deployment still in effect; report only those this device has
        # not yet reported SUCCEEDED (a failed one that is still in effect is reported again).
        self._effective = list(desired.deployments)
        done = self._succeeded()
        ids = [d for d in desired.deployments if d not in done]
        log.info("hub revision %d: %s", revision,
                 ", ".join(f"{n}@{c.version}" for n, c in sorted(desired.components.items())) or "no components")
        for deployment_id in ids:  # the revision still applied: the hub records it as the device's
            self.report(IN_PROGRESS, deployment_id=deployment_id)
        if self.secrets is not None:  # the secrets this revision names, before its components start
            await self.secrets.refresh()
        if not desired.components and not any(r.hub_root for r in self.store.components().values()):
            return self._finish(ids, revision, SUCCEEDED, None, None)  # nothing from the hub, before or now
        work = self.downloads / f"rev-{revision}"
        try:
            try:
                recipe_dir, artifact_dir = await self._fetch(desired, work)
            except UnauthorizedError as err:
                self.health.refused(err)
                raise _RetryLater from err
            except HubError as err:
                if getattr(err, "retryable", False):
                    self.health.down(err)
                    raise _RetryLater from err
                return self._finish(ids, revision, FAILED, err.code, err.message)
            except RoostError as err:
                return self._finish(ids, revision, FAILED, err.code, err.message)
            request = self._request(desired, recipe_dir, artifact_dir)
            try:
                record = self.deployer.submit(request)
            except RoostError as err:
                return self._finish(ids, revision, FAILED, err.code, err.message)
            bound = 2 * float(request["timeoutSeconds"]) + 60.0
            record = await self._wait(record.id, bound)
            status, reason, message = _outcome(record)
            if status == TIMED_OUT:
                with contextlib.suppress(RoostError):
                    self.deployer.cancel(record.id)
            return self._finish(ids, revision, status, reason, message, record.notes)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _finish(self, ids: list[str], revision: int, status: str, reason: str | None, message: str | None,
                notes: list[str] | None = None) -> str:
        level = logging.INFO if status == SUCCEEDED else logging.WARNING
        log.log(level, "hub revision %d: %s%s%s", revision, status, f" ({reason})" if reason else "",
                f": {message}" if message and status != SUCCEEDED else "")
        for note in notes or []:
            log.info("hub revision %d: %s", revision, note)
        self._set_applied(revision)
        succeeded = self._succeeded() & set(self._effective)
        if status == SUCCEEDED:
            succeeded |= set(ids)
        self.store.set_meta(SUCCEEDED_META, json.dumps(sorted(succeeded)))
        for deployment_id in ids:
            self.report(status, deployment_id=deployment_id, revision=revision, reason_code=reason,
                        message=message, notes=notes)
        if not ids:
            self.report(None)  # a heartbeat: the hub learns the new component states
        return status

    async def _wait(self, deployment_id: str, bound: float) -> DeploymentRecord:
        deadline = time.monotonic() + bound
        while True:
            record = await self.deployer.wait(deployment_id, min(30.0, max(0.1, deadline - time.monotonic())))
            if record.status in TERMINAL or time.monotonic() >= deadline:
                return record

    def _request(self, desired: Desired, recipe_dir: Path, artifact_dir: Path) -> dict[str, Any]:
        timeout_minutes = desired.timeout_minutes
        timeout = float(timeout_minutes) * 60 if timeout_minutes is not None and timeout_minutes > 0 else 300.0
        config = {name: comp.configuration for name, comp in desired.components.items() if comp.configuration}
        return {"recipeDirectoryPath": str(recipe_dir), "artifactsDirectoryPath": str(artifact_dir),
                # The roots only: dependencies are in recipe_dir and the deployer resolves them.
                "hubComponents": {name: comp.version for name, comp in desired.components.items() if comp.root},
                "hubRevision": desired.revision, "componentToConfiguration": config,
                "failureHandlingPolicy": desired.failure_policy.value,
                "timeoutSeconds": min(timeout, 86400.0),
                "componentUpdatePolicy": {"action": desired.component_update_policy.action,
                                          "timeoutInSeconds": desired.component_update_policy.timeout_seconds},
                "configurationValidationPolicy": {
                    "timeoutInSeconds": desired.configuration_validation_policy.timeout_seconds}}

    async def _fetch(self, desired: Desired, work: Path) -> tuple[Path, Path]:
        """Recipes into ``work/recipes``, verified artifacts into ``work/artifacts/<name>/<version>/``.

        Every file of the version's artifact folder the hub lists (``DesiredComponent.artifacts``,
        relative paths like ``lib/greet.py``), checked against the hub's SHA-256 and, for the files the
        recipe names, its ``Digest``; a file already installed with those bytes is linked, not
        downloaded. A hub that sends no list: the recipe's artifacts only.
        """
        await asyncio.to_thread(shutil.rmtree, work, True)
        recipe_dir = work / "recipes"
        artifact_dir = work / "artifacts"
        recipe_dir.mkdir(parents=True)
        artifact_dir.mkdir()
        plat = current_platform()
        for name, comp in sorted(desired.components.items()):
            text = json.dumps(comp.recipe, indent=1)
            recipe = parse_recipe(text, source=f"hub recipe {name}-{comp.version}", fmt="json")
            if recipe.name != name or recipe.version != comp.version:
                raise InvalidInputError(f"the hub's recipe for {name}@{comp.version} describes "
                                        f"{recipe.name}@{recipe.version}", code="HUB_RECIPE_MISMATCH")
            (recipe_dir / f"{name}-{comp.version}.json").write_text(text)
            selected = recipe.select(plat)
            dest_dir = safe_join(artifact_dir, name, comp.version)
            dest_dir.mkdir(parents=True)
            # path -> (the hub's SHA-256 or None, the recipe's artifact or None)
            wanted: dict[str, tuple[str | None, Artifact | None]] = {
                f.file: (f.sha256.lower(), None) for f in comp.artifacts or []}
            for art in selected.artifacts:
                if art.scheme == "docker":
                    continue  # an image, not a file: the deployer gets it through the engine (roost.agent.docker)
                wanted[art.file_name] = (wanted.get(art.file_name, (None, None))[0], art)
            for rel, (sha256, listed) in sorted(wanted.items()):
                await self._fetch_file(name, comp.version, rel, sha256, listed, dest_dir)
        return recipe_dir, artifact_dir

    async def _fetch_file(self, name: str, version: str, rel: str, sha256: str | None, art: Artifact | None,
                          dest_dir: Path) -> None:
        """One artifact file into ``dest_dir/rel``, from the installed version when identical, else the hub."""
        segments = rel.split("/")
        dest = safe_join(dest_dir, *segments)
        dest.parent.mkdir(parents=True, exist_ok=True)
        installed = safe_join(self.paths.artifacts(name, version), *segments)

        def same(path: Path) -> bool:
            if sha256 is not None and file_digest(path).hex() != sha256:
                return False
            return art is None or not art.digest or _matches(path, art.digest, art.algorithm)

        if (sha256 is not None or (art is not None and art.digest)) and not installed.is_symlink() \
                and installed.is_file() and await asyncio.to_thread(same, installed):
            await asyncio.to_thread(_link_or_copy, installed, dest)
            return
        actual = await self.client.download_artifact(name, version, rel, dest)
        if sha256 is not None and actual != sha256:
            dest.unlink(missing_ok=True)
            raise ArtifactError(
                f"{name}-{version}: artifact {rel} downloaded from the hub has SHA-256 {actual}, but the hub's "
                f"desired state lists {sha256}: the file was altered or corrupted; nothing was changed on the "
                "device", code="ARTIFACT_DIGEST_MISMATCH")
        if art is not None and art.digest and not await asyncio.to_thread(_matches, dest, art.digest, art.algorithm):
            recipe_actual = await asyncio.to_thread(file_digest, dest, art.algorithm)
            dest.unlink(missing_ok=True)
            raise ArtifactError(
                f"{name}-{version}: artifact {rel} downloaded from the hub does not match the "
                f"recipe's {art.algorithm} Digest {art.digest} (file has {recipe_actual.hex()}): the file was "
                "altered or corrupted; nothing was changed on the device", code="ARTIFACT_DIGEST_MISMATCH")


def _matches(path: Path, digest: str, algorithm: str) -> bool:
    return digest_matches(file_digest(path, algorithm), digest)


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _outcome(record: DeploymentRecord) -> tuple[str, str | None, str | None]:
    """The hub's (status, reason_code, message) for a local deployment record."""
    message = "; ".join(record.errors) or None
    if record.status == SUCCEEDED:
        return SUCCEEDED, None, None
    if record.status not in TERMINAL:
        return TIMED_OUT, "TIMED_OUT", f"the deployment was still {record.status} when the agent stopped waiting"
    if record.status == CANCELED:
        return CANCELED, record.failure_cause or "CANCELED", message
    if record.detailed_status == "FAILED_ROLLBACK_COMPLETE":
        return ROLLED_BACK, record.failure_cause or "FAILED", message
    return FAILED, record.failure_cause or record.detailed_status or "FAILED", message


__all__ = ["AgentParts", "HubHealth", "HubSync"]
