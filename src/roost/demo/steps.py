"""The demo's step runner: each step prints its name and a one-line explanation, then what it showed; a step
that fails ends the demo with DEMO_FAILED naming it; every step's outcome goes into the JSON summary."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from roost.errors import RoostError

log = logging.getLogger(__name__)


class DemoStepError(RoostError):
    """A step of the demo failed; the message names the step and says why."""

    code = "DEMO_FAILED"

    def __init__(self, step: str, why: str) -> None:
        super().__init__(f"demo step '{step}' failed: {why}", code="DEMO_FAILED")
        self.step = step
        #: The summary of the steps run so far (:meth:`Runner.summary`), set by the demo's driver.
        self.summary: dict[str, Any] = {}


class StepFailed(Exception):
    """Raised inside a step with a clear reason (turned into :class:`DemoStepError` naming the step)."""


@dataclass
class Runner:
    """Prints progress (unless ``quiet``) and collects the summary: ``steps[name] = {seconds, ...outcome}``."""

    console: Console
    quiet: bool = False
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def say(self, *args: Any, **kwargs: Any) -> None:
        if not self.quiet:
            self.console.print(*args, **kwargs)

    def line(self, text: str) -> None:
        """A log line printed as it is (no markup)."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def ok(self, text: str) -> None:
        self.say(f"  [green]✓[/] {text}")

    def note(self, text: str) -> None:
        self.say(f"  [yellow]note[/]: {text}")

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why
        self.note(f"{what} skipped: {why}")

    @contextlib.contextmanager
    def step(self, name: str, explanation: str) -> Iterator[dict[str, Any]]:
        """Run one step; yields the dict its outcome goes into."""
        number = len(self.steps) + 1
        self.say(f"\n[bold cyan]{number}. {name}[/] — {explanation}")
        outcome: dict[str, Any] = {}
        self.steps[name] = outcome
        t0 = time.monotonic()
        try:
            yield outcome
        except DemoStepError:
            raise
        except (StepFailed, RoostError, OSError, TimeoutError, ValueError, KeyError) as err:
            outcome["error"] = str(err)
            log.debug("demo step %s failed", name, exc_info=True)
            raise DemoStepError(name, f"{type(err).__name__}: {err}" if not isinstance(err, StepFailed)
                                else str(err)) from err
        finally:
            outcome["seconds"] = round(time.monotonic() - t0, 2)
        self.say(f"  [dim]({outcome['seconds']:.1f} s)[/]")

    def on_stop(self, what: str, fn: Callable[[], None]) -> None:
        """Register a clean-up; they run newest first in :meth:`stop_all`."""
        self.cleanups.append((what, fn))

    def stop_all(self) -> list[str]:
        """Run every clean-up (newest first); returns the ones that failed, each with its error."""
        failed = []
        while self.cleanups:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as err:  # every clean-up runs, whatever one of them raised
                log.warning("demo clean-up %s failed: %s", what, err)
                failed.append(f"{what}: {err}")
        return failed

    def summary(self) -> dict[str, Any]:
        return {"seconds": round(time.monotonic() - self.started, 1), "steps": self.steps, "skipped": self.skipped}
