"""A local OpenSSH server and a fresh account, for registering one demo device over SSH the way a real device
is registered (`roost device add --ssh`, docs/provisioning.md): Debian's ``/usr/sbin/sshd`` as a child process
on 127.0.0.1 (a free port, its own config and host key in a temp folder, keys only), and an account made with
``useradd`` whose ``authorized_keys`` holds the hub's key. Both need root; :func:`unavailable` says why not."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from roost.demo.procs import free_port
from roost.demo.steps import StepFailed

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
TOOLS = ("useradd", "userdel", "usermod", "runuser", "ssh-keygen")


def unavailable() -> str | None:
    """Why an sshd and an account cannot be made here (None: they can)."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (`make sshd` installs Debian's openssh-server)"
    if os.geteuid() != 0:
        return "making a local account for sshd needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    if not os.path.isdir("/home"):
        return "/home does not exist"
    return None


@dataclass
class Sshd:
    port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    @property
    def host_key(self) -> str:
        """Its public host key line, ``ssh-ed25519 AAAA...`` (no comment)."""
        return " ".join((self.folder / "host_ed25519.pub").read_text().split()[:2])

    @property
    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_sshd(folder: Path, timeout: float = 15.0, log_level: str = "INFO") -> Sshd:
    """sshd on 127.0.0.1 and a free port, keys only, its config, host key, PID file and log in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_ed25519")], check=True,
                   capture_output=True, timeout=30)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_ed25519'}\nPidFile {folder / 'sshd.pid'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nPermitRootLogin no\nStrictModes yes\nLogLevel {log_level}\n")
    with open(folder / "sshd.log", "wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    server = Sshd(port, folder, proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise StepFailed(f"sshd did not start: {(folder / 'sshd.log').read_text(errors='replace')[-500:]}"
                                 ) from None
            time.sleep(0.05)


@dataclass
class Account:
    name: str
    home: Path

    def target(self, sshd: Sshd) -> str:
        return f"{self.name}@127.0.0.1:{sshd.port}"

    def remove(self) -> None:
        """Stop the agent the registration installed for this account, then delete the account and its home."""
        roost_bin = self.home / ".local/share/roost/venv/bin/roost"
        if roost_bin.exists() and (self.home / ".roost").exists():
            subprocess.run(["runuser", "-u", self.name, "--", str(roost_bin), "agent", "stop", "--root",
                            str(self.home / ".roost")], capture_output=True, timeout=150, check=False)
        for _ in range(20):  # the agent's last processes may take a moment to exit after `agent stop`
            try:  # userdel can take tens of seconds on a busy machine (it locks and rewrites /etc/passwd, shadow)
                done = subprocess.run(["userdel", "-r", self.name], capture_output=True, check=False, timeout=180)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode in (0, 6):
                return
            time.sleep(0.5)
        raise StepFailed(f"userdel {self.name} kept failing (processes of the account still running?)")


def make_account(authorized_key: str) -> Account:
    """A fresh account (``rdemo<hex>``) whose ``~/.ssh/authorized_keys`` holds ``authorized_key``."""
    name = f"rdemo{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True, timeout=30)
    account = Account(name, Path(f"/home/{name}"))
    # '*' (no password, not locked): sshd refuses a locked account ('!') even for key logins
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True, timeout=30)
    authorize(name, account.home, authorized_key)
    return account


def authorize(user: str, home: Path, key: str) -> None:
    """Make ``key`` the one line of ``user``'s ``~/.ssh/authorized_keys`` (modes and owner as sshd's
    StrictModes wants them)."""
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(key.strip() + "\n")
    os.chmod(ssh / "authorized_keys", 0o600)
    shutil.chown(ssh, user, user)
    shutil.chown(ssh / "authorized_keys", user, user)
