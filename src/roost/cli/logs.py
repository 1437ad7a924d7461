"""`roost logs NAME [--follow] [--lines N]`: a component's log (or `agent` for the agent's own)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from roost.agent.daemon import tail
from roost.agent.paths import AgentPaths
from roost.cli.agent import RootOpt
from roost.cli.output import handle_errors
from roost.errors import NotFoundError


@handle_errors
def logs(name: Annotated[str, typer.Argument(help="Component name, or 'agent'.")],
         root: RootOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end.")] = 50) -> None:
    """Print a component's log."""
    paths = AgentPaths.at(root)
    path = paths.agent_log if name == "agent" else paths.log_file(name)
    if not path.exists():
        raise NotFoundError(f"no log for {name} at {path}", code="LOG_NOT_FOUND")
    if lines:
        text = tail(path, lines)
        if text:
            sys.stdout.write(text + "\n")
    if not follow:
        return
    fh = path.open("rb")
    fh.seek(0, 2)
    inode = path.stat().st_ino
    try:
        while True:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                continue
            time.sleep(0.2)
            try:
                if path.stat().st_ino != inode:  # rotated: reopen the new file
                    fh.close()
                    fh = path.open("rb")
                    inode = path.stat().st_ino
            except FileNotFoundError:
                pass
    except KeyboardInterrupt:
        pass
    finally:
        fh.close()
