"""The store returns the contract's models: no record is declared twice (issue 9)."""

from __future__ import annotations

import dataclasses
import inspect
import typing

from pydantic import BaseModel

from roost.hub import contract
from roost.hub.store import Store, records


def _contract_models() -> dict[str, set[str]]:
    return {name: set(cls.model_fields) for name, cls in vars(contract).items()
            if inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.model_fields}


def test_no_store_record_twins_a_contract_model() -> None:
    models = _contract_models()
    for name, cls in vars(records).items():
        if inspect.isclass(cls) and dataclasses.is_dataclass(cls) and cls.__module__ == records.__name__:
            fields = {f.name for f in dataclasses.fields(cls)}
            twins = [m for m, f in models.items() if f == fields]
            assert not twins, f"records.{name} has the fields of contract.{twins}"


def test_store_methods_return_contract_models() -> None:
    wire = {cls for cls in vars(contract).values() if inspect.isclass(cls) and issubclass(cls, BaseModel)}
    checked = 0
    for name in ("create_enroll_token", "enroll", "list_devices", "get_device", "revoke_device", "set_labels",
                 "add_group_members", "remove_group_member", "list_groups", "list_components", "get_component",
                 "create_deployment", "get_deployment", "list_deployments", "cancel_deployment"):
        hints = typing.get_type_hints(getattr(Store, name))
        returned = hints["return"]
        inner = typing.get_args(returned)[0] if typing.get_origin(returned) is list else returned
        assert inner in wire, f"Store.{name} returns {returned}"
        checked += 1
    params = typing.get_type_hints(Store.create_deployment)
    assert params["req"] is contract.DeploymentCreate
    assert checked == 15
