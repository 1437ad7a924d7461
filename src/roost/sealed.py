"""Values sealed at rest: AES-256-GCM under a key file only its owner can read.

The hub seals every secret value in its database with ``HUB_ROOT/secrets.key``; the agent seals its
copy of the secrets delivered to the device with ``AGENT_ROOT/secrets/key``. A key file is 32 random
bytes, created on first use with mode 0600 (atomically: two processes starting together agree on
one key), and never served or logged.

A sealed blob is ``b"\\x01" + nonce (12 bytes) + ciphertext-and-tag``. The associated data binds a
blob to where it belongs (a secret's name and version on the hub), so a blob copied to another row
does not open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from roost.errors import RoostError

logger = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT = b"\x01"


class SealError(RoostError):
    """A sealed value does not open: the key is not the one that sealed it, or the bytes were altered."""

    code = "SECRET_UNSEAL_FAILED"


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (0600, parent folder 0700) when the file does not exist."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key first: use theirs
            logger.info("created the secrets key %s", path)
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    with open(path, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        key = fh.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise SealError(f"the secrets key {path} is not {KEY_BYTES} bytes long; restore the right key file",
                        code="SECRET_KEY_INVALID")
    if stat.S_IMODE(mode) & 0o077:
        os.chmod(path, 0o600)
        logger.warning("the secrets key %s was readable by others; its mode is now 0600", path)
    return key


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: ~10 MB the agent needs only with secrets

    return FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def unseal(key: bytes, blob: bytes, associated: bytes, what: str) -> bytes:
    """The plaintext of ``blob``; :class:`SealError` naming ``what`` if it does not open."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT:
        raise SealError(f"{what} is not a sealed value this version of Roost reads")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:], associated)
    except InvalidTag as err:
        raise SealError(f"{what} does not open with this key: it was sealed with another key "
                        "(a hub replica or agent root with a different key file) or altered") from err
