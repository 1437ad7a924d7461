"""The layout of an agent's root folder (``--root``, default ``~/.roost``).

Everything an agent owns lives below this one folder, so a device can be wiped or backed up by
copying it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from roost.paths import safe_join as safe_join

#: ``$ROOST_ROOT``, else ``/var/lib/roost`` for root (components, running as other users, must be
#: able to reach it: root's home is private), else ``~/.roost``.
DEFAULT_ROOT = Path(os.environ.get("ROOST_ROOT")
                    or ("/var/lib/roost" if os.geteuid() == 0 else "~/.roost")).expanduser()


@dataclass(frozen=True)
class AgentPaths:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None) -> AgentPaths:
        return cls(Path(root).expanduser().resolve() if root is not None else DEFAULT_ROOT.resolve())

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def shadows_db(self) -> Path:
        """Local shadow documents (:mod:`roost.agent.shadow_store`)."""
        return self.root / "shadows.db"

    @property
    def ipc_socket(self) -> Path:
        return self.root / "ipc.socket"

    @property
    def pid_file(self) -> Path:
        return self.root / "agent.pid"

    @property
    def cli_token(self) -> Path:
        """Secret of the privileged local CLI principal; readable by the agent's user only."""
        return self.root / "cli.token"

    @property
    def recipes(self) -> Path:
        return self.root / "packages" / "recipes"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def agent_log(self) -> Path:
        return self.logs / "agent.log"

    def artifacts(self, name: str, version: str) -> Path:
        return safe_join(self.root / "packages" / "artifacts", name, version)

    def artifacts_unarchived(self, name: str, version: str) -> Path:
        return safe_join(self.root / "packages" / "artifacts-unarchived", name, version)

    def work(self, name: str) -> Path:
        return safe_join(self.root / "work", name)

    @property
    def envs_root(self) -> Path:
        return self.root / "envs"

    def env_dir(self, name: str) -> Path:
        """The component's own Python environment (see :mod:`roost.agent.workspace`)."""
        return safe_join(self.envs_root, name)

    @property
    def bin(self) -> Path:
        """Commands components find on their PATH (``roost``)."""
        return self.root / "bin"

    @property
    def sdk(self) -> Path:
        """Only the ``roost.ipc`` client package, importable by components."""
        return self.root / "sdk"

    def log_file(self, name: str) -> Path:
        return safe_join(self.logs, f"{name}.log")

    def ensure(self) -> None:
        for d in (self.root, self.recipes, self.logs, self.root / "work",
                  self.root / "packages" / "artifacts", self.root / "packages" / "artifacts-unarchived"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
