"""Authorisation of IPC operations against a component's ``accessControl`` configuration.

The document has the Greengrass shape::

    accessControl:
      aws.greengrass.ipc.pubsub:
        "com.example.Sensor:pubsub:1":
          policyDescription: Allows publishing sensor data
          operations: ["aws.greengrass#PublishToTopic"]
          resources: ["sensors/+/temperature", "local/*"]

Semantics (deny by default):

* A request ``(service, operation, resource)`` is allowed when some policy under ``service``
  lists the operation and covers the resource.
* Operations: ``"*"`` or a glob where ``*`` matches any run of characters
  (``aws.greengrass#*``). Resources: the same glob; ``"*"`` alone covers everything.
* For ``aws.greengrass.ipc.pubsub`` a resource may also be an MQTT filter: ``sensors/#``
  covers the topic ``sensors/a/b``, and covers the subscription filter ``sensors/+`` too. A
  policy filter covers a requested filter only when every topic the request can match is
  matched by the policy (``a/+`` does not cover ``a/#``).
* ``resource=None`` means the operation has no resource: any policy listing it allows it.

What needs a policy in Roost (see :mod:`roost.agent.ipc`):

* ``aws.greengrass.ipc.pubsub``: PublishToTopic / SubscribeToTopic, resource = topic.
* ``aws.greengrass.ipc.mqttproxy``: PublishToIoTCore / SubscribeToIoTCore, resource = the topic
  (filter), matched MQTT-style as for pub/sub.
* ``aws.greengrass.ipc.config``: only in strict mode (the agent's ``--strict-config-reads``):
  GetConfiguration / SubscribeToConfigurationUpdate of *another* component, resource =
  ``<component>:<keyPath>`` (:func:`config_resource`: the key path as a JSON pointer,
  ``com.example.B:/model/threshold``; the whole configuration is ``com.example.B:*``). A policy
  resource ``com.example.B:*`` covers every key of B, ``com.example.B:/model/*`` the keys under
  ``model``, and a bare ``com.example.B`` all of B. By default (as on Greengrass) any component
  may read and subscribe to any component's configuration without a policy. A component's own
  configuration is always readable and writable, and UpdateConfiguration only ever writes the
  caller's own configuration (as in Greengrass).
* ``aws.greengrass.Cli``: the CLI operations, resource = the target component name
  (GetComponentDetails, RestartComponent, StopComponent) or the deployment id
  (GetLocalDeploymentStatus); ListComponents, ListLocalDeployments and CreateLocalDeployment
  have no resource, so listing the operation is enough. The privileged CLI principal is
  allowed everything.
* ``aws.greengrass.SecretManager``: GetSecretValue, resource = the secret's stored name (its ARN;
  :mod:`roost.agent.ipc.ops_secrets`).
* ``aws.greengrass.ipc.lifecycle``: PauseComponent / ResumeComponent, resource = the target
  component name (the nucleus' lifecycle IPC service).
* UpdateState on oneself is always allowed, and so are the own streams and answers of component
  updates and configuration validation (SubscribeToComponentUpdates, DeferComponentUpdate,
  SubscribeToValidateConfigurationUpdates, SendConfigurationValidityReport), as on Greengrass.

Policy itself (:data:`POLICY_KEYS`: ``accessControl``) changes only through a deployment: an
IPC ``UpdateConfiguration`` whose ``keyPath`` starts with a policy key, or whose ``keyPath`` is
empty (the root, the only ancestor of a top-level key) and whose ``valueToMerge`` contains one,
is refused as a whole with :class:`~roost.agent.errors.PolicyChangeRefusedError`
(:func:`check_configuration_update`). The full table of what each operation checks is in
``docs/ipc.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from roost.agent.errors import PolicyChangeRefusedError

PUBSUB_SERVICE: Final = "aws.greengrass.ipc.pubsub"
CONFIG_SERVICE: Final = "aws.greengrass.ipc.config"
CLI_SERVICE: Final = "aws.greengrass.Cli"
MQTTPROXY_SERVICE: Final = "aws.greengrass.ipc.mqttproxy"
LIFECYCLE_SERVICE: Final = "aws.greengrass.ipc.lifecycle"

#: Top-level configuration keys the agent reads as policy: they change only through a deployment.
POLICY_KEYS: Final = ("accessControl",)


def policy_keys_touched(key_path: Sequence[str], value_to_merge: Any) -> list[str]:
    """The policy keys an ``UpdateConfiguration`` at ``key_path`` with ``value_to_merge`` would change."""
    if key_path:
        return [key_path[0]] if key_path[0] in POLICY_KEYS else []
    if isinstance(value_to_merge, Mapping):
        return [key for key in POLICY_KEYS if key in value_to_merge]
    return []


def check_configuration_update(component: str, key_path: Sequence[str], value_to_merge: Any) -> None:
    """Raise :class:`PolicyChangeRefusedError` if the update would touch a policy key."""
    touched = policy_keys_touched(key_path, value_to_merge)
    if touched:
        raise PolicyChangeRefusedError(component, touched)


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def glob_matches(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters (including ``/``); everything else is literal."""
    if pattern == "*" or pattern == value:
        return True
    if "*" not in pattern:
        return False
    return _glob(pattern).fullmatch(value) is not None


def filter_covers(policy_filter: str, requested: str) -> bool:
    """True if every topic matched by ``requested`` is matched by ``policy_filter`` (MQTT)."""
    if policy_filter == requested:
        return True
    plevels = policy_filter.split("/")
    rlevels = requested.split("/")
    nr = len(rlevels)
    for i, p in enumerate(plevels):
        if p == "#":
            return True
        if i >= nr:
            return False
        r = rlevels[i]
        if r == "#":
            return False
        if p == "+":
            continue
        if p != r:
            return False
    return len(plevels) == nr


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _resource_allowed(patterns: list[str], resource: str, mqtt: bool) -> bool:
    for pattern in patterns:
        if glob_matches(pattern, resource):
            return True
        if mqtt and ("+" in pattern or "#" in pattern) and filter_covers(pattern, resource):
            return True
    return False


def config_resource(component: str, key_path: Sequence[str]) -> str:
    """The ``aws.greengrass.ipc.config`` resource of a read: ``<component>:<keyPath as a JSON pointer>``.

    ``[]`` (the whole configuration) is ``<component>:*``; ``["a", "b/c"]`` is ``<component>:/a/b~1c``.
    """
    if not key_path:
        return f"{component}:*"
    return component + ":" + "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in key_path)


def _config_resource_allowed(patterns: list[str], resource: str) -> bool:
    component = resource.partition(":")[0]
    # A bare component name (no ':') covers all of that component's configuration.
    return any((":" not in p and glob_matches(p, component)) or glob_matches(p, resource) for p in patterns)


def authorize(access_control: Mapping[str, Any], service: str, operation: str, resource: str | None) -> bool:
    """Whether ``access_control`` allows ``operation`` on ``resource`` of ``service``."""
    policies = access_control.get(service) if isinstance(access_control, Mapping) else None
    if not isinstance(policies, Mapping):
        return False
    mqtt = service in (PUBSUB_SERVICE, MQTTPROXY_SERVICE)
    for policy in policies.values():
        if not isinstance(policy, Mapping):
            continue
        if not any(glob_matches(op, operation) for op in _strings(policy.get("operations"))):
            continue
        if resource is None:
            return True
        patterns = _strings(policy.get("resources"))
        if service == CONFIG_SERVICE:
            if _config_resource_allowed(patterns, resource):
                return True
        elif _resource_allowed(patterns, resource, mqtt):
            return True
    return False
