"""The fleet as an Ansible inventory, so operators can run their own playbooks on it.

:func:`inventory` builds Ansible's JSON inventory (the ``--list`` form of a dynamic inventory
script, which ``ansible-inventory`` and every Ansible tool read) from the hub's devices and
groups and the SSH endpoints of the devices registered over SSH:

* every device is a host, with ``roost_status``, ``roost_groups`` and ``roost_labels`` as host
  variables; a device registered over SSH also gets ``ansible_host``, ``ansible_port`` and
  ``ansible_user``, plus ``roost_host_key`` (the pinned key, OpenSSH ``known_hosts`` form);
* every Roost group is an Ansible group ``roost_<name>`` (characters Ansible does not allow in a
  group name become ``_``; the original name is the group variable ``roost_group``);
* ``roost_ssh`` holds the devices Roost can reach over SSH, ``roost_no_ssh`` the others (enrolled
  by hand: Ansible cannot reach them by name), so ``--limit roost_ssh`` keeps a play to those.

:func:`inventory` runs in the hub (``GET /v1/inventory``); :func:`with_known_hosts` runs where the
operator's Ansible does (``roost inventory --known-hosts FILE``): it writes the pinned keys as a
``known_hosts`` file and sets ``ansible_ssh_common_args`` to ``-o StrictHostKeyChecking=yes -o
UserKnownHostsFile=FILE``, so the operator's playbooks check the same host keys the hub pinned, not
whatever answers first.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from roost.hub.contract import Device, Group

_NOT_IN_GROUP_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class SshEndpoint:
    """Where a device registered over SSH is reached, and its pinned host key (``type base64``)."""

    user: str
    host: str
    port: int
    host_key: str | None = None


def group_name(name: str) -> str:
    return "roost_" + _NOT_IN_GROUP_NAME.sub("_", name)


def with_known_hosts(listing: Mapping[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The inventory with every SSH host checked against ``path``, and that file's text: the pinned keys
    (``[host]:port`` where the port is not 22) in OpenSSH's ``known_hosts`` form."""
    out = json.loads(json.dumps(listing))
    lines = set()
    for hv in out["_meta"]["hostvars"].values():
        if "ansible_host" not in hv:
            continue
        hv["ansible_ssh_common_args"] = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(path)}"
        if hv.get("roost_host_key"):
            where = hv["ansible_host"] if hv["ansible_port"] == 22 else f"[{hv['ansible_host']}]:{hv['ansible_port']}"
            lines.add(f"{where} {hv['roost_host_key']}")
    return out, "".join(line + "\n" for line in sorted(lines))


def inventory(devices: Sequence[Device], groups: Sequence[Group], endpoints: Mapping[str, SshEndpoint], *,
              include_revoked: bool = False) -> dict[str, Any]:
    """Ansible's JSON inventory of the fleet (see the module docstring)."""
    live = [d for d in devices if include_revoked or not d.revoked]
    names = {d.name for d in live}
    hostvars: dict[str, dict[str, Any]] = {}
    for d in live:
        hv: dict[str, Any] = {"roost_status": str(d.status), "roost_groups": sorted(d.groups),
                              "roost_labels": dict(d.labels)}
        ep = endpoints.get(d.name)
        if ep is not None:
            hv.update(ansible_host=ep.host, ansible_port=ep.port, ansible_user=ep.user)
            if ep.host_key:
                hv["roost_host_key"] = ep.host_key
        hostvars[d.name] = hv
    out: dict[str, Any] = {"_meta": {"hostvars": hostvars}}
    children: list[str] = []
    taken: dict[str, str] = {"roost_ssh": "", "roost_no_ssh": ""}  # the inventory's own groups
    for g in sorted(groups, key=lambda g: g.name):
        ansible = group_name(g.name)
        while ansible in taken:  # two Roost names sanitised alike, or one named like ours: keep them apart
            ansible = f"{ansible}_"
        taken[ansible] = g.name
        out[ansible] = {"hosts": sorted(n for n in g.devices if n in names), "vars": {"roost_group": g.name}}
        children.append(ansible)
    out["roost_ssh"] = {"hosts": sorted(n for n in names if n in endpoints)}
    out["roost_no_ssh"] = {"hosts": sorted(n for n in names if n not in endpoints)}
    out["all"] = {"children": [*children, "roost_ssh", "roost_no_ssh", "ungrouped"]}
    out["ungrouped"] = {"hosts": sorted(n for n in names if not any(n in out[c]["hosts"] for c in children))}
    return out


def as_yaml_inventory(listing: Mapping[str, Any]) -> dict[str, Any]:
    """The same inventory in Ansible's YAML inventory form (``all: children: ...``)."""
    hostvars: Mapping[str, Any] = listing["_meta"]["hostvars"]
    children: dict[str, Any] = {}
    for name in listing["all"]["children"]:
        group = listing.get(name, {})
        entry: dict[str, Any] = {"hosts": {h: hostvars.get(h, {}) if name in ("roost_ssh", "roost_no_ssh") else None
                                           for h in group.get("hosts", [])}}
        if group.get("vars"):
            entry["vars"] = group["vars"]
        children[name] = entry
    return {"all": {"children": children}}
