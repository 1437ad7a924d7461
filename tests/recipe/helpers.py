"""Shared recipe texts and builders for the recipe tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from roost.recipe import Dependency, Recipe, parse_recipe
from roost.recipe.model import DependencyType

HELLO_YAML = """\
---
RecipeFormatVersion: 2020-01-25
ComponentName: com.example.HelloWorld
ComponentVersion: 1.0.0
ComponentDescription: My first AWS IoT Greengrass component.
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration:
    Message: world
    accessControl:
      aws.greengrass.ipc.pubsub:
        com.example.HelloWorld:pubsub:1:
          policyDescription: Allows access to publish to local/inference.
          operations:
            - aws.greengrass#PublishToTopic
          resources:
            - local/inference
ComponentDependencies:
  aws.greengrass.Nucleus:
    VersionRequirement: ">=2.0.0 <3.0.0"
    DependencyType: SOFT
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      Setenv:
        PYTHONUNBUFFERED: 1
      Install:
        Script: python3 -m pip install --user awsiotsdk
        Timeout: 300
        Skipif: onpath awsiotsdk-check
      Run: "python3 -u {artifacts:path}/hello.py '{configuration:/Message}'"
    Artifacts:
      - URI: s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.HelloWorld/1.0.0/hello.py
        Digest: 5Hjy9Ct6yHm0yjDc5fItS4HfE+yYfvIXhDYEhLgk8BE=
        Algorithm: SHA-256
        Permission:
          Read: ALL
          Execute: OWNER
  - Platform:
      os: windows
    Lifecycle:
      run: "py -3 -u {artifacts:path}/hello.py \\"{configuration:/Message}\\""
    Artifacts:
      - URI: s3://DOC-EXAMPLE-BUCKET/artifacts/com.example.HelloWorld/1.0.0/hello.py
"""

INFERENCE_JSON = """\
{
  "RecipeFormatVersion": "2020-01-25",
  "ComponentName": "com.example.WineInference",
  "ComponentVersion": "2.1.0-beta.1",
  "ComponentType": "aws.greengrass.generic",
  "ComponentConfiguration": {
    "DefaultConfiguration": {
      "RequestTopic": "local/inference",
      "ResultTopic": "local/result",
      "BatchSize": 40,
      "Model": {"name": "wine-xgb", "threshold": 0.5, "enabled": true, "tags": null}
    }
  },
  "ComponentDependencies": {
    "com.example.XGBoostRuntime": {"VersionRequirement": "^1.4.0"}
  },
  "Manifests": [
    {
      "Name": "arm",
      "Platform": {"os": "linux", "architecture": "/aarch64|arm/"},
      "Artifacts": [
        {"URI": "greengrass:model.zip", "Unarchive": "ZIP"},
        {"URI": "file:///opt/models/serve.py", "Permission": {"Execute": "ALL"}}
      ],
      "Lifecycle": {
        "Startup": {"Script": "python3 {artifacts:decompressedPath}/model/serve.py --daemon",
                    "RequiresPrivilege": true},
        "Shutdown": "pkill -F {work:path}/serve.pid",
        "Recover": {"Script": "echo recovering", "Timeout": 5.5, "Setenv": {"MODE": "recover"}}
      }
    },
    {
      "Platform": {"os": "*"},
      "Artifacts": [{"URI": "docker:123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:latest"}]
    }
  ]
}
"""


def minimal() -> dict[str, Any]:
    """A small valid recipe document to mutate in tests."""
    return copy.deepcopy(
        {
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": "com.example.Min",
            "ComponentVersion": "1.0.0",
            "Manifests": [
                {
                    "Platform": {"os": "linux"},
                    "Lifecycle": {"Run": "echo hi"},
                    "Artifacts": [{"URI": "s3://bucket/a/b/file.py"}],
                }
            ],
        }
    )


def parse_doc(doc: dict[str, Any], source: str = "recipe.json") -> Recipe:
    return parse_recipe(json.dumps(doc), source=source)


def make_recipe(
    name: str, version: str, deps: dict[str, str | tuple[str, DependencyType]] | None = None
) -> Recipe:
    """A bare recipe with dependencies ``{name: range}`` or ``{name: (range, "SOFT")}``."""
    dependencies: dict[str, Dependency] = {}
    for dep, spec in (deps or {}).items():
        if isinstance(spec, tuple):
            dependencies[dep] = Dependency(version_requirement=spec[0], dependency_type=spec[1])
        else:
            dependencies[dep] = Dependency(version_requirement=spec)
    return Recipe(name=name, version=version, dependencies=dependencies)
