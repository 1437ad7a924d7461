"""Fixtures for provisioning over SSH: a real OpenSSH server and real accounts on this machine.

* ``sshd`` — Debian's ``/usr/sbin/sshd`` as a child process on 127.0.0.1 (a free port; its own
  sshd_config, host key and PID file in a temp dir; ``-D`` so the fixture kills it), module-scoped:
  :func:`roost.demo.sshd.start_sshd`, the one the demo uses.
* ``accounts`` — ``make(authorized_key=None, sudo_password=None) -> Account``: a fresh local account
  (``useradd -m``, unique name) whose ``~/.ssh/authorized_keys`` holds the given key; with a sudo
  password, a sudoers entry that asks for it. Agents started in it are stopped, and the account,
  its home and its sudoers entry removed at the end.

Both need root (tests run as root here) and openssh-server (`make sshd` installs it); they skip only
through ``require_service``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.demo.sshd import SSHD, Sshd, authorize, start_sshd
from tests.conftest import require_service


@dataclass
class Account:
    name: str
    home: Path
    sudo_password: str | None = None
    roots: list[Path] = field(default_factory=list)

    def target(self, sshd: Sshd) -> str:
        return f"{self.name}@127.0.0.1:{sshd.port}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    require_service("OpenSSH server", os.path.exists(SSHD), f"{SSHD} is missing (make sshd installs openssh-server)")
    require_service("root", os.geteuid() == 0, "creating accounts for sshd needs root")
    server = start_sshd(tmp_path_factory.mktemp("sshd"), log_level="VERBOSE")
    try:
        yield server
    finally:
        server.stop()


def _as_user(user: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def accounts() -> Iterator[Callable[..., Account]]:
    made: list[Account] = []

    def make(authorized_key: str | None = None, sudo_password: str | None = None) -> Account:
        name = f"rdev{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
        account = Account(name, Path(f"/home/{name}"), sudo_password)
        made.append(account)
        # '*' (no password, not locked): sshd refuses a locked account ('!') even for key logins
        password = sudo_password if sudo_password is not None else None
        if password is None:
            subprocess.run(["usermod", "-p", "*", name], check=True)
        else:
            subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True)
            sudoers = Path(f"/etc/sudoers.d/{name}")
            sudoers.write_text(f"{name} ALL=(ALL) ALL\n")
            os.chmod(sudoers, 0o440)
        if authorized_key is not None:
            authorize(name, account.home, authorized_key)
        return account

    try:
        yield make
    finally:
        for account in made:
            venv_roost = account.home / ".local/share/roost/venv/bin/roost"
            for root in [account.home / ".roost", *account.roots]:
                if venv_roost.exists() and root.exists():
                    _as_user(account.name, str(venv_roost), "agent", "stop", "--root", str(root))
            Path(f"/etc/sudoers.d/{account.name}").unlink(missing_ok=True)
            for _ in range(40):  # the agent's last processes may take a moment to exit after `agent stop`
                if subprocess.run(["userdel", "-r", account.name], capture_output=True,
                                  check=False).returncode in (0, 6):
                    break
                time.sleep(0.5)
