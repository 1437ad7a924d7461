"""`roost agent start|stop|status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.agent.daemon import running_pid, start_detached, stop_agent
from roost.agent.paths import AgentPaths
from roost.cli.output import console, emit_json, handle_errors
from roost.errors import ConflictError

app = typer.Typer(help="Run the device agent: supervisor, deployer and local IPC server.", no_args_is_help=True)

RootOpt = Annotated[str | None, typer.Option("--root", help="Agent root folder (default $ROOST_ROOT, else "
                                                            "/var/lib/roost as root, ~/.roost otherwise).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("start")
@handle_errors
def start(root: RootOpt = None,
          thing_name: Annotated[str | None, typer.Option("--thing-name", help="Device name (default: hostname).")]
          = None,
          detach: Annotated[bool, typer.Option("--detach", help="Run in the background; return once the IPC "
                                                             "socket accepts connections.")] = False,
          log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
          hub: Annotated[str | None, typer.Option("--hub", help="Hub URL: enrol (first start) and sync with it.")]
          = None,
          enroll_token: Annotated[str | None, typer.Option("--enroll-token", help="One-time enrolment token "
                                                                                  "(first start with --hub).")]
          = None,
          label: Annotated[list[str] | None, typer.Option("--label", help="k=v device label, sent at enrolment "
                                                                          "and as a cluster node (repeatable; "
                                                                          "kept in ROOT/node.json).")] = None,
          capacity: Annotated[str | None, typer.Option(
              "--capacity", help="Cluster node capacity overriding what is measured, e.g. memory=16Gi,cpu=8 "
                                 "(accelerators as nvidia.com/gpu=1); kept in ROOT/node.json.")] = None,
          centre: Annotated[bool | None, typer.Option(
              "--centre/--edge", help="Put this node in the cluster's centre tier (offload target) or the edge "
                                      "(default edge; kept in ROOT/node.json).")] = None,
          advertise_address: Annotated[str | None, typer.Option(
              "--advertise-address", help="Address clients reach this node's cluster replicas at (default: the "
                                          "local address of the route to the hub).")] = None,
          port_range: Annotated[str | None, typer.Option(
              "--port-range", help="Ports this node's cluster replicas listen on (default 31000-31999).")] = None,
          component_user: Annotated[str | None, typer.Option(
              "--component-default-user", help="user[:group] that components run as when the agent is root and "
                                               "a deployment names no posixUser (default roost-components, "
                                               "created if missing).")] = None,
          component_python: Annotated[str | None, typer.Option(
              "--component-python", help="Interpreter of the components' own Python environments "
                                         "(default: the system python3).")] = None,
          ipc_max_connections: Annotated[int | None, typer.Option(
              "--ipc-max-connections", min=1, help="IPC connections held at once (default 1024); one more is "
                                                   "refused with IPC_BUSY.")] = None,
          ipc_max_streams: Annotated[int | None, typer.Option(
              "--ipc-max-streams", min=1, help="Open IPC streams (subscriptions) per component (default 1024).")]
          = None,
          strict_config_reads: Annotated[bool, typer.Option(
              "--strict-config-reads", help="Reading another component's configuration needs accessControl "
              "(aws.greengrass.ipc.config); by default any component may read any, as on Greengrass.")]
          = False,
          docker_host: Annotated[str | None, typer.Option(
              "--docker-host", help="Docker-compatible engine of docker: artifacts, unix:///PATH or tcp://HOST:PORT "
              "(default $DOCKER_HOST, else unix:///var/run/docker.sock); components get it as DOCKER_HOST.")]
          = None,
          mqtt_broker: Annotated[str | None, typer.Option(
              "--mqtt-broker", help="MQTT broker behind the IoT Core IPC operations (PublishToIoTCore, "
              "SubscribeToIoTCore): mqtt://HOST:PORT or mqtts://HOST:PORT; also mqtt.broker in ROOT/agent.yaml.")]
          = None,
          mqtt_ca: Annotated[str | None, typer.Option("--mqtt-ca", help="CA bundle that verifies an mqtts:// "
                                                                         "broker.")] = None,
          mqtt_cert: Annotated[str | None, typer.Option("--mqtt-cert", help="Client certificate (mutual TLS, "
                                                                             "with --mqtt-key).")] = None,
          mqtt_key: Annotated[str | None, typer.Option("--mqtt-key", help="Private key of --mqtt-cert.")] = None,
          mqtt_username: Annotated[str | None, typer.Option("--mqtt-username", help="MQTT user name.")] = None,
          mqtt_password_file: Annotated[str | None, typer.Option(
              "--mqtt-password-file", help="File whose first line is the MQTT password (or $ROOST_MQTT_PASSWORD); "
                                           "never logged.")] = None,
          metrics_address: Annotated[str | None, typer.Option(
              "--metrics-address", help="HOST:PORT of the agent's Prometheus /metrics, or 'off' (default "
              "127.0.0.1:9464; kept in ROOT/metrics.json). Listen beyond localhost only with a token.")] = None,
          metrics_token_file: Annotated[str | None, typer.Option(
              "--metrics-token-file", help="File whose first line is the bearer token scrapers must send to "
              "/metrics (only its SHA-256 is kept, in ROOT/metrics.json); never logged.")] = None,
          no_metrics_token: Annotated[bool, typer.Option(
              "--no-metrics-token", help="Serve /metrics without a token again.")] = False,
          as_json: JsonOpt = False) -> None:
    """Start the agent on ROOT (foreground unless --detach)."""
    paths = AgentPaths.at(root)
    options = ["--log-level", log_level]
    options += _mqtt_options(paths, {"--mqtt-broker": mqtt_broker, "--mqtt-ca": mqtt_ca, "--mqtt-cert": mqtt_cert,
                                     "--mqtt-key": mqtt_key, "--mqtt-username": mqtt_username,
                                     "--mqtt-password-file": mqtt_password_file})
    if component_user:
        options += ["--component-default-user", component_user]
    if component_python:
        options += ["--component-python", component_python]
    if ipc_max_connections is not None:
        options += ["--ipc-max-connections", str(ipc_max_connections)]
    if ipc_max_streams is not None:
        options += ["--ipc-max-streams", str(ipc_max_streams)]
    if strict_config_reads:
        options.append("--strict-config-reads")
    if docker_host:
        from roost.agent.docker import DockerHost

        DockerHost.resolve(docker_host)  # refused here (DOCKER_HOST_INVALID), not in the detached agent's log
        options += ["--docker-host", docker_host]
    _save_node_settings(paths, label or [], capacity, centre, advertise_address, port_range)
    _save_metrics_settings(paths, metrics_address, metrics_token_file, no_metrics_token)
    thing_name = enroll_for_start(paths, hub, enroll_token, thing_name, label or [])
    if detach:
        pid = start_detached(paths, thing_name, extra_args=options)
        if as_json:
            emit_json({"pid": pid, "root": str(paths.root), "socket": str(paths.ipc_socket)})
        else:
            console.print(f"agent started (pid {pid}) on {paths.root}")
        return
    from roost.agent.__main__ import main as agent_main

    args = ["--root", str(paths.root), *options]
    if thing_name:
        args += ["--thing-name", thing_name]
    raise typer.Exit(agent_main(args))


@app.command("stop")
@handle_errors
def stop(root: RootOpt = None, timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
         as_json: JsonOpt = False) -> None:
    """Stop the components in reverse dependency order, then the agent."""
    paths = AgentPaths.at(root)
    pid = stop_agent(paths, timeout)
    if as_json:
        emit_json({"stopped": pid is not None, "pid": pid})
    else:
        console.print(f"agent (pid {pid}) stopped" if pid else f"no agent running on {paths.root}")


@app.command("status")
@handle_errors
def status(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Whether an agent runs on ROOT."""
    paths = AgentPaths.at(root)
    pid = running_pid(paths)
    from roost.agent.mqtt_spool import read_status

    iot = read_status(paths.root / "iotcore-spool.db")  # IoT Core's broker, spool and drops (docs/iotcore.md)
    if as_json:
        emit_json({"running": pid is not None, "pid": pid, "root": str(paths.root),
                   **({"iotCore": iot} if iot is not None else {})})
    else:
        console.print(f"agent running (pid {pid})" if pid else f"no agent running on {paths.root}")
        if iot is not None:
            console.print(f"IoT Core {iot['broker']}: {'connected' if iot['connected'] else 'not connected'} "
                          f"since {iot['since']}; {iot['waiting']} spooled message(s) waiting; {iot['sent']} sent "
                          f"from the spool, {iot['dropped']} dropped, {iot['refused']} refused")
    if pid is None:
        raise typer.Exit(5)


