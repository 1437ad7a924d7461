"""Recipe variable interpolation, including property tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.recipe import (
    DependencyPaths,
    InterpolationContext,
    Lifecycle,
    LifecycleStep,
    escape_pointer_token,
    interpolate,
    interpolate_lifecycle,
    parse_recipe,
    resolve_pointer,
)

from .helpers import HELLO_YAML


def make_ctx(configuration: dict[str, Any] | None = None) -> InterpolationContext:
    return InterpolationContext(
        component="com.example.HelloWorld",
        configuration=configuration if configuration is not None else {"Message": "world"},
        artifacts_path="/roost/packages/artifacts/com.example.HelloWorld/1.0.0",
        decompressed_path="/roost/packages/artifacts-unarchived/com.example.HelloWorld/1.0.0",
        work_path="/roost/work/com.example.HelloWorld",
        kernel_root="/roost",
        thing_name="edge-01",
        dependencies={
            "com.example.Lib": DependencyPaths(
                configuration={"port": 8080, "hosts": ["a", "b"]},
                artifacts_path="/roost/packages/artifacts/com.example.Lib/2.0.0",
                decompressed_path="/roost/packages/artifacts-unarchived/com.example.Lib/2.0.0",
                work_path="/roost/work/com.example.Lib",
            )
        },
    )


CONFIG: dict[str, Any] = {
    "Message": "hello world",
    "n": 3,
    "f": 0.5,
    "yes": True,
    "no": False,
    "nothing": None,
    "obj": {"a": [1, 2], "b": "x"},
    "list": ["p", {"q": 1}],
    "a/b": "slash",
    "m~n": "tilde",
    "": "empty key",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{configuration:/Message}", "hello world"),
        ("{configuration:/n}", "3"),
        ("{configuration:/f}", "0.5"),
        ("{configuration:/yes}/{configuration:/no}", "true/false"),
        ("{configuration:/nothing}", "null"),
        ("{configuration:/obj}", '{"a":[1,2],"b":"x"}'),
        ("{configuration:/obj/a/1}", "2"),
        ("{configuration:/list/1/q}", "1"),
        ("{configuration:/a~1b}", "slash"),
        ("{configuration:/m~0n}", "tilde"),
        ("{configuration:/}", "empty key"),
        ("{configuration:/missing}", "{configuration:/missing}"),
        ("{configuration:/list/5}", "{configuration:/list/5}"),
        ("{configuration:/list/01}", "{configuration:/list/01}"),
        ("{configuration:/Message/deeper}", "{configuration:/Message/deeper}"),
        ("{configuration:Message}", "{configuration:Message}"),
        ("{artifacts:path}/hello.py", "/roost/packages/artifacts/com.example.HelloWorld/1.0.0/hello.py"),
        ("{artifacts:decompressedPath}", "/roost/packages/artifacts-unarchived/com.example.HelloWorld/1.0.0"),
        ("{work:path}", "/roost/work/com.example.HelloWorld"),
        ("{kernel:rootPath}", "/roost"),
        ("{iot:thingName}", "edge-01"),
        ("{com.example.Lib:configuration:/port}", "8080"),
        ("{com.example.Lib:configuration:/hosts}", '["a","b"]'),
        ("{com.example.Lib:artifacts:path}", "/roost/packages/artifacts/com.example.Lib/2.0.0"),
        (
            "{com.example.Lib:artifacts:decompressedPath}",
            "/roost/packages/artifacts-unarchived/com.example.Lib/2.0.0",
        ),
        ("{com.example.Lib:work:path}", "/roost/work/com.example.Lib"),
        ("{com.example.HelloWorld:configuration:/n}", "3"),
        ("{com.example.Other:work:path}", "{com.example.Other:work:path}"),
        ("{com.example.Lib:kernel:rootPath}", "{com.example.Lib:kernel:rootPath}"),
        ("{unknown:thing}", "{unknown:thing}"),
        ("{iot:thingArn}", "{iot:thingArn}"),
        ("{nocolon}", "{nocolon}"),
        ("{}", "{}"),
        ("awk '{print $1}' {work:path}", "awk '{print $1}' /roost/work/com.example.HelloWorld"),
        ("{{iot:thingName}}", "{edge-01}"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, make_ctx(CONFIG)) == expected


def test_single_pass() -> None:
    ctx = make_ctx({"a": "{configuration:/b}", "b": "B", "t": "{iot:thingName}"})
    assert interpolate("{configuration:/a} {configuration:/t}", ctx) == "{configuration:/b} {iot:thingName}"


def test_hello_world_run_script() -> None:
    lifecycle = parse_recipe(HELLO_YAML).select({"os": "linux"}).lifecycle
    ctx = make_ctx()
    result = interpolate_lifecycle(lifecycle, ctx)
    assert result.run is not None
    assert result.run.script == (
        "python3 -u /roost/packages/artifacts/com.example.HelloWorld/1.0.0/hello.py 'world'"
    )
    assert result.install == lifecycle.install
    assert result.setenv == {"PYTHONUNBUFFERED": "1"}


def test_interpolate_lifecycle_everywhere() -> None:
    lifecycle = Lifecycle(
        setenv={"THING": "{iot:thingName}"},
        install=LifecycleStep(script="mkdir {work:path}", timeout=5.0, setenv={"ROOT": "{kernel:rootPath}"}),
        run=LifecycleStep(script="run {configuration:/Message}", skipif="exists {work:path}/done"),
        shutdown=LifecycleStep(script="stop", requires_privilege=True),
    )
    result = interpolate_lifecycle(lifecycle, make_ctx())
    assert result.setenv == {"THING": "edge-01"}
    assert result.install == LifecycleStep(
        script="mkdir /roost/work/com.example.HelloWorld", timeout=5.0, setenv={"ROOT": "/roost"}
    )
    assert result.run == LifecycleStep(
        script="run world", skipif="exists /roost/work/com.example.HelloWorld/done"
    )
    assert result.shutdown == lifecycle.shutdown
    assert result.startup is None


def test_resolve_pointer_errors() -> None:
    with pytest.raises(KeyError):
        resolve_pointer({"a": 1}, "a")
    with pytest.raises(KeyError):
        resolve_pointer({"a": [1]}, "/a/-")
    assert resolve_pointer({"a": 1}, "") == {"a": 1}


# -- property tests --------------------------------------------------------------------------

json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.text().filter(lambda s: "{" not in s))
def test_text_without_braces_unchanged(text: str) -> None:
    assert interpolate(text, make_ctx(CONFIG)) == text


@given(st.text(min_size=1, max_size=10), json_leaf)
def test_any_leaf_substituted(key: str, value: Any) -> None:
    if "{" in key or "}" in key:
        return
    ctx = make_ctx({key: value})
    pointer = "/" + escape_pointer_token(key)
    expected = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    assert interpolate(f"<{{configuration:{pointer}}}>", ctx) == f"<{expected}>"


@given(json_value)
def test_any_node_renders_as_compact_json_or_text(value: Any) -> None:
    ctx = make_ctx({"k": value})
    result = interpolate("{configuration:/k}", ctx)
    if isinstance(value, str):
        assert result == value
    else:
        assert json.loads(result) == value


@given(
    st.from_regex(r"[A-Za-z][A-Za-z0-9.]{0,10}", fullmatch=True).filter(
        lambda ns: (
            ns not in {"configuration", "artifacts", "work", "kernel", "iot", "com.example.Lib"}
            and ns != "com.example.HelloWorld"
        )
    ),
    st.text(max_size=10).filter(lambda s: "{" not in s and "}" not in s),
)
def test_unknown_namespaces_unchanged(namespace: str, rest: str) -> None:
    text = f"x {{{namespace}:{rest}}} y"
    assert interpolate(text, make_ctx(CONFIG)) == text


@given(st.lists(st.text(max_size=6), min_size=1, max_size=4), json_leaf)
def test_pointer_escapes_round_trip(path: list[str], value: Any) -> None:
    document: Any = value
    for key in reversed(path):
        document = {key: document}
    pointer = "".join("/" + escape_pointer_token(key) for key in path)
    assert resolve_pointer(document, pointer) == value
