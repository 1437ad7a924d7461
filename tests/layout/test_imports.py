"""The package layout of ``src/roost`` holds: no import cycles, the hub does not reach into the agent,
every module imports on its own, the hub's client needs no web framework, and local CLI commands do
not load the hub client.

Imports are read with :mod:`ast`, without importing anything: module-level imports, imports inside
functions (a lazy import is still a dependency, only a later one) and imports under
``if TYPE_CHECKING:`` (annotations only, never run, but a type-level back-reference is still a
cycle of the design: the IPC server's parts are typed against Protocols instead, see
``roost.agent.ipc.types``). ``from roost.x import y`` depends on ``roost.x.y`` when that is a
module, else on ``roost.x``. A package depends on what its ``__init__`` imports; a module does not
depend on its parent package by being inside it, but it does by importing from it, and a package
re-exporting a submodule that imports the package back is a cycle like any other.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT_PACKAGE = "roost"

#: Cycles known and being fixed elsewhere, each named with its issue. Each entry is the set of
#: modules of one strongly connected component; the test fails if an allowed cycle grows or if a
#: new one appears.
ALLOWED_CYCLES: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package; the sample components' artifacts are scripts, not modules."""
    return {_module_name(p): p for p in sorted((SRC / ROOT_PACKAGE).rglob("*.py"))
            if "artifacts" not in p.relative_to(SRC).parts}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement anywhere in ``tree``; the bodies of ``if TYPE_CHECKING:`` only when
    ``type_checking`` (their ``else`` always)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, source: str, *, is_package: bool = False, modules: set[str] | dict[str, Path] = MODULES,
               type_checking: bool = True) -> set[str]:
    """The modules of ``modules`` that module ``name`` (whose text is ``source``) imports."""
    out: set[str] = set()
    for node in _import_nodes(ast.parse(source), type_checking):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(name, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            while target and target not in modules:  # import roost.a.b.attr -> roost.a.b
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] == ROOT_PACKAGE:
                out.add(target)
    return out


def import_graph(*, type_checking: bool = True) -> dict[str, set[str]]:
    """``module -> the roost modules it imports`` for every module under ``src/roost``."""
    return {name: imports_of(name, path.read_text(), is_package=path.name == "__init__.py",
                             type_checking=type_checking)
            for name, path in MODULES.items()}


GRAPH = import_graph()


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def _describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


# -- the reader and the cycle finder ------------------------------------------------------------------


def test_the_reader_sees_every_kind_of_import() -> None:
    modules = {"roost", "roost.a", "roost.a.b", "roost.a.c", "roost.d", "roost.e", "roost.f"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "from . import c\n"                    # relative, a submodule
        "from roost.d import thing\n"          # an attribute of a module
        "def later():\n"
        "    import roost.e.attr\n"            # function level
        "if TYPE_CHECKING:\n"
        "    from roost.f import Type\n"       # annotations only
        "else:\n"
        "    from .. import a\n"               # relative, two levels: roost.a (the package)
    )
    seen = imports_of("roost.a.b", source, modules=modules)
    assert seen == {"roost.a.c", "roost.d", "roost.e", "roost.f", "roost.a"}
    assert imports_of("roost.a.b", source, modules=modules, type_checking=False) == seen - {"roost.f"}
    # An __init__ resolves relative imports from itself; a module never depends on itself.
    assert imports_of("roost.a", "from .b import x\nfrom roost.a import y\n", is_package=True,
                      modules=modules) == {"roost.a.b"}


def test_the_graph_sees_the_packages() -> None:
    assert "roost.recipe.model" in GRAPH and "roost.agent.ipc.connection" in GRAPH
    assert "roost.recipe.lifecycle" in GRAPH["roost.recipe.model"]
    assert "roost.agent.ipc.connection" in GRAPH["roost.agent.ipc.server"]
    assert "roost.hub.migrations.env" in GRAPH
    assert not any("artifacts." in name and "com.roost" in name for name in GRAPH)


def test_strongly_connected_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"f"}}
    assert strongly_connected(graph) == [frozenset({"a", "b", "c"})]
    # A package and the submodule it re-exports, importing the package back, are a cycle too.
    assert strongly_connected({"p": {"p.m"}, "p.m": {"p"}}) == [frozenset({"p", "p.m"})]


# -- the rules ------------------------------------------------------------------------------------------


def test_no_import_cycles_not_even_through_type_checking_imports() -> None:
    found = strongly_connected(GRAPH)
    unexpected = [c for c in found if c not in ALLOWED_CYCLES]
    assert not unexpected, "import cycles among roost modules:\n" + "\n".join(_describe(c, GRAPH) for c in unexpected)