# -- agent start --hub -----------------------------------------------------------------------------
def enroll_for_start(paths: AgentPaths, hub: str | None, token: str | None, thing_name: str | None,
                     labels: list[str]) -> str | None:
    """Enrol (first start) or load ``ROOT/hub.json``; the thing name the agent must use."""
    if not hub and not token and not (paths.root / "hub.json").exists():
        return thing_name
    from roost.agent.enrolment import ensure_enrolled
    from roost.cli.hub import parse_pairs

    pid = running_pid(paths)
    if pid is not None:  # before redeeming the one-time token
        raise ConflictError(f"an agent is already running on {paths.root} (pid {pid})", code="AGENT_ALREADY_RUNNING")
    extra = {k: v for k, v in parse_pairs(labels, "--label").items() if v is not None}
    config = ensure_enrolled(paths, hub, token, thing_name, extra)
    return config.device if config is not None else thing_name


def _save_node_settings(paths: AgentPaths, labels: list[str], capacity: str | None, centre: bool | None,
                        address: str | None, port_range: str | None) -> None:
    """ROOT/node.json with the cluster-node options given (checked here, not in a detached agent's log)."""
    if not labels and capacity is None and centre is None and address is None and port_range is None:
        return
    from roost.agent.node import settings_from_options
    from roost.cli.hub import parse_pairs

    pairs = {k: str(v) for k, v in parse_pairs(labels, "--label").items() if v is not None}
    paths.root.mkdir(parents=True, exist_ok=True)
    settings_from_options(paths.root, pairs, capacity, centre, address, port_range).save(paths.root)


