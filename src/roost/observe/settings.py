"""The agent's metrics settings, kept in ``ROOT/metrics.json`` (mode 0600).

``roost agent start --metrics-address HOST:PORT|off [--metrics-token-file PATH | --no-metrics-token]``
writes them; every later start (a plain ``roost agent start --root R`` under systemd too) uses them.
Without the file the endpoint listens on :data:`DEFAULT_ADDRESS` (localhost only) with no token.

The token itself is never stored nor logged: the file keeps its SHA-256, and the endpoint compares
the SHA-256 of what a scraper sends with it in constant time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from roost.errors import InvalidInputError

SETTINGS_FILE: Final = "metrics.json"
DEFAULT_ADDRESS: Final = "127.0.0.1:9464"
OFF: Final = "off"
MAX_TOKEN_BYTES: Final = 4096


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="METRICS_SETTINGS_INVALID")


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port); METRICS_SETTINGS_INVALID otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or any(c.isspace() for c in host):
        raise _invalid(f"--metrics-address {text!r} is not HOST:PORT (like 127.0.0.1:9464) or 'off'")
    return host, int(port)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first line, stripped); METRICS_SETTINGS_INVALID when unreadable or empty."""
    try:
        with path.expanduser().open("rb") as fh:
            raw = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError as err:
        raise _invalid(f"--metrics-token-file {path}: {err.strerror or err}") from err
    if len(raw) > MAX_TOKEN_BYTES:
        raise _invalid(f"--metrics-token-file {path} is longer than {MAX_TOKEN_BYTES} bytes")
    lines = raw.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise _invalid(f"--metrics-token-file {path}: the token (its first line) must have at least 16 characters")
    return token


@dataclass(frozen=True)
class MetricsSettings:
    #: ``HOST:PORT`` to listen on, or None: no endpoint.
    address: str | None = DEFAULT_ADDRESS
    #: SHA-256 (hex) of the bearer token scrapers must send, or None: no token.
    token_sha256: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @classmethod
    def load(cls, root: Path) -> MetricsSettings:
        path = root / SETTINGS_FILE
        try:
            data: Any = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as err:
            raise _invalid(f"{path} is unreadable or not JSON ({err}); remove it or run `roost agent start "
                           "--metrics-address ...` again") from err
        if not isinstance(data, dict):
            raise _invalid(f"{path} is not a JSON object")
        address = data.get("address", DEFAULT_ADDRESS)
        digest = data.get("token_sha256")
        if address is not None:
            parse_address(str(address))
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
            raise _invalid(f"{path}: token_sha256 is not a SHA-256 hex digest")
        return cls(address=None if address is None else str(address), token_sha256=digest)

    def save(self, root: Path) -> None:
        path = root / SETTINGS_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"address": self.address, "token_sha256": self.token_sha256}, fh, indent=1)
        os.replace(tmp, path)


def settings_from_options(root: Path, address: str | None, token_file: Path | None,
                          no_token: bool = False) -> MetricsSettings:
    """``ROOT/metrics.json`` updated with the options given (the others keep their saved value)."""
    current = MetricsSettings.load(root)
    new_address = current.address
    if address is not None:
        if address.strip().lower() == OFF:
            new_address = None
        else:
            parse_address(address)
            new_address = address.strip()
    digest = current.token_sha256
    if token_file is not None and no_token:
        raise _invalid("give --metrics-token-file or --no-metrics-token, not both")
    if token_file is not None:
        digest = token_digest(read_token_file(token_file))
    elif no_token:
        digest = None
    return MetricsSettings(address=new_address, token_sha256=digest)


__all__ = ["DEFAULT_ADDRESS", "OFF", "SETTINGS_FILE", "MetricsSettings", "parse_address", "read_token_file",
           "settings_from_options", "token_digest"]
