"""The hub resolves dependencies as the agent does: SOFT ones included, AWS-provided ones built in."""

from __future__ import annotations

import pytest

from roost import GGC_COMPAT_VERSION
from roost.hub.contract import DeploymentCreate
from roost.hub.errors import UnprocessableError
from roost.hub.store import Store
from tests.hub.conftest import make_recipe
from tests.hub.test_store import enrol


def _publish(store: Store, name: str, version: str, deps: dict[str, tuple[str, str]] | None = None) -> None:
    extra = "ComponentDependencies:\n" + "".join(
        f"  {d}:\n    VersionRequirement: '{r}'\n    DependencyType: {t}\n" for d, (r, t) in (deps or {}).items())
    staging = store.artifacts.staging()
    writer = staging.open("hello.py")
    writer.write(b"print('hi')\n")
    try:
        store.publish_component(make_recipe(name, version, ("hello.py",), extra if deps else ""), staging,
                                [writer.finish()])
    finally:
        staging.cleanup()


def test_soft_and_builtin_dependencies(store: Store) -> None:
    dev = enrol(store, "b-1")
    _publish(store, "com.example.Metrics", "1.2.0")
    _publish(store, "com.example.App", "1.0.0", {
        "com.example.Metrics": ("^1.0.0", "SOFT"),
        "aws.greengrass.Nucleus": (">=2.0.0 <3.0.0", "SOFT"),
        "aws.greengrass.TokenExchangeService": ("^2.0.0", "HARD"),
    })
    dep = store.create_deployment(DeploymentCreate(target="device:b-1", components={"com.example.App": "1.0.0"}))
    # The SOFT dependency is delivered; the built-ins are not components the device downloads.
    assert dep.dependencies == {"com.example.Metrics": "1.2.0"}
    state, _ = store.desired_state(dev)
    assert state is not None and sorted(state.components) == ["com.example.App", "com.example.Metrics"]


def test_builtin_and_aws_catalogue_errors(store: Store) -> None:
    enrol(store, "b-2")
    _publish(store, "com.example.Classifier", "1.0.0", {"aws.greengrass.DLRImageClassification": ("^2.1.0", "HARD")})
    _publish(store, "com.example.Old", "1.0.0", {"aws.greengrass.Nucleus": ("<2.1.0", "SOFT")})
    with pytest.raises(UnprocessableError) as unavailable:
        store.create_deployment(DeploymentCreate(target="device:b-2", components={"com.example.Classifier": "1.0.0"}))
    assert unavailable.value.code == "AWS_COMPONENT_UNAVAILABLE"
    message = unavailable.value.message
    assert "aws.greengrass.DLRImageClassification is a component of AWS's Greengrass catalogue" in message
    assert "roost component publish" in unavailable.value.message
    with pytest.raises(UnprocessableError) as mismatch:
        store.create_deployment(DeploymentCreate(target="device:b-2", components={"com.example.Old": "1.0.0"}))
    assert mismatch.value.code == "BUILTIN_VERSION_MISMATCH" and GGC_COMPAT_VERSION in mismatch.value.message
    with pytest.raises(UnprocessableError) as root:
        store.create_deployment(DeploymentCreate(target="device:b-2", components={"aws.greengrass.Cli": "2.12.0"}))
    assert root.value.code == "BUILTIN_NOT_DEPLOYABLE" and "built into every Roost agent" in root.value.message
    # A replacement published under the catalogue name is an ordinary dependency.
    _publish(store, "aws.greengrass.DLRImageClassification", "2.1.5")
    dep = store.create_deployment(DeploymentCreate(target="device:b-2", components={"com.example.Classifier": "1.0.0"}))
    assert dep.dependencies == {"aws.greengrass.DLRImageClassification": "2.1.5"}
    assert len(store.list_deployments()) == 1
