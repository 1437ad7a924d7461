"""Configuration validation as on Greengrass, through a real agent and a component written with awsiotsdk.

A component subscribed with ``SubscribeToValidateConfigurationUpdates`` is sent its new configuration
before a deployment applies it (when the deployment keeps its version); ``REJECTED`` fails the
deployment with ``CONFIGURATION_REJECTED`` and nothing changes; no report within
``configurationValidationPolicy.timeoutInSeconds`` fails it too (``CONFIGURATION_VALIDATION_TIMEOUT``,
as the nucleus does).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module, running_agent

pytestmark = pytest.mark.slow

VALIDATOR, OTHER = "com.test.Validator", "com.test.Bystander"

VALIDATOR_PY = textwrap.dedent("""
    import json, queue
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ConfigurationValidityReport, ConfigurationValidityStatus

    ipc = GreengrassCoreIPCClientV2()
    events = queue.Queue()
    ipc.subscribe_to_validate_configuration_updates(on_stream_event=events.put)
    print("validating", flush=True)
    while True:
        event = events.get().validate_configuration_update_event
        proposed = event.configuration
        current = ipc.get_configuration(key_path=["threshold"]).value["threshold"]
        print(f"validate {event.deployment_id} proposed={proposed.get('threshold')} current={current}", flush=True)
        if proposed.get("silent"):
            continue
        threshold = proposed.get("threshold")
        if isinstance(threshold, (int, float)) and 0 <= threshold <= 1:
            report = ConfigurationValidityReport(status=ConfigurationValidityStatus.ACCEPTED,
                                                 deployment_id=event.deployment_id)
        else:
            report = ConfigurationValidityReport(status=ConfigurationValidityStatus.REJECTED,
                                                 deployment_id=event.deployment_id,
                                                 message=f"threshold must be within [0, 1], got {threshold}")
        ipc.send_configuration_validity_report(configuration_validity_report=report)
""")

PROBE = textwrap.dedent("""
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ConfigurationValidityReport

    ipc = GreengrassCoreIPCClientV2()

    def attempt(what, **report):
        try:
            if report.pop("none", False):
                ipc.send_configuration_validity_report()
            else:
                ipc.send_configuration_validity_report(
                    configuration_validity_report=ConfigurationValidityReport(**report))
            print(what, "ok", flush=True)
        except Exception as err:
            print(what, type(err).__name__, getattr(err, "message", err), flush=True)

    attempt("no-report", none=True)
    attempt("bad-status", status="MAYBE", deployment_id="d-1")
    attempt("no-id", status="ACCEPTED")
    attempt("unknown", status="ACCEPTED", deployment_id="no-such-deployment")
    print("probe done", flush=True)
    import threading; threading.Event().wait()
