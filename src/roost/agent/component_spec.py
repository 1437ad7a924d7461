"""What the supervisor runs: one component version's lifecycle steps, after interpolation.

Built from a recipe by :mod:`roost.agent.specs`; run by :class:`roost.agent.supervisor.Supervisor`.
The deployer compares specs for equality (an unchanged spec is left running), so they hold values
only.

**Users.** A step runs as :attr:`ComponentSpec.run_as` (the component's user, see
:mod:`roost.agent.users`), or as the agent's user when that is None; ``RequiresPrivilege: true``
steps run as the agent's user (root when isolation is on).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from roost.agent.process import skip_step
from roost.agent.users import RunAs
from roost.recipe import DEFAULT_TIMEOUTS


@dataclass(frozen=True)
class StepSpec:
    """One lifecycle step of a recipe, after interpolation."""

    script: str
    timeout: float | None
    setenv: Mapping[str, str] = field(default_factory=dict)
    skipif: str | None = None
    requires_privilege: bool = False

    def effective_timeout(self, step_name: str) -> float:
        """The step's timeout, else the Greengrass default of a one-shot step (``install``, ...)."""
        if self.timeout is not None:
            return self.timeout
        default = DEFAULT_TIMEOUTS.get(step_name)  # type: ignore[call-overload]
        if not isinstance(default, float):
            raise ValueError(f"{step_name} has no default timeout")
        return default


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the supervisor needs to run one component version."""

    name: str
    version: str
    install: StepSpec | None
    startup: StepSpec | None
    run: StepSpec | None
    shutdown: StepSpec | None
    recover: StepSpec | None
    env: Mapping[str, str]
    work_dir: Path
    log_path: Path
    error_reset_time: float = 3600.0
    max_errors: int = 3
    restart_backoff: tuple[float, float] = (1.0, 60.0)
    #: The user its steps run as (None: the agent's own user).
    run_as: RunAs | None = None

    def restart_delay(self, errors: int) -> float:
        """Seconds before a restart after ``errors`` errors in the window: doubling from
        ``restart_backoff[0]`` up to ``[1]``, "equal jitter" (half of it random)."""
        initial, cap = self.restart_backoff
        delay = min(cap, initial * 2.0 ** max(0, errors - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    def step_env(self, step: StepSpec) -> dict[str, str]:
        """The component's environment overridden by the step's ``Setenv``."""
        env = dict(self.env)
        env.update(step.setenv)
        return env

    def step_user(self, step: StepSpec) -> RunAs | None:
        """Who runs ``step``: the agent's user for ``RequiresPrivilege`` steps, else :attr:`run_as`."""
        return None if step.requires_privilege else self.run_as

    def skips(self, step: StepSpec) -> bool:
        """Whether the step's ``Skipif`` says to skip it (in its environment and work folder)."""
        return skip_step(step.skipif, self.step_env(step), self.work_dir)


def make_work_dir(spec: ComponentSpec) -> None:
    """The supervisor's default preparation of a component: its work folder exists."""
    spec.work_dir.mkdir(parents=True, exist_ok=True)
