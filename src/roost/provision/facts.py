"""The hub's first look at a device over SSH: its host key (pinned on first use) and its facts.

asyncssh, with the hub's key only (no agent, no password, no ~/.ssh of the hub's user). The host
key is fetched before authenticating and checked (:mod:`roost.provision.host_keys`); the session
then trusts exactly that key. Facts: architecture, OS, CPU count, memory, accelerators (NVIDIA
devices, a Jetson's tegra release, Coral PCIe/USB), the Python that will run the agent, systemd.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

import asyncssh

from roost.provision.errors import HostKeyError, ProvisionError, SshAuthError, SshUnreachableError
from roost.provision.host_keys import HostKey, check_host_key
from roost.provision.identity import HubIdentity
from roost.provision.target import SshTarget

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
FACTS_TIMEOUT = 30.0

#: POSIX sh; prints key=value lines. Nothing here needs privileges.
FACTS_SCRIPT = r"""
echo "arch=$(uname -m)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "distro=${ID:-unknown}-${VERSION_ID:-}"; fi
echo "kernel=$(uname -s | tr 'A-Z' 'a-z')"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
awk '/^MemTotal:/ {print "memory_kb=" $2}' /proc/meminfo 2>/dev/null
echo "uid=$(id -u)"
echo "home=$HOME"
ls /dev/nvidia0 >/dev/null 2>&1 && echo "accel_nvidia=1"
[ -f /etc/nv_tegra_release ] && echo "accel_jetson=1"
ls /dev/apex_0 >/dev/null 2>&1 && echo "accel_coral_pcie=1"
for d in /sys/bus/usb/devices/*; do
  case "$(cat "$d/idVendor" 2>/dev/null):$(cat "$d/idProduct" 2>/dev/null)" in
    1a6e:089a|18d1:9302) echo "accel_coral_usb=1";;
  esac
done
[ -d /run/systemd/system ] && echo "systemd=1"
if command -v python3 >/dev/null 2>&1; then
  echo "python=$(command -v python3)"
  python3 -c 'import sys; print("python_version=%d.%d" % sys.version_info[:2])' 2>/dev/null
  python3 -c 'import ensurepip, venv' 2>/dev/null && echo "python_venv=1"
fi
command -v sudo >/dev/null 2>&1 && echo "sudo=1"
true
"""


@dataclass
class Facts:
    values: dict[str, str] = field(default_factory=dict)

    @property
    def accelerators(self) -> list[str]:
        names = {"accel_nvidia": "nvidia", "accel_jetson": "jetson", "accel_coral_pcie": "coral-pcie",
                 "accel_coral_usb": "coral-usb"}
        return [name for key, name in names.items() if key in self.values]

    @property
    def python_version(self) -> tuple[int, int] | None:
        text = self.values.get("python_version", "")
        major, _, minor = text.partition(".")
        return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None

    def labels(self) -> dict[str, str]:
        """The facts a deployment targets, as device labels."""
        out = {"arch": self.values.get("arch", "unknown"), "os": self.values.get("kernel", "linux"),
               "cpus": self.values.get("cpus", "1")}
        if "distro" in self.values:
            out["distro"] = self.values["distro"].rstrip("-")
        kb = self.values.get("memory_kb", "")
        if kb.isdigit():
            out["memory_mb"] = str(int(kb) // 1024)
        out["accelerator"] = ",".join(self.accelerators) or "none"
        return out


def parse_facts(text: str) -> Facts:
    values: dict[str, str] = {}
    for line in text.splitlines()[:200]:
        key, sep, value = line.partition("=")
        if sep and key.strip().replace("_", "").isalnum():
            values[key.strip()] = value.strip()[:200]
    return Facts(values)


async def fetch_host_key(target: SshTarget, timeout: float = CONNECT_TIMEOUT) -> HostKey:
    """The key the device presents (no authentication yet)."""
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(
                target.host, target.port, server_host_key_algs=["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512",
                                                                "rsa-sha2-256"])
    except (OSError, TimeoutError, asyncssh.ConnectionLost) as err:
        raise _unreachable(target, err) from err
    except asyncssh.Error as err:
        raise ProvisionError(f"SSH to {target.known_hosts_name} failed: {err.reason}", code="SSH_FAILED") from err
    if key is None:
        raise ProvisionError(f"{target.known_hosts_name} presented no host key", code="SSH_FAILED")
    parts = key.export_public_key("openssh").decode().split()
    return HostKey(parts[0], parts[1])


def _unreachable(target: SshTarget, err: BaseException) -> SshUnreachableError:
    if isinstance(err, TimeoutError):
        why = "timed out"
    elif isinstance(err, socket.gaierror):
        why = f"unknown host ({err.strerror})"
    elif isinstance(err, OSError):
        why = err.strerror or str(err)
    else:
        why = str(err) or type(err).__name__
    return SshUnreachableError(f"cannot reach {target.known_hosts_name} over SSH: {why}")


async def gather(target: SshTarget, identity: HubIdentity, key: HostKey,
                 timeout: float = FACTS_TIMEOUT) -> Facts:
    """Connect with the hub's key, trusting ``key`` only, and read the device's facts."""
    known = asyncssh.import_known_hosts(key.known_hosts(target))
    try:
        async with asyncio.timeout(timeout):
            async with asyncssh.connect(target.host, target.port, username=target.user, known_hosts=known,
                                        client_keys=[str(identity.private_key)], agent_path=None,
                                        config=[], password=None, kbdint_auth=False,
                                        connect_timeout=CONNECT_TIMEOUT) as conn:
                result = await conn.run(FACTS_SCRIPT, check=False)
    except asyncssh.PermissionDenied as err:
        raise SshAuthError(f"{target} refused the hub's SSH key: add the line of `roost hub ssh-key` to "
                           f"~{target.user}/.ssh/authorized_keys on the device") from err
    except asyncssh.HostKeyNotVerifiable as err:
        raise HostKeyError(f"{target.known_hosts_name} changed its host key during registration: {err.reason}",
                           code="HOST_KEY_CHANGED") from err
    except (OSError, TimeoutError, asyncssh.ConnectionLost) as err:
        raise _unreachable(target, err) from err
    except asyncssh.Error as err:
        raise ProvisionError(f"SSH to {target} failed: {err.reason}", code="SSH_FAILED") from err
    out = result.stdout if isinstance(result.stdout, str) else ""
    return parse_facts(out)


__all__ = ["FACTS_SCRIPT", "Facts", "check_host_key", "fetch_host_key", "gather", "parse_facts"]