""")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Workspace]]:
    require_module("awsiot.greengrasscoreipc.clientv2")
    base = tmp_path_factory.mktemp("validation")
    ws = Workspace(base / "ws")
    for version in ("1.0.0", "2.0.0"):
        ws.component(VALIDATOR, version, {"Run": f"exec {sys.executable} -u {{artifacts:path}}/v.py"},
                     files={"v.py": VALIDATOR_PY}, config={"threshold": 0.7})
    ws.component(OTHER, "1.0.0", {"Run": "exec sleep 100000"}, config={"level": 1})
    ws.component(OTHER, "2.0.0", {"Run": "exec sleep 100000"}, config={"level": 1})
    ws.component("com.test.Probe", "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/p.py"},
                 files={"p.py": PROBE})
    with running_agent(base / "root") as agent:
        code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{VALIDATOR}=1.0.0", "--merge", f"{OTHER}=1.0.0")
        assert code == 0, dep
        wait_until(lambda: "validating" in _log(agent, VALIDATOR), what="the validator to subscribe")
        yield agent, ws


def _log(agent: Cli, name: str) -> str:
    return agent.log(name)


def _deploy(agent: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    return agent.deploy(*args)


def _update(**conf: Any) -> list[str]:
    return ["--update-config", json.dumps({VALIDATOR: {"MERGE": conf}})]


def _state(agent: Cli) -> dict[str, tuple[str, Any]]:
    return {c["componentName"]: (c["version"], c["configuration"]) for c in agent.json("component", "list")}


def _asked(agent: Cli, deployment_id: str) -> list[str]:
    return [line.split("] ", 1)[-1] for line in _log(agent, VALIDATOR).splitlines()
            if f"validate {deployment_id}" in line]


def test_accepted_configuration_is_applied_after_validation(env: tuple[Cli, Workspace]) -> None:
    agent, _ = env
    code, dep = _deploy(agent, *_update(threshold=0.5))
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    # Asked with the proposed value while the current one was still the old one.
    assert _asked(agent, dep["deploymentId"]) == [f"validate {dep['deploymentId']} proposed=0.5 current=0.7"]
    assert _state(agent)[VALIDATOR][1]["threshold"] == 0.5


def test_rejected_configuration_fails_the_deployment_and_changes_nothing(env: tuple[Cli, Workspace]) -> None:
    agent, ws = env
    before = _state(agent)
    # The same deployment also updates another component: nothing of it is applied either.
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{OTHER}=2.0.0", *_update(threshold=5))
    assert code != 0 and dep["status"] == "FAILED", dep
    details = dep["deploymentStatusDetails"]
    assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE", details
    assert details["deploymentFailureCause"] == "CONFIGURATION_REJECTED", details
    assert details["deploymentErrorStack"] == [
        f"{VALIDATOR} rejected its new configuration: threshold must be within [0, 1], got 5; nothing was changed"]
    current = before[VALIDATOR][1]["threshold"]
    assert _asked(agent, dep["deploymentId"]) == [f"validate {dep['deploymentId']} proposed=5 current={current}"]
    assert _state(agent) == before


def test_no_report_in_time_fails_the_deployment(env: tuple[Cli, Workspace]) -> None:
    agent, _ = env
    before = _state(agent)
    code, dep = _deploy(agent, *_update(threshold=0.2, silent=True), "--validation-timeout", "2")
    assert code != 0 and dep["status"] == "FAILED", dep
    details = dep["deploymentStatusDetails"]
    assert details["deploymentFailureCause"] == "CONFIGURATION_VALIDATION_TIMEOUT", details
    assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE", details
    assert f"no configuration validity report within 2 s from {VALIDATOR}" in details["deploymentErrorStack"][0]
    assert len(_asked(agent, dep["deploymentId"])) == 1
    assert _state(agent) == before


def test_only_components_keeping_their_version_are_asked(env: tuple[Cli, Workspace]) -> None:
    agent, ws = env
    # Another component's configuration change does not ask the validator about its own (unchanged) one.
    code, dep = _deploy(agent, "--update-config", json.dumps({OTHER: {"MERGE": {"level": 2}}}))
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    assert _asked(agent, dep["deploymentId"]) == []
    # A new version restarts with its configuration: not validated (as on Greengrass), even a "bad" one.
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{VALIDATOR}=2.0.0", *_update(threshold=7))
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    assert _asked(agent, dep["deploymentId"]) == []
    assert _state(agent)[VALIDATOR] == ("2.0.0", {"threshold": 7})


def test_validity_report_bad_input(env: tuple[Cli, Workspace]) -> None:
    agent, ws = env
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", "com.test.Probe=1.0.0")
    assert code == 0, dep
    wait_until(lambda: "probe done" in _log(agent, "com.test.Probe"), what="the probe")
    log = _log(agent, "com.test.Probe")
    assert "no-report InvalidArgumentsError configurationValidityReport must be an object" in log, log
    assert "bad-status InvalidArgumentsError configurationValidityReport.status must be one of ACCEPTED, " \
           "REJECTED, got 'MAYBE'" in log, log
    assert "no-id InvalidArgumentsError configurationValidityReport.deploymentId is required" in log, log
    assert "unknown InvalidArgumentsError deployment no-such-deployment is not waiting for a configuration " \
           "validity report from com.test.Probe" in log, log