@pytest.mark.parametrize("pair", [
    ("roost.agent.agent", "roost.agent.sync"),
    ("roost.recipe.validate", "roost.recipe.model"),
    ("roost.agent.ipc.server", "roost.agent.ipc.connection"),
    ("roost.agent.ipc.connection", "roost.agent.ipc.operations"),
    ("roost.ipc.async_client", "roost.ipc.protocol"),
    ("roost.ipc.async_client", "roost.ipc.subscriptions"),
])
def test_named_back_references_are_gone(pair: tuple[str, str]) -> None:
    """The cycles and type-only back-references of this morning's split, by name (an edge one way only)."""
    a, b = pair
    assert b in GRAPH[a], f"{a} no longer imports {b}: update this test"
    assert a not in GRAPH[b], f"{b} imports {a} back (annotations count: type it against a Protocol)"


def test_the_hub_does_not_import_the_agent() -> None:
    offenders = {name: sorted(m for m in deps if m.startswith("roost.agent"))
                 for name, deps in GRAPH.items() if name.startswith("roost.hub")}
    assert {k: v for k, v in offenders.items() if v} == {}


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                          timeout=300).stdout


def _third_party(names: list[str]) -> list[str]:
    """The modules outside roost that ``names`` import anywhere (functions too: what a lazy import loads)."""
    found: set[str] = set()
    for name in names:
        for node in _import_nodes(ast.parse(MODULES[name].read_text()), type_checking=False):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif not node.level and node.module:
                found.add(node.module)
    return sorted(m for m in found if m.split(".")[0] not in (ROOT_PACKAGE, "__future__"))


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Each module of agent/, hub/, cli/ imports on its own (an import cycle shows up as an ImportError).

    One interpreter imports the third-party packages these modules use (never a roost module), then
    forks a child per module: each child starts with no roost module loaded, as a fresh interpreter
    would, without paying numpy's, pydantic's or SQLAlchemy's import again (a fresh interpreter per
    module took a minute). The hub's migration scripts are excluded: alembic runs them inside its own
    context."""
    names = [n for n in MODULES if n.startswith(("roost.agent", "roost.hub", "roost.cli", "roost.ipc",
                                                  "roost.paths", "roost.errors", "roost.provision"))
             and not n.startswith("roost.hub.migrations")]
    assert len(names) > 50
    code = ("import importlib, os, sys, traceback\n"
            f"for lib in {_third_party(list(MODULES))!r}:\n"
            "    try:\n        importlib.import_module(lib)\n    except ImportError:\n        pass\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'roost'], 'a library imported roost'\n"
            "def start(n):\n"
            "    r, w = os.pipe()\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        os.close(r)\n"
            "        try:\n            importlib.import_module(n)\n            code = 0\n"
            "        except BaseException as e:\n"
            "            os.write(w, f'{type(e).__name__}: {e}'.encode()[:2000])\n            code = 1\n"
            "        os._exit(code)\n"
            "    os.close(w)\n"
            "    return pid, (n, r)\n"
            f"todo, running, bad = list({names!r}), {{}}, []\n"
            "while todo or running:\n"
            "    while todo and len(running) < 2:  # two at a time: the machine has two cores\n"
            "        pid, job = start(todo.pop())\n        running[pid] = job\n"
            "    pid, status = os.wait()\n"
            "    n, r = running.pop(pid)\n"
            "    err = os.read(r, 4000).decode()\n    os.close(r)\n"
            "    if status != 0:\n        bad.append((n, err))\n"
            "print(bad)\n")
    assert _fresh(code).strip().splitlines()[-1] == "[]"


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


def test_the_agent_process_starts_without_optional_heavy_libraries() -> None:
    """The agent's idle memory (bench/ipc.py: <= 60 MB) depends on what `python -m roost.agent` imports:
    the docker engine client (httpx), secrets (cryptography) and IoT Core (paho) load only when used."""
    out = _fresh("import sys, tempfile, roost.agent.__main__\n"
                 "from roost.agent.agent import Agent\n"
                 "from roost.agent.paths import AgentPaths\n"
                 "Agent(AgentPaths.at(tempfile.mkdtemp() + '/root'), None)  # constructing it loads no more\n"
                 "heavy = ('httpx', 'cryptography', 'paho', 'fastapi', 'sqlalchemy', 'pandas', 'xgboost', 'sklearn')\n"
                 "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))")
    assert out.strip() == "[]"
