"""Step 1: the fleet. A hub (embedded defaults: SQLite in its root, a local process on a free port) and three
agents enrolled with one-time tokens: an edge node labelled as a Jetson Xavier, one as a TX2 and the centre.
When an sshd can be started here (:mod:`roost.demo.sshd`), the TX2 is registered over SSH instead, as a real
device is: `roost device add --ssh` installs Roost into a fresh account from the hub's wheelhouse and enrols it."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.demo import sshd as sshd_mod
from roost.demo.procs import HubProcess, free_port, free_port_range, roost, roost_json, start_hub, wait_until
from roost.demo.steps import Runner, StepFailed
from roost.hub.client import HubClient

log = logging.getLogger(__name__)

GROUP = "fleet"
#: The devices that train in the federated job (the ones whose Roost can start the Flower venv).
LEARNERS = "learners"


@dataclass
class Node:
    """One agent of the demo. ``root`` is its agent root; ``run_as`` the account it runs as (SSH-registered)."""

    name: str
    machine: str
    capacity: str
    centre: bool = False
    root: Path | None = None
    metrics_url: str = ""
    via_ssh: bool = False
    run_as: str | None = None
    roost_bin: str | None = None

    @property
    def logs(self) -> Path:
        assert self.root is not None
        return self.root / "logs"

    def agent(self, *args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
        """``roost agent ARGS --root ROOT`` as this node's account."""
        assert self.root is not None
        if self.run_as is None:
            return roost("agent", *args, "--root", str(self.root), timeout=timeout)
        assert self.roost_bin is not None
        return subprocess.run(["runuser", "-u", self.run_as, "--", self.roost_bin, "agent", *args, "--root",
                               str(self.root)], capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        proc = self.agent("stop", "--timeout", "120")
        if proc.returncode != 0:
            raise StepFailed(f"agent stop on {self.name} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")


#: The original's cluster: Xavier boards with 8 GiB (two scalar replicas), a TX2 with 4 GiB (one), the centre.
NODES = (Node("edge-xavier", "xavier", "memory=8Gi,cpu=2"), Node("edge-tx2", "tx2", "memory=4Gi,cpu=2"),
         Node("centre", "server", "memory=16Gi,cpu=2", centre=True))


@dataclass
class Fleet:
    hub: HubProcess
    base: Path
    nodes: list[Node] = field(default_factory=list)

    def api(self) -> HubClient:
        return HubClient(self.hub.url, self.hub.token, timeout=60)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def learners(self) -> list[Node]:
        return [n for n in self.nodes if not n.via_ssh]


def _node_options(node: Node) -> list[str]:
    low, high = free_port_range(20)
    node.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    return ["--label", f"machine={node.machine}", "--capacity", node.capacity, "--advertise-address", "127.0.0.1",
            "--port-range", f"{low}-{high}", "--metrics-address", node.metrics_url.split("//")[1].split("/")[0],
            *(["--centre"] if node.centre else [])]


def _start_local(run: Runner, fleet: Fleet, node: Node) -> None:
    with fleet.api() as api:
        token = api.create_enroll_token(GROUP).token
    node.root = fleet.base / node.name
    out = roost_json("agent", "start", "--root", str(node.root), "--detach", "--hub", fleet.hub.url,
                     "--enroll-token", token, "--thing-name", node.name, *_node_options(node),
                     what=f"agent start {node.name}", timeout=90)
    fleet.nodes.append(node)
    run.on_stop(f"agent {node.name}", node.stop)
    run.ok(f"{node.name} (machine={node.machine}, {node.capacity}{', centre tier' if node.centre else ''}) "
           f"enrolled with a one-time token, pid {out.get('pid')}, root {node.root}")


def _start_over_ssh(run: Runner, fleet: Fleet, node: Node) -> None:
    """Register ``node`` over SSH: sshd + account here, the hub's wheelhouse, `roost device add --ssh`."""
    server = sshd_mod.start_sshd(fleet.base / "sshd")
    run.on_stop("sshd", server.stop)
    key = roost("hub", "ssh-key", "--root", str(fleet.hub.root))
    if key.returncode != 0:
        raise StepFailed(f"roost hub ssh-key exited {key.returncode}: {key.stderr.strip()}")
    account = sshd_mod.make_account(key.stdout.strip())
    run.on_stop(f"account {account.name}", account.remove)
    run.ok(f"sshd on 127.0.0.1:{server.port}; account {account.name} holds the hub's public key")
    built = roost_json("hub", "wheelhouse", "build", "--root", str(fleet.hub.root), what="hub wheelhouse build",
                       timeout=900)
    wheels = built.get("wheels") if isinstance(built, dict) else None
    count = len(wheels) if isinstance(wheels, list) else wheels
    run.ok(f"the hub's wheelhouse: {count} wheels (the device installs from the hub alone)")
    doc = roost_json(*fleet.hub.cli("device", "add", node.name, "--ssh", account.target(server), "--group", GROUP,
                                    "--label", f"machine={node.machine}", "--wheelhouse", "--timeout", "600"),
                     what=f"device add {node.name} --ssh", timeout=660)
    if doc.get("status") != "SUCCEEDED":
        raise StepFailed(f"device add --ssh ended {doc.get('status')}: {doc}")
    steps = ", ".join(f"{s['name']} {s['status']}" for s in doc.get("steps", []))
    run.ok(f"{node.name} registered over SSH ({account.target(server)}): {steps}")
    node.via_ssh, node.run_as, node.root = True, account.name, account.home / ".roost"
    node.roost_bin = str(account.home / ".local/share/roost/venv/bin/roost")
    fleet.nodes.append(node)
    # The agent the playbook started has the defaults (this machine's memory, ports 31000-31999, metrics on
    # 9464): an operator gives a node its cluster options with `roost agent start` on the device; they are kept.
    stop = node.agent("stop", "--timeout", "120")
    if stop.returncode != 0:
        raise StepFailed(f"stopping {node.name}'s agent to set its node options: {stop.stderr.strip()[-300:]}")
    start = node.agent("start", "--detach", *_node_options(node), timeout=90)
    if start.returncode != 0:
        raise StepFailed(f"restarting {node.name}'s agent with its node options: {start.stderr.strip()[-300:]}")
    run.on_stop(f"agent {node.name}", node.stop)
    run.ok(f"{node.name} restarted as {account.name} with its node options (machine={node.machine}, "
           f"{node.capacity}, free ports)")


def start_fleet(run: Runner, base: Path, outcome: dict[str, Any], ssh: bool = True) -> Fleet:
    hub = start_hub(base / "hub", base / "hub.log")
    run.on_stop("hub", hub.stop)
    run.ok(f"hub at {hub.url} (SQLite in {hub.root}, log {base / 'hub.log'})")
    fleet = Fleet(hub, base)
    why = sshd_mod.unavailable() if ssh else "--no-ssh"
    for node in NODES:
        node = Node(node.name, node.machine, node.capacity, node.centre)
        if node.name == "edge-tx2" and why is None:
            _start_over_ssh(run, fleet, node)
        else:
            _start_local(run, fleet, node)
    if why is not None:
        run.skip("registering edge-tx2 over SSH", f"{why}; it was enrolled with a one-time token instead")
    with fleet.api() as api:
        api.add_members(LEARNERS, [n.name for n in fleet.learners])
        names = {n.name for n in fleet.nodes}
        online = wait_until(lambda: (nodes := [c for c in api.cluster_nodes() if c.name in names and c.online])
                            and len(nodes) == len(names) and nodes, 90, "the three nodes online at the hub")
        devices = {d.name: d for d in api.devices()}
    for c in sorted(online, key=lambda c: c.name):
        dev = devices[c.name]
        run.line(f"    {c.name:12} {dev.status:7} tier={c.tier} machine={c.labels.get('machine')} "
                 f"memory={c.allocatable.memory_bytes // 2**20} MiB groups={','.join(dev.groups)}")
    outcome.update({"hub": hub.url, "devices": {n.name: {"machine": n.machine, "ssh": n.via_ssh,
                                                         "tier": "centre" if n.centre else "edge",
                                                         "status": devices[n.name].status,
                                                         "metrics": n.metrics_url} for n in fleet.nodes},
                    "ssh": why is None})
    return fleet


def chmod_searchable(path: Path) -> None:
    """Let the components' users pass through ``path`` (agents run as root here run them as other users)."""
    os.chmod(path, 0o711)
