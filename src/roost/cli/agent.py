"""`roost agent start|stop|status`."""

from __future__ import annotations

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
          label: Annotated[list[str] | None, typer.Option("--label", help="k=v device label sent at enrolment "
                                                                          "(repeatable).")] = None,
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
          as_json: JsonOpt = False) -> None:
    """Start the agent on ROOT (foreground unless --detach)."""
    paths = AgentPaths.at(root)
    options = ["--log-level", log_level]
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
    if as_json:
        emit_json({"running": pid is not None, "pid": pid, "root": str(paths.root)})
    else:
        console.print(f"agent running (pid {pid})" if pid else f"no agent running on {paths.root}")
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
