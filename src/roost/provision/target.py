"""An SSH target ``user@host[:port]``, parsed and checked (``[v6addr]:port`` for IPv6)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from roost.provision.errors import SshTargetError

#: POSIX portable user names (plus the usual lower-case-first convention of useradd).
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
#: A DNS name: labels of letters, digits and hyphens.
_HOST = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def known_hosts_name(self) -> str:
        """The host as OpenSSH's known_hosts names it (``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_target(text: str) -> SshTarget:
    """``user@host[:port]``; :class:`SshTargetError` naming what is wrong."""
    value = text.strip()
    user, at, rest = value.partition("@")
    if not at:
        raise SshTargetError(f"SSH target {text!r}: expected user@host[:port] (the account to register, "
                             "e.g. pi@192.168.1.20)")
    if not _USER.fullmatch(user):
        raise SshTargetError(f"SSH target {text!r}: {user!r} is not a valid user name")
    port = 22
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise SshTargetError(f"SSH target {text!r}: an IPv6 address needs its closing ']'")
        if tail:
            if not tail.startswith(":"):
                raise SshTargetError(f"SSH target {text!r}: expected :PORT after ']'")
            port = _port(text, tail[1:])
        try:
            ipaddress.IPv6Address(host)
        except ValueError as err:
            raise SshTargetError(f"SSH target {text!r}: {host!r} is not an IPv6 address") from err
        return SshTarget(user, host, port)
    if rest.count(":") > 1:
        raise SshTargetError(f"SSH target {text!r}: write an IPv6 address in brackets, e.g. user@[::1]:22")
    host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if colon:
        port = _port(text, port_text)
    if not host:
        raise SshTargetError(f"SSH target {text!r}: no host after '@'")
    if not _HOST.fullmatch(host):
        raise SshTargetError(f"SSH target {text!r}: {host!r} is not a valid host name or address")
    return SshTarget(user, host.rstrip(".").lower(), port)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SshTargetError(f"SSH target {text!r}: port {value!r} is not a number from 1 to 65535")
    return int(value)
