"""Host-key pinning: trust on first use, refuse a changed key until it is re-pinned explicitly.

The hub keeps one pinned key per ``host:port`` (in its database, :mod:`roost.hub.store.provision`).
At a registration the device's key is compared with, in this order, the key given up front
(``--host-key``), the pinned key; with neither, the key is pinned as first seen and its fingerprint
is shown and stored. Ansible then connects with exactly that key as its ``known_hosts`` and
``StrictHostKeyChecking=yes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.provision.errors import HostKeyError, SshTargetError
from roost.provision.identity import fingerprint
from roost.provision.target import SshTarget

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
             "rsa-sha2-256", "ssh-rsa")


@dataclass(frozen=True)
class HostKey:
    key_type: str
    data: str  # base64 blob

    @property
    def line(self) -> str:
        return f"{self.key_type} {self.data}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.line)

    def known_hosts(self, target: SshTarget) -> str:
        return f"{target.known_hosts_name} {self.line}\n"


def parse_host_key(text: str) -> HostKey:
    """``TYPE BASE64 [comment]`` or a known_hosts line ``HOST TYPE BASE64``; :class:`SshTargetError`."""
    parts = text.strip().split()
    if len(parts) >= 3 and parts[0] not in KEY_TYPES and parts[1] in KEY_TYPES:
        parts = parts[1:]  # a known_hosts line (ssh-keyscan's output)
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise SshTargetError(f"host key {text[:60]!r}: expected 'TYPE BASE64' (e.g. the line of "
                             "/etc/ssh/ssh_host_ed25519_key.pub), TYPE one of " + ", ".join(KEY_TYPES),
                             code="HOST_KEY_INVALID")
    key = HostKey(parts[0], parts[1])
    try:
        key.fingerprint  # noqa: B018 (validates the base64)
    except Exception as err:
        raise SshTargetError(f"host key {text[:60]!r}: the key data is not base64", code="HOST_KEY_INVALID") from err
    return key


def check_host_key(target: SshTarget, seen: HostKey, pinned: HostKey | None, expected: HostKey | None) -> None:
    """Refuse ``seen`` unless it is the key given up front, or (none given) the pinned one."""
    if expected is not None and seen.line != expected.line:
        raise HostKeyError(f"{target.known_hosts_name} presents host key {seen.fingerprint}, not the key given "
                           f"with --host-key ({expected.fingerprint}); check the device's key "
                           "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it)")
    if expected is None and pinned is not None and seen.line != pinned.line:
        raise HostKeyError(f"the host key of {target.known_hosts_name} changed: pinned {pinned.fingerprint}, now "
                           f"{seen.fingerprint}. If the device was reinstalled, check the new key on it and re-pin "
                           f"it (`roost device host-key pin {target.known_hosts_name} --host-key KEY`, or "
                           "`roost device add ... --host-key KEY`)", code="HOST_KEY_CHANGED")
