"""`python -m roost.agent --root R [--thing-name N]`: the agent process itself.

`roost agent start` (foreground or ``--detach``) runs this; it skips the CLI's imports (Typer,
Rich) so the agent is up sooner and uses less memory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from roost import eventloop
from roost.agent.agent import run_agent
from roost.agent.ipc import IpcLimits
from roost.agent.logfile import AGENT_LOG_BACKUPS, AGENT_LOG_MAX_BYTES, configure_agent_logging
from roost.agent.mqtt_settings import add_mqtt_arguments, mqtt_options
from roost.agent.paths import AgentPaths
from roost.errors import RoostError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="roost-agent", description=__doc__)
    parser.add_argument("--root", default=None)
    parser.add_argument("--thing-name", default=None)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-file", default=None, help="Log to this size-capped rotating file (default: stderr).")
    parser.add_argument("--log-max-bytes", type=int, default=AGENT_LOG_MAX_BYTES)
    parser.add_argument("--log-backups", type=int, default=AGENT_LOG_BACKUPS)
    parser.add_argument("--component-default-user", default=None,
                        help="user[:group] components run as when the agent is root (default roost-components)")
    parser.add_argument("--component-python", default=None,
                        help="interpreter of the components' Python environments (default: the system python3)")
    parser.add_argument("--ipc-max-connections", type=int, default=IpcLimits.max_connections,
                        help="IPC connections held at once; one more is refused with IPC_BUSY")
    parser.add_argument("--ipc-max-streams", type=int, default=IpcLimits.max_streams_per_component,
                        help="open IPC streams (subscriptions) per component")
    parser.add_argument("--strict-config-reads", action="store_true",
                        help="reading another component's configuration needs accessControl "
                             "(aws.greengrass.ipc.config); by default any component may read any")
    parser.add_argument("--docker-host", default=None,
                        help="engine of docker: artifacts, unix:///PATH or tcp://HOST:PORT (default $DOCKER_HOST, "
                             "else unix:///var/run/docker.sock); components get it as DOCKER_HOST")
    add_mqtt_arguments(parser)
    args = parser.parse_args(argv)
    if args.ipc_max_connections < 1 or args.ipc_max_streams < 1:
        parser.error("--ipc-max-connections and --ipc-max-streams must be at least 1")
    limits = IpcLimits(max_connections=args.ipc_max_connections, max_streams_per_component=args.ipc_max_streams)
    options = {"component_default_user": args.component_default_user, "component_python": args.component_python,
               "ipc_limits": limits, "strict_config_reads": args.strict_config_reads,
               "docker_host": args.docker_host,
               "mqtt_options": mqtt_options(args)}
    configure_agent_logging(args.log_level, Path(args.log_file) if args.log_file else None,
                            max_bytes=args.log_max_bytes, backups=args.log_backups)
    try:
        eventloop.run(run_agent(AgentPaths.at(args.root), args.thing_name, **options))
    except RoostError as err:
        logging.getLogger("roost.agent").error("%s (%s)", err.message, err.code)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
