"""Enrolment: how an agent root becomes a device of a hub, and where it keeps that.

``roost agent start --hub URL --enroll-token T`` redeems the one-time token (``POST /v1/enroll``)
for a device credential, kept in ``ROOT/hub.json`` (mode 0600: ``{hub, device, credential}``,
:class:`HubConfig`); later starts reuse it without a token. The device's name is ``--thing-name``,
else the one an earlier agent on this root used, else the host name; its labels are what
:func:`detect_labels` finds plus ``--label k=v``. The hub sync loop (:mod:`roost.agent.sync`) reads
the same file. The credential is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from roost.agent.paths import AgentPaths
from roost.errors import ConflictError, InvalidInputError

log = logging.getLogger(__name__)

HUB_FILE = "hub.json"


@dataclass(frozen=True)
class HubConfig:
    """``ROOT/hub.json``: where the hub is, who this device is there, and its credential."""

    hub: str
    device: str
    credential: str = field(repr=False)

    @staticmethod
    def path(paths: AgentPaths) -> Path:
        return paths.root / HUB_FILE

    @classmethod
    def load(cls, paths: AgentPaths) -> HubConfig | None:
        path = cls.path(paths)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"{path} is unreadable ({err}); remove it and enrol again",
                                    code="HUB_CONFIG_INVALID") from err
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data.get(k)
                                                 for k in ("hub", "device", "credential")):
            raise InvalidInputError(f"{path} lacks hub, device or credential; remove it and enrol again",
                                    code="HUB_CONFIG_INVALID")
        return cls(data["hub"], data["device"], data["credential"])

    def save(self, paths: AgentPaths) -> None:
        path = self.path(paths)
        tmp = path.with_name(HUB_FILE + ".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps({"hub": self.hub, "device": self.device, "credential": self.credential},
                                    indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


def detect_labels() -> dict[str, str]:
    """What the hub should know about this machine: arch, os, cpus, memory_mb, hostname."""
    import psutil

    return {"arch": platform.machine() or "unknown", "os": platform.system().lower() or "unknown",
            "cpus": str(os.cpu_count() or 1), "memory_mb": str(psutil.virtual_memory().total // (1024 * 1024)),
            "hostname": socket.gethostname()}


def stored_thing_name(paths: AgentPaths) -> str | None:
    """The thing name an earlier agent on this root used (``state.db`` meta), without opening a Store."""
    if not paths.state_db.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{paths.state_db}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'thing_name'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def ensure_enrolled(paths: AgentPaths, hub: str | None, token: str | None, thing_name: str | None,
                    labels: Mapping[str, str] | None = None) -> HubConfig | None:
    """The hub configuration this agent start uses: the stored one, or a fresh enrolment.

    * ``ROOT/hub.json`` exists and ``hub`` is absent or the same URL: reuse it (no token needed).
    * otherwise with ``hub`` and ``token``: redeem the token (``POST /v1/enroll``) and store the
      credential (mode 0600). Without ``hub``: no hub (``None``).
    """
    from roost.hub.client import enroll, normalize_url  # httpx only when a hub is named

    existing = HubConfig.load(paths)
    url = normalize_url(hub) if hub else None
    if existing is not None and (url is None or url == existing.hub):
        if thing_name and thing_name != existing.device:
            raise ConflictError(f"{paths.root} is enrolled at {existing.hub} as device {existing.device!r}, not "
                                f"{thing_name!r}; start without --thing-name, or remove {HubConfig.path(paths)} "
                                "and enrol again", code="HUB_ALREADY_ENROLLED")
        if token:
            log.info("%s is already enrolled as %s; the enrolment token was not used", paths.root, existing.device)
        return existing
    if url is None:
        if token:
            raise InvalidInputError("--enroll-token needs --hub URL", code="INVALID_ARGUMENT")
        return None
    if not token:
        what = (f"{paths.root} is enrolled at {existing.hub}; to move it to {url}" if existing
                else "the first start with --hub")
        raise InvalidInputError(f"{what} needs --enroll-token (create one with `roost device enroll-token "
                                f"--hub {url}`)", code="ENROLL_TOKEN_REQUIRED")
    name = thing_name or stored_thing_name(paths) or socket.gethostname()
    all_labels = {**detect_labels(), **dict(labels or {})}
    result = enroll(url, token, name, all_labels)
    config = HubConfig(url, result.device, result.credential)
    paths.ensure()
    config.save(paths)
    log.info("enrolled at %s as device %s", url, config.device)
    return config

__all__ = ["HUB_FILE", "HubConfig", "detect_labels", "ensure_enrolled", "stored_thing_name"]
