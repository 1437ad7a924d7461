"""`roost logs NAME [--follow] [--lines N] [--json]`: a component's log (or `agent` for the agent's own).

With ``--json`` each line is one JSON object on its own line (JSON lines, also with ``--follow``):
``{"time": ..., "stream": ..., "line": ...}``. A component's lines are ``TIME [stream] text``
(``stream`` is ``stdout`` or ``stderr``); the agent's are ``DATE TIME,ms LEVEL logger: text``
(``stream`` is ``agent``). A line of neither shape (a traceback's continuation) has ``time`` and
``stream`` null.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated, Any

import typer

from roost.agent.daemon import tail
from roost.agent.paths import AgentPaths
from roost.cli.agent import JsonOpt, RootOpt
from roost.cli.output import handle_errors
from roost.errors import NotFoundError

_COMPONENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?) \[(\w+)\] ?(.*)$", re.DOTALL)
_AGENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d),(\d+) (.*)$", re.DOTALL)


def parse_line(text: str) -> dict[str, Any]:
    """One log line as ``{"time", "stream", "line"}``."""
    if m := _COMPONENT_LINE.match(text):
        return {"time": m.group(1), "stream": m.group(2), "line": m.group(3)}
    if m := _AGENT_LINE.match(text):
        return {"time": f"{m.group(1)}T{m.group(2)}.{m.group(3)}", "stream": "agent", "line": m.group(4)}
    return {"time": None, "stream": None, "line": text}


class _Printer:
    """Writes text as it is, or, for --json, each complete line as a JSON object (partial lines wait)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._partial = ""

    def write(self, text: str, *, final: bool = False) -> None:
        if not self.as_json:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        lines = (self._partial + text).split("\n")
        self._partial = "" if final else lines.pop()
        for line in lines:
            if line or not final:
                sys.stdout.write(json.dumps(parse_line(line)) + "\n")
        sys.stdout.flush()


@handle_errors
def logs(name: Annotated[str, typer.Argument(help="Component name, or 'agent'.")],
         root: RootOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
         lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end.")] = 50,
         as_json: JsonOpt = False) -> None:
    """Print a component's log (--json: one {time, stream, line} object per line)."""
    paths = AgentPaths.at(root)
    path = paths.agent_log if name == "agent" else paths.log_file(name)
    if not path.exists():
        raise NotFoundError(f"no log for {name} at {path}", code="LOG_NOT_FOUND")
    out = _Printer(as_json)
    if lines:
        text = tail(path, lines)
        if text:
            out.write(text + "\n")
    if not follow:
        return
    fh = path.open("rb")
    fh.seek(0, 2)
    inode = path.stat().st_ino
    try:
        while True:
            chunk = fh.read()
            if chunk:
                out.write(chunk.decode(errors="replace"))
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
        out.write("", final=True)
