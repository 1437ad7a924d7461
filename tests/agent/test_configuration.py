from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.agent.configuration import apply_update, deep_merge, get_path, merge_at, parse_pointer, reset
from roost.errors import InvalidInputError, NotFoundError

DEFAULTS = {"a": 1, "nested": {"x": 1, "y": [1, 2]}, "accessControl": {}}


def test_merge_objects_and_replace_leaves() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3, "d": 4}, "e": 5}) == {"a": {"b": 1, "c": 3, "d": 4},
                                                                                     "e": 5}
    assert deep_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_reset_to_default_and_remove_when_no_default() -> None:
    conf = {"a": 9, "nested": {"x": 7, "y": [], "extra": True}, "added": 1}
    assert reset(conf, DEFAULTS, "/nested/x")["nested"]["x"] == 1
    assert "added" not in reset(conf, DEFAULTS, "/added")
    assert reset(conf, DEFAULTS, "") == DEFAULTS


def test_update_applies_reset_then_merge() -> None:
    out = apply_update({"a": 5, "nested": {"x": 5}}, DEFAULTS, {"RESET": ["/a"], "MERGE": {"nested": {"x": 6}}}, "c")
    assert out == {"a": 1, "nested": {"x": 6}}


def test_update_rejects_unknown_keys() -> None:
    with pytest.raises(InvalidInputError, match="unknown key"):
        apply_update({}, {}, {"MERG": {}}, "com.x")
    with pytest.raises(InvalidInputError, match="RESET must be a list"):
        apply_update({}, {}, {"RESET": "/a"}, "com.x")


def test_get_path_names_missing_key() -> None:
    with pytest.raises(NotFoundError, match="/nested/z"):
        get_path(DEFAULTS, ["nested", "z"])
    assert get_path(DEFAULTS, ["nested", "y", "1"]) == 2


def test_pointer_escapes() -> None:
    assert parse_pointer("/a~1b/c~0d") == ["a/b", "c~d"]
    with pytest.raises(InvalidInputError):
        parse_pointer("a/b")


json_leaf = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
trees = st.recursive(json_leaf, lambda c: st.dictionaries(st.text(min_size=1, max_size=4), c, max_size=4),
                     max_leaves=10)


@given(st.dictionaries(st.text(min_size=1, max_size=4), trees, max_size=4),
       st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=3), trees)
def test_merge_at_then_get_returns_value_for_leaves(tree: dict, path: list[str], value: object) -> None:
    merged = merge_at(tree, path, value)
    got = get_path(merged, path)
    if not isinstance(value, dict):
        assert got == value
    else:
        for k, v in value.items():
            assert k in got and (isinstance(v, dict) or got[k] == v)