def _save_metrics_settings(paths: AgentPaths, address: str | None, token_file: str | None, no_token: bool) -> None:
    """ROOT/metrics.json with the metrics options given (checked here, not in a detached agent's log)."""
    if address is None and token_file is None and not no_token:
        return
    from roost.observe.settings import settings_from_options

    paths.root.mkdir(parents=True, exist_ok=True)
    settings_from_options(paths.root, address, Path(token_file) if token_file else None, no_token).save(paths.root)


def _mqtt_options(paths: AgentPaths, given: dict[str, str | None]) -> list[str]:
    """The ``--mqtt-*`` arguments for the agent process, checked first (with ROOT/agent.yaml) so that a
    bad broker URI or a missing TLS file fails here with MQTT_CONFIG_INVALID, not in a detached agent."""
    from roost.agent.mqtt_settings import CLI_OPTIONS, load_mqtt_settings

    load_mqtt_settings(paths.root, "check", {CLI_OPTIONS[k]: v for k, v in given.items() if v is not None})
    out: list[str] = []
    for option, value in given.items():
        if value is not None:
            # TLS and password files are resolved here: the agent process may run from another folder.
            out += [option, value if option == "--mqtt-broker" or option == "--mqtt-username"
                    else str(Path(value).expanduser().resolve())]
    return out
