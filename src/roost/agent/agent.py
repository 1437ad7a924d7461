"""The agent process: supervisor + deployer + store + local IPC server, under one root folder.

:class:`Agent` is also the :class:`~roost.agent.ipc_core.IpcCore` the IPC server calls into: the
server parses and authorises frames, the agent does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from roost.agent.component_metrics import ComponentMetrics
from roost.agent.component_spec import ComponentSpec
from roost.agent.configuration import get_path, merge_at
from roost.agent.deployer import Deployer
from roost.agent.docker import DockerHost, ImageManager
from roost.agent.errors import AgentError
from roost.agent.freezer import ComponentPauses, Freezer
from roost.agent.iotcore import IotCore
from roost.agent.ipc import IpcLimits, IpcServer
from roost.agent.ipc.ops_shadow import serve_pubsub_requests
from roost.agent.mqtt_bridge import BRIDGE, MqttBridge
from roost.agent.mqtt_settings import PASSWORD_ENV, load_mqtt_settings
from roost.agent.packages import PackageStore
from roost.agent.paths import AgentPaths
from roost.agent.process import reap_journal
from roost.agent.secrets import DeviceSecretStore
from roost.agent.shadow_store import LocalShadows, ShadowStore
from roost.agent.specs import SpecContext, build_spec
from roost.agent.states import ComponentState
from roost.agent.store import ComponentRecord, Store
from roost.agent.supervisor import Supervisor
from roost.agent.update_policy import LifecycleEvents
from roost.agent.users import Isolation
from roost.agent.workspace import Workspace
from roost.errors import InvalidInputError, NotFoundError, RoostError
from roost.observe.agent_metrics import AgentMetrics
from roost.observe.endpoint import MetricsEndpoint
from roost.observe.settings import MetricsSettings
from roost.observe.snapshot import snapshot_source
from roost.recipe import Recipe, current_platform, dependency_order
from roost.recipe.resolve import BUILTINS

if TYPE_CHECKING:
    from roost.agent.sync import HubSync

log = logging.getLogger(__name__)

CLI_PRINCIPAL = "aws.greengrass.Cli"
CLI_OPERATIONS = frozenset({"ListComponents", "GetComponentDetails", "RestartComponent", "StopComponent",
                            "CreateLocalDeployment", "GetLocalDeploymentStatus", "ListLocalDeployments",
                            "CancelLocalDeployment"})

ConfigCallback = Callable[[str, list[str]], None]


class Agent:
    def __init__(self, paths: AgentPaths, thing_name: str | None = None, *,
                 restart_backoff: tuple[float, float] = (1.0, 60.0), component_default_user: str | None = None,
                 component_python: str | None = None, ipc_limits: IpcLimits | None = None,
                 strict_config_reads: bool = False, docker_host: str | None = None,
                 mqtt_options: Mapping[str, Any] | None = None) -> None:
        self.paths = paths
        self.docker_host = DockerHost.resolve(docker_host)
        paths.ensure()
        self.isolation = Isolation.for_agent(component_default_user)
        self.workspace = Workspace(paths, self.isolation, component_python)
        self.store = Store(paths.state_db)
        stored_name = self.store.get_meta("thing_name")
        self.thing_name = thing_name or stored_name or os.uname().nodename
        self.store.set_meta("thing_name", self.thing_name)
        self.packages = PackageStore(paths)
        self.supervisor = Supervisor(on_state=self._on_state, journal=self.store, prepare=self.workspace.prepare)
        self.spec_ctx = SpecContext(paths=paths, thing_name=self.thing_name, platform=current_platform(),
                                    restart_backoff=restart_backoff, isolation=self.isolation,
                                    workspace=self.workspace,
                                    docker_host=self.docker_host.url if self.docker_host.explicit else None)
        # Component updates, configuration validation, pause/resume (roost.agent.ipc.ops_lifecycle).
        self.lifecycle_events = LifecycleEvents()
        self.freezer = Freezer(paths.root)
        self.pauses = ComponentPauses(self.freezer, self.supervisor.state, self._members, frozenset(BUILTINS))
        self.deployer = Deployer(paths, self.store, self.packages, self.supervisor, self._build_specs,
                                 self._on_applied, images=ImageManager(self.docker_host, self.store),
                                 events=self.lifecycle_events)
        self.server = IpcServer(paths.ipc_socket, self, limits=ipc_limits, strict_config_reads=strict_config_reads)
        #: Local shadows (aws.greengrass.ShadowManager's IPC operations) and PutComponentMetric's store.
        self.shadows = LocalShadows(ShadowStore(paths.shadows_db))
        serve_pubsub_requests(self.server, self.shadows)
        self.component_metrics = ComponentMetrics()
        self._tokens: dict[str, str] = {}          # component -> SVCUID (fresh each agent start)
        self._token_index: dict[bytes, str] = {}   # sha256(SVCUID) -> component
        self._config_subs: dict[int, tuple[str, list[str], ConfigCallback]] = {}
        self._next_sub = 0
        self._stopping = asyncio.Event()
        self._cli_token = ""
        self.hub_sync: HubSync | None = None
        #: components that went ERRORED and have not been RUNNING since (see _on_state)
        self._recovering: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        #: Secrets the hub deployed to this device (sealed in ROOT/secrets; GetSecretValue).
        self.secrets = DeviceSecretStore(paths.root / "secrets")
        self.secrets.load()
        self._applied_configs: dict[str, dict[str, Any]] = {
            n: r.configuration for n, r in self.deployer.live.items()}
        # IoT Core over the broker named by --mqtt-broker or ROOT/agent.yaml (docs/iotcore.md).
        mqtt = load_mqtt_settings(paths.root, self.thing_name, mqtt_options)
        os.environ.pop(PASSWORD_ENV, None)  # read once; never in a child's environment
        self.iot_core = IotCore(mqtt, paths.root) if mqtt is not None else None
        self.server.iot_core = self.iot_core
        self.bridge = MqttBridge(self.server.pubsub, self.server.publish, self.iot_core, self.thing_name, paths.root)
        self.deployer.configurable_builtins[BRIDGE] = self.bridge
        # /metrics (roost.observe): read from the parts above at scrape time; settings in ROOT/metrics.json.
        self.metrics = AgentMetrics(self)
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._metrics_on = False

    # -- start / stop ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.freezer.thaw_leftovers()  # frozen processes of a crashed agent must thaw to be stopped
        self._stop_leftovers()
        self.workspace.secure_root()
        if self.isolation.enabled:
            problem = self.workspace.check_reachable()
            if problem is not None:
                log.warning("%s", problem)
        self._cli_token = secrets.token_urlsafe(32)
        self._register_token(CLI_PRINCIPAL, self._cli_token)
        tmp = self.paths.cli_token.with_name("cli.token.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._cli_token)
        os.replace(tmp, self.paths.cli_token)
        if self.iot_core is not None:
            await self.iot_core.start()
        await self._start_installed()
        await self.server.start()
        if self.isolation.enabled:  # component users connect; every connection authenticates (SVCUID)
            os.chmod(self.paths.ipc_socket, 0o666)
        try:  # the MQTT bridge's topic mapping, as the last successful deployment left it
            await self.bridge.apply(self.deployer.builtin_configuration(BRIDGE))
        except RoostError as err:
            log.error("the MQTT bridge did not start: %s", err)
        self.deployer.start()
        await self._start_metrics()
        if (self.paths.root / "hub.json").exists():  # enrolled with a hub: run the sync loop
            from roost.agent.sync import HubSync

            self.hub_sync = HubSync.for_agent(self)
            if self.hub_sync is not None:
                if self._metrics_on:
                    self.hub_sync.snapshot = snapshot_source(self, self.hub_sync.config.hub)
                self.hub_sync.start()
        log.info("agent started: root %s, thing %s, %d component(s)", self.paths.root, self.thing_name,
                 len(self.deployer.current_specs))

    async def _start_metrics(self) -> None:
        try:
            settings = MetricsSettings.load(self.paths.root)
        except RoostError as err:
            log.error("no metrics endpoint: %s", err.message)
            return
        self._metrics_on = settings.address is not None
        if settings.address is None:
            return
        endpoint = MetricsEndpoint(settings.address, self.metrics.render, settings.token_sha256)
        try:
            await endpoint.start()
        except OSError as err:
            log.warning("the metrics endpoint cannot listen on %s (%s): no /metrics; the agent runs on",
                        settings.address, err.strerror or err)
            return
        self.metrics_endpoint = endpoint

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.hub_sync is not None:
            await self.hub_sync.close()
        await self.deployer.close()
        order = self.deployer.order_of(self.deployer.current_specs)
        await self.supervisor.stop_all(list(reversed(order)))
        await self.supervisor.close()
        self.freezer.close()
        self._stop_leftovers()  # processes killed without waiting (cancelled steps) are confirmed gone
        await self.bridge.close()
        if self.iot_core is not None:
            await self.iot_core.close()
        await self.server.stop()
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.stop()
        self.paths.cli_token.unlink(missing_ok=True)
        self.shadows.close()
        self.store.close()
        log.info("agent stopped")

    def _stop_leftovers(self) -> None:
        """Stop every process in the journal: left by a killed agent, before anything starts."""
        entries = self.store.journal()
        if not entries:
            return
        for name, killed in sorted(reap_journal(entries).items()):
            log.warning("stopped %d leftover process(es) of %s", killed, name)
        for entry in entries:
            if entry.tag is not None:
                self.store.ended(entry.tag)
        self.store.clear_legacy_processes()

    async def _start_installed(self) -> None:
        records = self.store.components()
        if not records:
            return
        recipes: dict[str, Recipe] = {}
        for name, rec in records.items():
            try:
                recipes[name] = self.packages.get(name, rec.version)
            except RoostError as err:
                log.error("cannot restore %s@%s: %s", name, rec.version, err)
        specs: dict[str, ComponentSpec] = {}
        for name in list(recipes):
            try:  # one by one: a component that cannot be restored (its user is gone...) stays down alone
                specs.update(self._build_specs({name: recipes[name], **{d: recipes[d] for d in
                                                recipes[name].dependencies if d in recipes}}, records))
            except RoostError as err:
                log.error("cannot restore %s@%s: %s", name, records[name].version, err)
        for name in dependency_order(recipes):
            spec = specs.get(name)
            if spec is None:
                continue
            self.supervisor.add(spec)
            self.deployer.current_specs[name] = spec
            try:
                await self.supervisor.install(name)
                await self.supervisor.start(name)
            except RoostError as err:
                log.error("component %s did not start: %s", name, err)

    # -- specs -----------------------------------------------------------------------------------
    def _build_specs(self, recipes: Mapping[str, Recipe], records: Mapping[str, ComponentRecord]
                     ) -> dict[str, ComponentSpec]:
        specs: dict[str, ComponentSpec] = {}
        for name, recipe in recipes.items():
            deps = {d: (recipes[d], records[d].configuration) for d in recipe.dependencies if d in recipes}
            specs[name] = build_spec(recipe, records[name].configuration, self._token_for(name),
                                     self.spec_ctx, deps, records[name].run_with)
        return specs

    def _hard_dependents(self, name: str) -> list[str]:
        """The deployed components that depend on ``name`` over HARD dependencies (transitively), dependencies first."""
        try:
            recipes = {n: self.packages.get(n, s.version) for n, s in self.deployer.current_specs.items()}
            order = dependency_order(recipes)
        except RoostError as err:
            log.warning("cannot tell the dependents of %s: %s", name, err)
            return []
        found = {name}
        for n in order:
            if n not in found and any(d in found and dep.dependency_type == "HARD"
                                      for d, dep in recipes[n].dependencies.items()):
                found.add(n)
        return [n for n in order if n in found and n != name]

    def _members(self, name: str) -> list[psutil.Process]:
        proc = self.supervisor.process(name)
        return proc.members() if proc is not None else []

    def _token_for(self, name: str) -> str:
        token = self._tokens.get(name)
        if token is None:
            token = secrets.token_urlsafe(32)
            self._register_token(name, token)
        return token

    def _register_token(self, name: str, token: str) -> None:
        self._tokens[name] = token
        self._token_index[hashlib.sha256(token.encode()).digest()] = name

    async def _on_applied(self, records: Mapping[str, ComponentRecord]) -> None:
        for name in list(self._tokens):
            if name != CLI_PRINCIPAL and name not in records:
                token = self._tokens.pop(name)
                self._token_index.pop(hashlib.sha256(token.encode()).digest(), None)
        for name in self._applied_configs:
            if name not in records:
                self.workspace.remove(name)
                self.component_metrics.forget(name)
        for name, record in records.items():
            # Rows of new components exist only now: record their states.
            self._record_state(name)
            if name in self._applied_configs and self._applied_configs[name] != record.configuration:
                self._notify_config(name, [])
        self._applied_configs = {n: r.configuration for n, r in records.items()}
        # Policies may have changed: direct request/reply channels no longer allowed end now.
        self.server.direct.recheck()

    def _on_state(self, name: str, old: ComponentState, new: ComponentState, reason: str | None) -> None:
        self.pauses.on_state(name, new)  # leaving RUNNING thaws a paused component first
        self.metrics.on_state(name, new)
        self._record_state(name)
        self.deployer.on_state(name, old, new, reason)
        # As on Greengrass, a HARD dependent restarts when its dependency changes state: when the
        # supervisor brings a component that failed back to RUNNING, its running HARD dependents
        # are restarted after it (a deployment restarts dependents itself: not while one runs).
        if new is ComponentState.ERRORED:
            self._recovering.add(name)
        elif new is ComponentState.RUNNING and name in self._recovering:
            self._recovering.discard(name)
            if not self.deployer.busy and not self._stopping.is_set():
                task = asyncio.get_running_loop().create_task(self._restart_hard_dependents(name))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        elif new is not ComponentState.STARTING:
            self._recovering.discard(name)

    async def _restart_hard_dependents(self, name: str) -> None:
        for dependent in self._hard_dependents(name):
            with contextlib.suppress(RoostError):
                if self.supervisor.state(dependent) is not ComponentState.RUNNING:
                    continue
            log.info("restarting %s (a HARD dependent) after %s recovered", dependent, name)
            try:
                await self.supervisor.restart(dependent)
            except RoostError as err:
                log.warning("%s (HARD dependent of %s) did not restart: %s", dependent, name, err)

    def _record_state(self, name: str) -> None:
        with contextlib.suppress(RoostError):
            self.store.set_state(name, self.supervisor.state(name).value)

    # -- IpcCore -----------------------------------------------------------------------------------
    def authenticate(self, token: str) -> str | None:
        name = self._token_index.get(hashlib.sha256(token.encode()).digest())
        if name is None:
            return None
        return name if hmac.compare_digest(self._tokens[name], token) else None

    def access_control(self, principal: str) -> Mapping[str, Any]:
        record = self.deployer.live.get(principal)
        if record is None:
            return {}
        ac = record.configuration.get("accessControl", {})
        return ac if isinstance(ac, Mapping) else {}

    def is_privileged(self, principal: str) -> bool:
        return principal == CLI_PRINCIPAL

    def secret_store(self) -> DeviceSecretStore:
        return self.secrets

    async def get_configuration(self, principal: str, component: str, key_path: list[str]) -> Any:
        return get_path(self._live(component).configuration, key_path)

    async def update_configuration(self, principal: str, key_path: list[str], value_to_merge: Any,
                                   timestamp: float) -> None:
        from roost.agent.authz import check_configuration_update

        # Policy (accessControl) changes only through a deployment; the IPC server checks this
        # too, the core refuses it whoever calls. Checked before anything changes.
        check_configuration_update(principal, key_path, value_to_merge)
        record = self._live(principal)
        if not key_path and not isinstance(value_to_merge, Mapping):
            raise InvalidInputError("valueToMerge must be an object when keyPath is empty",
                                    code="INVALID_CONFIG_UPDATE")
        record.configuration = merge_at(record.configuration, key_path, value_to_merge)
        self.store.set_configuration(principal, record.configuration)
        self._notify_config(principal, key_path)

    def subscribe_configuration(self, principal: str, component: str, key_path: list[str],
                                callback: ConfigCallback) -> Callable[[], None]:
        self._live(component)
        self._next_sub += 1
        sub_id = self._next_sub
        self._config_subs[sub_id] = (component, list(key_path), callback)
        return lambda: self._config_subs.pop(sub_id, None) and None

    def _notify_config(self, component: str, key_path: list[str]) -> None:
        for name, sub_path, callback in list(self._config_subs.values()):
            n = min(len(sub_path), len(key_path))
            if name == component and sub_path[:n] == key_path[:n]:
                try:
                    callback(component, key_path)
                except Exception:
                    log.exception("configuration update callback failed")

    async def update_state(self, principal: str, state: str) -> None:
        try:
            wanted = ComponentState(state)
        except ValueError as err:
            raise InvalidInputError(f"invalid state {state!r}: expected RUNNING or ERRORED",
                                    code="INVALID_STATE") from err
        if wanted not in (ComponentState.RUNNING, ComponentState.ERRORED):
            raise InvalidInputError(f"invalid state {state!r}: expected RUNNING or ERRORED", code="INVALID_STATE")
        self.supervisor.report_state(principal, wanted)

    async def cli_operation(self, principal: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        if operation not in CLI_OPERATIONS:
            raise InvalidInputError(f"unknown CLI operation {operation}", code="UNKNOWN_OPERATION")
        if operation == "ListComponents":
            return {"components": [self._component_details(n) for n in sorted(self.deployer.current_specs)]}
        if operation == "GetComponentDetails":
            return {"componentDetails": self._component_details(_name(request))}
        if operation == "RestartComponent":
            name = _name(request)
            self._require_component(name)
            dependents = self._hard_dependents(name)
            await self.supervisor.restart(name)
            for dependent in dependents:  # as on Greengrass: HARD dependents restart with it, SOFT ones do not
                try:
                    await self.supervisor.restart(dependent)
                except RoostError as err:
                    log.warning("%s (HARD dependent of %s) did not restart: %s", dependent, name, err)
            return {"restartStatus": "SUCCEEDED", "message": f"{name} restarted" + _with(dependents)}
        if operation == "StopComponent":
            name = _name(request)
            self._require_component(name)
            dependents = self._hard_dependents(name)
            for dependent in reversed(dependents):  # HARD dependents stop first, as on Greengrass
                try:
                    await self.supervisor.stop(dependent)
                except RoostError as err:
                    log.warning("%s (HARD dependent of %s) did not stop: %s", dependent, name, err)
            await self.supervisor.stop(name)
            return {"stopStatus": "SUCCEEDED", "message": f"{name} stopped" + _with(dependents)}
        if operation == "CreateLocalDeployment":
            return {"deploymentId": self.deployer.submit(request).id}
        if operation == "GetLocalDeploymentStatus":
            deployment_id = request.get("deploymentId")
            if not isinstance(deployment_id, str):
                raise InvalidInputError("deploymentId is required", code="INVALID_REQUEST")
            wait = request.get("waitSeconds")
            if isinstance(wait, (int, float)) and wait > 0:
                record = await self.deployer.wait(deployment_id, min(float(wait), 30.0))
            else:
                record = self.store.deployment(deployment_id)
            return {"deployment": record.to_ipc()}
        if operation == "CancelLocalDeployment":
            deployment_id = request.get("deploymentId")
            if not isinstance(deployment_id, str):
                raise InvalidInputError("deploymentId is required", code="INVALID_REQUEST")
            return {"deployment": self.deployer.cancel(deployment_id).to_ipc()}
        return {"localDeployments": [d.to_ipc() for d in self.store.deployments()]}

    def _live(self, name: str) -> ComponentRecord:
        record = self.deployer.live.get(name)
        if record is None:
            raise NotFoundError(f"component {name} is not deployed on this device", code="COMPONENT_NOT_FOUND")
        return record

    def _require_component(self, name: str) -> None:
        if name not in self.deployer.current_specs:
            raise NotFoundError(f"component {name} is not deployed on this device", code="COMPONENT_NOT_FOUND")

    def _component_details(self, name: str) -> dict[str, Any]:
        self._require_component(name)
        record = self._live(name)
        details = {"componentName": name, "version": record.version,
                   "state": self.supervisor.state(name).value, "configuration": record.configuration,
                   "isRoot": record.is_root}
        paused = self.freezer.paused(name)
        if paused is not None:  # still RUNNING, as on Greengrass; Roost says it is frozen and how
            details["paused"] = paused.value
        return details


def _name(request: Mapping[str, Any]) -> str:
    name = request.get("componentName")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("componentName is required", code="INVALID_REQUEST")
    return name


async def run_agent(paths: AgentPaths, thing_name: str | None, *, component_default_user: str | None = None,
                    component_python: str | None = None, ipc_limits: IpcLimits | None = None,
                    strict_config_reads: bool = False, docker_host: str | None = None,
                    mqtt_options: Mapping[str, Any] | None = None) -> None:
    """Run an agent in the foreground until SIGTERM/SIGINT; then stop everything cleanly."""
    import signal

    from roost.agent.daemon import PidLock

    with PidLock(paths.pid_file):
        agent = Agent(paths, thing_name, component_default_user=component_default_user,
                      component_python=component_python, ipc_limits=ipc_limits,
                      strict_config_reads=strict_config_reads, docker_host=docker_host,
                      mqtt_options=mqtt_options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
        t0 = time.monotonic()
        try:
            await agent.start()
            log.info("agent ready in %.3f s", time.monotonic() - t0)
            await agent.run_until_stopped()
        finally:
            await agent.close()


def _with(dependents: list[str]) -> str:
    return f", with its HARD dependent(s) {', '.join(dependents)}" if dependents else ""


__all__ = ["CLI_PRINCIPAL", "Agent", "AgentError", "run_agent"]
