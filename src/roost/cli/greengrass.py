"""`greengrass-cli`: the AWS Greengrass CLI's commands and spellings, against a Roost agent.

Scripts written for a Greengrass core device run unchanged::

    greengrass-cli deployment create --recipeDir recipes --artifactDir artifacts --merge "com.example.Hello=1.0.0"
    greengrass-cli deployment status -i ID
    greengrass-cli component list
    greengrass-cli component restart --names "com.example.Hello,com.example.Other"

The agent is the one at ``--ggcRootPath``, else ``$ROOST_ROOT``, else the default root. The
output has the shape greengrass-cli prints (``Local deployment submitted! Deployment Id: ...``,
``Component Name: ... Version: ... State: ...``), and the exit codes are Roost's (see the README).
Each command builds the same request as the matching ``roost`` command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roost.cli import local
from roost.cli.deployment import local_deployment_id, local_request
from roost.cli.output import EXIT_FAILED, EXIT_INVALID, exit_code_for
from roost.errors import RoostError


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greengrass-cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ggcRootPath", dest="root", default=None, help="the agent's root folder")
    groups = parser.add_subparsers(dest="group", required=True)

    component = groups.add_parser("component", help="list, details, restart, stop").add_subparsers(
        dest="verb", required=True)
    component.add_parser("list")
    details = component.add_parser("details")
    details.add_argument("--name", "-n", required=True)
    for verb in ("restart", "stop"):
        cmd = component.add_parser(verb)
        cmd.add_argument("--names", "-n", required=True, help="comma-separated component names")

    deployment = groups.add_parser("deployment", help="create, status, list, cancel").add_subparsers(
        dest="verb", required=True)
    create = deployment.add_parser("create")
    create.add_argument("--recipeDir", "-r", type=Path, default=None)
    create.add_argument("--artifactDir", "-a", type=Path, default=None)
    create.add_argument("--merge", "-m", action="append", default=[], help="NAME=VERSION (repeatable)")
    create.add_argument("--remove", action="append", default=[], help="NAME[,NAME...] (repeatable)")
    create.add_argument("--update-config", "-c", dest="update_config", default=None,
                        help="JSON, or the path of a JSON file")
    create.add_argument("--runWith", action="append", default=[], help="NAME:posixUser=USER[:GROUP]")
    create.add_argument("--groupId", "-g", default=None, help="accepted; a local deployment has no thing group")
    for verb in ("status", "cancel"):
        deployment.add_parser(verb).add_argument("--deploymentId", "-i", required=True)
    deployment.add_parser("list")
    return parser


def _update_config(text: str | None) -> str | None:
    """greengrass-cli takes the JSON itself or a file path; Roost's parser takes JSON or @file."""
    if text is None or text.lstrip().startswith("{"):
        return text
    return "@" + text


def _print_component(component: dict[str, Any], indent: str) -> None:
    print(f"Component Name: {component['componentName']}")
    print(f"{indent}Version: {component['version']}")
    print(f"{indent}State: {component['state']}")
    print(f"{indent}Configuration: {json.dumps(component.get('configuration', {}), sort_keys=True)}")


def _print_deployment(dep: dict[str, Any]) -> None:
    print(f"{dep['deploymentId']}: {dep['status']}")
    details = dep.get("deploymentStatusDetails", {})
    if "detailedDeploymentStatus" in details:
        print(f"Detailed Status: {details['detailedDeploymentStatus']}")
    for line in details.get("deploymentErrorStack", []):
        print(f"Deployment Error Stack: {line}")


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    root = args.root
    if args.group == "component":
        if args.verb == "list":
            print("Components currently running in Greengrass:")
            for comp in local.call(root, "ListComponents", {})["components"]:
                _print_component(comp, "    ")
        elif args.verb == "details":
            _print_component(local.call(root, "GetComponentDetails", {"componentName": args.name})
                             ["componentDetails"], "")
        else:
            operation = "RestartComponent" if args.verb == "restart" else "StopComponent"
            for name in _names(args.names):
                local.call(root, operation, {"componentName": name}, timeout=300.0)
        return 0
    if args.verb == "create":
        remove = [n for item in args.remove for n in _names(item)]
        request = local_request(args.merge, remove, _update_config(args.update_config), args.runWith,
                                args.recipeDir, args.artifactDir)
        if args.groupId:
            request["groupName"] = args.groupId
        deployment_id = local.call(root, "CreateLocalDeployment", request)["deploymentId"]
        print(f"Local deployment submitted! Deployment Id: {deployment_id}")
        return 0
    if args.verb == "list":
        for dep in local.call(root, "ListLocalDeployments", {})["localDeployments"]:
            print(f"{dep['deploymentId']}: {dep['status']}")
        return 0
    deployment_id = local_deployment_id(root, args.deploymentId)
    if args.verb == "status":
        _print_deployment(local.call(root, "GetLocalDeploymentStatus", {"deploymentId": deployment_id})
                          ["deployment"])
    else:
        _print_deployment(local.call(root, "CancelLocalDeployment", {"deploymentId": deployment_id})["deployment"])
    return 0


def main() -> None:
    try:
        code = run(sys.argv[1:])
    except RoostError as err:
        print(f"error ({err.code}): {err.message}", file=sys.stderr)
        code = exit_code_for(err)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_INVALID if isinstance(err, ValueError) else EXIT_FAILED
    raise SystemExit(code)


if __name__ == "__main__":
    main()
