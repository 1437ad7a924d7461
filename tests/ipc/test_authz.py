"""accessControl semantics."""

from __future__ import annotations

from typing import Any

import pytest

from roost.agent.authz import (
    CLI_SERVICE,
    CONFIG_SERVICE,
    PUBSUB_SERVICE,
    authorize,
    config_resource,
    filter_covers,
)

PUB = "aws.greengrass#PublishToTopic"
SUB = "aws.greengrass#SubscribeToTopic"

ACL: dict[str, Any] = {
    PUBSUB_SERVICE: {
        "p1": {"policyDescription": "x", "operations": [PUB], "resources": ["sensors/temp", "local/*"]},
        "p2": {"operations": [SUB], "resources": ["sensors/+/data", "events/#"]},
        "p3": {"operations": ["aws.greengrass#*"], "resources": ["open/topic"]},
    },
    CONFIG_SERVICE: {"c": {"operations": ["*"], "resources": ["com.example.*"]}},
    CLI_SERVICE: {"cli": {"operations": ["aws.greengrass#ListComponents"], "resources": ["*"]}},
}


@pytest.mark.parametrize(
    ("service", "op", "resource", "allowed"),
    [
        (PUBSUB_SERVICE, PUB, "sensors/temp", True),
        (PUBSUB_SERVICE, PUB, "sensors/temp2", False),
        (PUBSUB_SERVICE, SUB, "sensors/temp", False),  # operation not in that policy
        (PUBSUB_SERVICE, PUB, "local/a/b", True),  # '*' glob spans levels
        (PUBSUB_SERVICE, PUB, "localx", False),
        (PUBSUB_SERVICE, SUB, "sensors/a/data", True),
        (PUBSUB_SERVICE, SUB, "sensors/+/data", True),  # the same filter
        (PUBSUB_SERVICE, SUB, "sensors/#", False),  # broader than the policy
        (PUBSUB_SERVICE, SUB, "events/a/b", True),
        (PUBSUB_SERVICE, SUB, "events/+/b", True),
        (PUBSUB_SERVICE, SUB, "events", True),
        (PUBSUB_SERVICE, SUB, "open/topic", True),  # operation glob
        (PUBSUB_SERVICE, "aws.greengrass#Other", "open/topic", True),
        (PUBSUB_SERVICE, "aws.other#Op", "open/topic", False),
        (CONFIG_SERVICE, "aws.greengrass#GetConfiguration", "com.example.B", True),
        (CONFIG_SERVICE, "aws.greengrass#GetConfiguration", "org.other.B", False),
        (CLI_SERVICE, "aws.greengrass#ListComponents", None, True),
        (CLI_SERVICE, "aws.greengrass#RestartComponent", "x", False),
        ("aws.greengrass.ipc.unknown", PUB, "sensors/temp", False),
    ],
)
def test_authorize(service: str, op: str, resource: str | None, allowed: bool) -> None:
    assert authorize(ACL, service, op, resource) is allowed


def test_mqtt_wildcards_are_not_special_outside_pubsub() -> None:
    acl = {CONFIG_SERVICE: {"c": {"operations": ["*"], "resources": ["#"]}}}
    assert not authorize(acl, CONFIG_SERVICE, "aws.greengrass#GetConfiguration", "com.x")


def test_deny_by_default_and_malformed_documents() -> None:
    assert not authorize({}, PUBSUB_SERVICE, PUB, "a")
    assert not authorize({PUBSUB_SERVICE: "nonsense"}, PUBSUB_SERVICE, PUB, "a")
    assert not authorize({PUBSUB_SERVICE: {"p": "nonsense"}}, PUBSUB_SERVICE, PUB, "a")
    assert not authorize({PUBSUB_SERVICE: {"p": {"operations": [PUB]}}}, PUBSUB_SERVICE, PUB, "a")
    assert not authorize({PUBSUB_SERVICE: {"p": {"resources": ["*"]}}}, PUBSUB_SERVICE, PUB, "a")
    # a bare string instead of a list is accepted
    assert authorize({PUBSUB_SERVICE: {"p": {"operations": PUB, "resources": "*"}}}, PUBSUB_SERVICE, PUB, "a")


def test_glob_is_literal_except_star() -> None:
    acl = {PUBSUB_SERVICE: {"p": {"operations": ["*"], "resources": ["a.b?[c]*"]}}}
    assert authorize(acl, PUBSUB_SERVICE, PUB, "a.b?[c]/x")
    assert not authorize(acl, PUBSUB_SERVICE, PUB, "axb?[c]")


@pytest.mark.parametrize(
    ("policy", "requested", "covers"),
    [
        ("#", "#", True),
        ("#", "a/+/b", True),
        ("a/+", "a/#", False),
        ("a/+", "a/+", True),
        ("a/#", "a/+/c", True),
        ("+/b", "+/b", True),
        ("a/b", "a/+", False),
    ],
)
def test_filter_covers(policy: str, requested: str, covers: bool) -> None:
    assert filter_covers(policy, requested) is covers


@pytest.mark.parametrize(
    ("resources", "component", "key_path", "allowed"),
    [
        (["com.example.B:*"], "com.example.B", [], True),
        (["com.example.B:*"], "com.example.B", ["model", "threshold"], True),
        (["com.example.B"], "com.example.B", ["model"], True),  # a bare name covers every key
        (["com.example.B:/model/*"], "com.example.B", ["model", "threshold"], True),
        (["com.example.B:/model/*"], "com.example.B", ["other"], False),
        (["com.example.B:/model/*"], "com.example.B", [], False),  # the whole document is more than /model
        (["com.example.B:/model"], "com.example.B", ["model"], True),
        (["com.example.B:*"], "com.example.C", [], False),
        (["com.example.*:*"], "com.example.C", ["x"], True),
        (["com.example.B:/a~1b"], "com.example.B", ["a/b"], True),  # JSON pointer escaping
    ],
)
def test_config_read_resources(resources: list[str], component: str, key_path: list[str], allowed: bool) -> None:
    acl = {CONFIG_SERVICE: {"p": {"operations": ["aws.greengrass#GetConfiguration"], "resources": resources}}}
    resource = config_resource(component, key_path)
    assert authorize(acl, CONFIG_SERVICE, "aws.greengrass#GetConfiguration", resource) is allowed
    assert not authorize(acl, CONFIG_SERVICE, "aws.greengrass#SubscribeToConfigurationUpdate", resource)


def test_config_resource_form() -> None:
    assert config_resource("B", []) == "B:*"
    assert config_resource("B", ["a", "b/c", "d~e"]) == "B:/a/b~1c/d~0e"
