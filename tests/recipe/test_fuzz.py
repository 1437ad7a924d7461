"""Whatever the input, parsing either succeeds or raises RecipeError: never a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.recipe import RecipeError, parse_recipe, recipe_to_dict

from .helpers import HELLO_YAML, INFERENCE_JSON

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["onpath x", "exists /y", "^1.0.0", "s3://b/k.py", "docker:x", "ALL", "ZIP", "1.0.0"])
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
BASES = [yaml.safe_load(HELLO_YAML.replace("2020-01-25", "'2020-01-25'")), json.loads(INFERENCE_JSON)]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _check(text: str) -> None:
    try:
        recipe = parse_recipe(text, source="fuzz.json")
    except RecipeError as err:
        message = str(err)
        recipe = None
    else:
        message = "fuzz.json"
    assert message.startswith("fuzz.json")
    if recipe is not None:
        assert parse_recipe(json.dumps(recipe_to_dict(recipe))) == recipe


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 1]), st.data(), json_value)
def test_mutated_recipes_fail_cleanly(base_index: int, data: st.DataObject, value: Any) -> None:
    doc = json.loads(json.dumps(BASES[base_index]))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _check(json.dumps(doc))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_fails_cleanly(text: str) -> None:
    _check(text)


EDGE_TEXTS = [
    ('{"a": ' + "1" * 5000 + "}", "invalid JSON"),
    ("a: " + "1" * 5000, "invalid YAML"),
    ("[" * 3000, "invalid YAML"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "invalid JSON"),
    ("a: !!binary aGVsbG8=", "unknown field 'a'"),
    ("---\na: 1\n---\nb: 2\n", "invalid YAML"),
    ("\t- x", "invalid YAML"),
    (
        '{"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", '
        '"Manifests": [{"Lifecycle": {"Run": {"Script": "x", "Timeout": 1' + "0" * 400 + "}}}]}",
        "Timeout: expected a positive number of seconds, got a huge number",
    ),
    (
        "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0\n"
        "ComponentConfiguration:\n  DefaultConfiguration:\n    blob: !!binary aGVsbG8=\n",
        "DefaultConfiguration.blob: expected a JSON value, got binary data",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), EDGE_TEXTS)
def test_edge_texts_fail_cleanly(text: str, fragment: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert fragment in str(info.value)


def test_a_lifecycle_of_null_steps_is_no_lifecycle_and_round_trips() -> None:
    """Found by the fuzzer: ``Lifecycle: {run: null}`` parsed to an empty Lifecycle that serialised as none."""
    doc = json.loads(json.dumps(BASES[0]))
    doc["Manifests"][1]["Lifecycle"] = {"run": None}
    recipe = parse_recipe(json.dumps(doc), source="fuzz.json")
    assert recipe.manifests[1].lifecycle is None
    _check(json.dumps(doc))
