"""The hub's SSH identity: one Ed25519 key pair under the hub root.

``ROOT/ssh/id_ed25519`` (the private key, OpenSSH format, mode 0600, in a 0700 folder; never served,
never logged) and ``ROOT/ssh/id_ed25519.pub`` (the public key in ``authorized_keys`` form, served by
``GET /v1/ssh-key`` and printed by ``roost hub ssh-key``). ``roost hub init`` creates it; hub replicas
sharing one database need the same key files (copy them, as ``secrets.key``).

What the key grants is the privilege of the account whose ``authorized_keys`` holds it, nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.provision.errors import ProvisionError

logger = logging.getLogger(__name__)

KEY_DIR = "ssh"
KEY_FILE = "id_ed25519"


@dataclass(frozen=True)
class HubIdentity:
    private_key: Path
    public_key: str  # "ssh-ed25519 AAAA... roost-hub@host"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def key_path(root: Path) -> Path:
    return root / KEY_DIR / KEY_FILE


def fingerprint(key_line: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line, as ``ssh-keygen -l`` shows it."""
    parts = key_line.split()
    if len(parts) < 2:
        raise ProvisionError(f"not an OpenSSH public key: {key_line[:40]!r}", code="SSH_KEY_INVALID")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError as err:
        raise ProvisionError(f"not an OpenSSH public key: {key_line[:40]!r}", code="SSH_KEY_INVALID") from err
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ensure_identity(root: Path) -> HubIdentity:
    """The hub's key pair, created (0600) when missing."""
    path = key_path(root)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        line = f"{public.decode()} roost-hub@{socket.gethostname()}\n"
        fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        Path(f"{path}.pub").write_text(line)
        os.replace(f"{path}.tmp", path)  # the private key appears last: a half-made pair is never used
        logger.info("created the hub's SSH key %s", fingerprint(line))
    return load_identity(root)


def load_identity(root: Path) -> HubIdentity:
    path = key_path(root)
    pub = Path(f"{path}.pub")
    if not path.is_file() or not pub.is_file():
        raise ProvisionError(f"the hub has no SSH key at {path}: run `roost hub init --root {root}` (it creates "
                             "one on an initialised hub too)", code="SSH_IDENTITY_MISSING")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ProvisionError(f"{path} is readable by others (mode {mode:o}): chmod 600 it", code="SSH_KEY_INVALID")
    line = pub.read_text().strip()
    fingerprint(line)
    return HubIdentity(path, line)
