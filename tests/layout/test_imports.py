"""The package layout holds: no import cycles, the hub does not reach into the agent, the hub's
client needs no web framework, and local CLI commands do not load the hub client."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "roost"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(name: str, path: Path) -> set[str]:
    """Modules of roost that ``name`` imports at module level (``if TYPE_CHECKING:`` included, function
    bodies not: an import inside a function is lazy and cannot take part in an import-time cycle)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in MODULES else target)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(tree.body)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package and its own submodules (``__init__`` re-exporting them) are not a cycle
            if len(component) > 1 and not _package_and_children(component):
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            strongconnect(v)
    return found


def _package_and_children(component: list[str]) -> bool:
    shortest = min(component, key=len)
    return all(m == shortest or m.startswith(shortest + ".") for m in component)


@pytest.mark.parametrize("pair", [("roost.agent.agent", "roost.agent.sync")])
def test_named_cycles_are_gone(pair: tuple[str, str]) -> None:
    a, b = pair
    assert not (b in GRAPH[a] and a in GRAPH[b]), f"{a} and {b} import each other"


#: Modules whose cycles this test owns (the IPC server's and the recipe package's have their own work).
CHECKED = ("roost.hub", "roost.cli", "roost.agent.agent", "roost.agent.sync", "roost.agent.enrolment",
           "roost.agent.paths", "roost.paths", "roost.errors")


def test_hub_cli_and_sync_modules_have_no_import_cycle() -> None:
    assert [c for c in _cycles() if any(m.startswith(CHECKED) for m in c)] == []


def test_the_hub_does_not_import_the_agent() -> None:
    offenders = {name: sorted(m for m in deps if m.startswith("roost.agent"))
                 for name, deps in GRAPH.items() if name.startswith("roost.hub")}
    assert {k: v for k, v in offenders.items() if v} == {}


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          timeout=120).stdout


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Each module of agent/, hub/, cli/ imports on its own (an import cycle shows up as an ImportError)."""
    names = [n for n in MODULES if n.startswith(("roost.agent", "roost.hub", "roost.cli", "roost.paths",
                                                  "roost.errors"))]
    code = ("import importlib, subprocess, sys\n"
            f"names = {names!r}\n"
            "bad = []\n"
            "for n in names:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {n}'], capture_output=True, text=True)\n"
            "    if r.returncode: bad.append((n, r.stderr.strip().splitlines()[-1]))\n"
            "print(bad)\n")
    assert _fresh(code).strip() == "[]"


def test_the_hub_client_imports_no_web_framework() -> None:
    out = _fresh("import sys, roost.hub.client, roost.hub.contract\n"
                 "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')))")
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["agent", "status"], ["component", "list"], ["deployment", "list"]])
def test_local_cli_commands_do_not_load_the_hub_client(argv: list[str], tmp_path: Path) -> None:
    out = _fresh("import sys\n"
                 f"sys.argv = ['roost', *{argv!r}, '--root', {str(tmp_path / 'nope')!r}]\n"
                 "from roost.cli.main import main\n"
                 "try:\n    main()\nexcept SystemExit:\n    pass\n"
                 "print('LOADED', sorted(m for m in sys.modules if m == 'httpx' or m.startswith('roost.hub')))")
    assert out.strip().splitlines()[-1] == "LOADED []"
