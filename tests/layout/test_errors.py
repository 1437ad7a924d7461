"""One error tree, drawn; one registry of codes, documented."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import roost
import roost.errors
from roost.errors import CODES, RoostError, meaning
from roost.hub.contract import CODE_BY_STATUS, INTERNAL_ERROR

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "roost"


def _raised_codes() -> dict[str, list[str]]:
    """Every literal ``code="..."`` argument and class-level ``code = "..."`` in src/roost."""
    out: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Call):
                found = [k.value.value for k in node.keywords
                         if k.arg == "code" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)]
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
                        stmt.target if isinstance(stmt, ast.AnnAssign) else None
                    value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
                    if isinstance(target, ast.Name) and target.id == "code" and isinstance(value, ast.Constant) \
                            and isinstance(value.value, str):
                        found.append(value.value)
            for code in found:
                out.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return out


def test_every_code_raised_in_src_is_registered() -> None:
    raised = _raised_codes()
    assert len(raised) > 100  # the scan works
    assert {code: where for code, where in raised.items() if meaning(code) is None} == {}


def test_the_hub_answers_only_registered_codes() -> None:
    assert [c for c in [*CODE_BY_STATUS.values(), INTERNAL_ERROR] if meaning(c) is None] == []


def test_codes_are_registered_once_and_look_alike() -> None:
    seen: dict[str, str] = {}
    for group, codes in CODES.items():
        for code, text in codes.items():
            assert code not in seen, f"{code} registered under {seen[code]} and {group}"
            seen[code] = group
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", code) and text.strip()


def test_every_registered_code_is_listed_in_docs_with_its_meaning() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \|$", doc, re.M))
    expected = {code: text for codes in CODES.values() for code, text in codes.items()}
    assert {c: t for c, t in expected.items() if rows.get(c) != t} == {}
    for group in CODES:
        assert f"## {group}\n" in doc


def _all_error_classes() -> set[type[RoostError]]:
    for info in pkgutil.walk_packages(roost.__path__, "roost."):
        if "migrations" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    out: set[type[RoostError]] = set()
    todo: list[type[RoostError]] = [RoostError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("roost") and cls not in out:
            out.add(cls)
            todo.extend(cls.__subclasses__())
    return out


def test_the_tree_in_roost_errors_draws_every_class() -> None:
    doc = roost.errors.__doc__ or ""
    drawn = set(re.findall(r"^ {4}(?:[│ ]   )*(?:[├└]── )?([A-Z]\w+)\s+([A-Z][A-Z0-9_]+)\s", doc, re.M))
    classes = {(cls.__name__, cls.code) for cls in _all_error_classes()}
    assert sorted(classes - drawn) == []
    assert sorted(drawn - classes) == []
