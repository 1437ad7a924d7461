"""Every skip of the suite goes through the one gate, ``tests/conftest.py:require_service``.

Where everything is required (CI sets ``ROOST_REQUIRE_SERVICES=1``) a missing service, module or
seed file then fails instead of making tests vanish silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import TESTS, require_module, require_seed_data, require_service

#: The gate itself.
GATE = ("conftest.py", "require_service")
#: Files not yet moved to the gate, each with its owner: the test fails once one is clean (remove it then).
NOT_YET: dict[str, str] = {}
SKIPS = {"skip", "importorskip", "skipif", "xfail"}
#: The only files whose ``require_service(..., optional=True)`` skips even where everything is required,
#: each with the service no machine of the project has.
OPTIONAL_SERVICES: dict[str, str] = {
    "cluster/test_kubernetes_real.py": "a real Kubernetes cluster (KUBECONFIG): no API server runs here or in CI",
}


def _skips(path: Path) -> list[tuple[int, str]]:
    """(line, enclosing function) of every ``pytest.skip/importorskip/mark.skip/mark.skipif/xfail`` in ``path``."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(node, ast.Attribute) and node.attr == "Exception":
                continue  # pytest.skip.Exception: catching a skip, not skipping
            if isinstance(child, ast.Attribute) and child.attr in SKIPS:
                base = child.value
                if (isinstance(base, ast.Name) and base.id == "pytest") or (
                        isinstance(base, ast.Attribute) and base.attr == "mark"):
                    found.append((child.lineno, function))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_the_finder_finds_skips(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import pytest\n"
                     "pytest.importorskip('x')\n"
                     "@pytest.mark.skipif(True, reason='r')\n"
                     "def test_a():\n    pytest.skip('no')\n"
                     "def skipped_helper(): pass\n")
    # a decorator counts in its function
    assert sorted(_skips(probe)) == [(2, "<module>"), (3, "test_a"), (5, "test_a")]


def test_every_skip_goes_through_require_service() -> None:
    offenders: dict[str, list[int]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS).as_posix()
        lines = [line for line, function in _skips(path) if (rel, function) != GATE]
        if lines:
            offenders[rel] = lines
    assert {k: v for k, v in offenders.items() if k not in NOT_YET} == {}, (
        "skip through tests/conftest.py's require_service (or require_module / require_seed_data)")
    assert sorted(set(NOT_YET) - set(offenders)) == [], "clean now: remove from NOT_YET"


def test_the_gate_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOST_REQUIRE_SERVICES", raising=False)
    require_service("x", True, "never said")
    with pytest.raises(pytest.skip.Exception, match="x not available: gone"):
        require_service("x", False, "gone")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_roost"):
        require_module("no_such_module_roost")
    with pytest.raises(pytest.skip.Exception, match="lacks no-such-file"):
        require_seed_data("no-such-file")
    assert require_module("json").dumps([]) == "[]"

    monkeypatch.setenv("ROOST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="x is required here"):
        require_service("x", False, "gone")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_roost"):
        require_module("no_such_module_roost")
    with pytest.raises(pytest.fail.Exception, match="seed-data"):
        require_seed_data("no-such-file")


def _optional_uses(path: Path) -> list[int]:
    """Lines of ``require_service(..., optional=<anything but False>)`` calls in ``path``."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "require_service" and any(
                    k.arg == "optional" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                lines.append(node.lineno)
    return lines


def test_optional_services_are_only_where_allowed() -> None:
    uses = {path.relative_to(TESTS).as_posix(): _optional_uses(path) for path in sorted(TESTS.rglob("*.py"))
            if path.relative_to(TESTS).as_posix() != "layout/test_skips.py"}
    assert sorted(rel for rel, lines in uses.items() if lines and rel not in OPTIONAL_SERVICES) == []
    assert sorted(rel for rel in OPTIONAL_SERVICES if not uses.get(rel)) == [], "unused: remove from OPTIONAL_SERVICES"


def test_an_optional_service_skips_even_where_everything_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.skip.Exception, match="x not available: gone"):
        require_service("x", False, "gone", optional=True)
    with pytest.raises(pytest.fail.Exception, match="x is required here"):
        require_service("x", False, "gone", optional=False)
    require_service("x", True, "never said", optional=True)
