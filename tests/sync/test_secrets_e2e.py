"""Secrets end to end: `roost secret put` on a real hub, a hub deployment with aws.greengrass.SecretManager's
cloudSecrets, an enrolled agent, and components written for Greengrass (awsiotsdk's GreengrassCoreIPCClientV2)
reading them with GetSecretValue; then the agent restarted with the hub down still serves them."""

from __future__ import annotations

import json
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_module
from tests.hub.conftest import free_port, hub_init
from tests.sync.conftest import Hub, roost, roost_json, wait_for

pytestmark = pytest.mark.slow

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf"
VALUE = "e2e-Secret-Value-4d3c2b1a"
READER, DENIED = "com.test.SecretReader", "com.test.NoSecretPolicy"

# Written for AWS IoT Greengrass with awsiotsdk; runs on Roost unchanged. The value goes to a file in
# the component's work folder, never to its log.
SDK = textwrap.dedent("""
    import sys, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ResourceNotFoundError, ServiceError, UnauthorizedError

    ipc = GreengrassCoreIPCClientV2()

    def attempt(label, **kwargs):
        try:
            return ipc.get_secret_value(**kwargs)
        except UnauthorizedError as err:
            print(label, "UnauthorizedError:", err.message, flush=True)
        except ResourceNotFoundError as err:
            print(label, "ResourceNotFoundError:", err.message, flush=True)
        except ServiceError as err:
            print(label, "ServiceError:", err.message, flush=True)

    got = attempt("by-name", secret_id="db-password")
    if got is not None:
        with open("secret.out.part", "w") as fh:
            fh.write(got.secret_value.secret_string)
        import os
        os.replace("secret.out.part", "secret.out")
        print("by-name ok", got.secret_id, got.version_stage, flush=True)
        by_arn = attempt("by-arn", secret_id=sys.argv[1], version_id=got.version_id)
        print("by-arn same", by_arn is not None and by_arn.secret_value.secret_string == got.secret_value.secret_string,
              flush=True)
        attempt("previous", secret_id=sys.argv[1], version_stage="AWSPREVIOUS")
        attempt("both", secret_id=sys.argv[1], version_id=got.version_id, version_stage="AWSCURRENT")
        attempt("unknown", secret_id="not-deployed")
    print("secrets done", flush=True)
    if got is not None:  # the test rotates the value on the hub, then asks us to read it with refresh
        import os, time
        while not os.path.exists("rotate"):
            time.sleep(0.1)
        fresh = attempt("refresh", secret_id="db-password", refresh=True)
        with open("rotated.part", "w") as fh:
            fh.write(fresh.secret_value.secret_string if fresh is not None else "none")
        os.replace("rotated.part", "rotated.out")
    threading.Event().wait()
""")


def _recipe(base: Path, name: str, access: dict[str, object]) -> tuple[Path, Path]:
    art = base / f"{name}-art"
    art.mkdir(parents=True)
    (art / "reader.py").write_text(SDK)
    recipe = base / f"{name}.json"
    recipe.write_text(json.dumps({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "ComponentDependencies": {"aws.greengrass.SecretManager": {"VersionRequirement": "^2.0.0",
                                                                   "DependencyType": "HARD"}},
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": access}},
        # awsiotsdk is installed in the test environment, not in the component's own: name that interpreter.
        "Manifests": [{"Platform": {"os": "linux"},
                       "Lifecycle": {"Run": f"exec {sys.executable} -u {{artifacts:path}}/reader.py {ARN}"},
                       "Artifacts": [{"URI": f"s3://bucket/{name}/1.0.0/reader.py"}]}]}))
    return recipe, art


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    token = hub_init(tmp_path / "hub")
    server = Hub(tmp_path / "hub", free_port(), token, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _plaintext_in(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_file() and VALUE.encode() in p.read_bytes()]


def test_components_read_deployed_secrets_sealed_and_offline(hub: Hub, tmp_path: Path) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    assert stat.S_IMODE((hub.root / "secrets.key").stat().st_mode) == 0o600  # made by `roost hub init`
    (tmp_path / "value").write_text(VALUE)
    put = roost(*hub.cli("secret", "put", ARN, "--value-file", str(tmp_path / "value")))
    assert put.returncode == 0 and VALUE not in put.stdout + put.stderr, put.stdout + put.stderr
    allow = {"aws.greengrass.SecretManager": {f"{READER}:secrets:1": {
        "operations": ["aws.greengrass#GetSecretValue"], "resources": ["*"]}}}
    for name, access in ((READER, allow), (DENIED, {})):
        recipe, art = _recipe(tmp_path / "pkg", name, access)
        published = roost(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
        assert published.returncode == 0, published.stdout + published.stderr

    root = tmp_path / "agent"
    token = roost_json(*hub.cli("device", "enroll-token"))["token"]
    started = roost("agent", "start", "--root", str(root), "--detach", "--hub", hub.url, "--enroll-token", token,
                    "--thing-name", "secret-dev")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        config = {"aws.greengrass.SecretManager": {"MERGE": {"cloudSecrets": [{"arn": ARN}]}}}
        deploy = roost(*hub.cli("deployment", "create", "--target", "device:secret-dev",
                                "--component", f"{READER}=1.0.0", "--component", f"{DENIED}=1.0.0",
                                "--component", "aws.greengrass.SecretManager=2.2.0",
                                "--update-config", json.dumps(config), "--wait", "--wait-timeout", "90", "--json"),
                       timeout=150)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        out = root / "work" / READER / "secret.out"
        wait_for(out.exists, timeout=60, what="the reader to write the secret")
        assert out.read_text() == VALUE
        reader_log = root / "logs" / f"{READER}.log"
        denied_log = root / "logs" / f"{DENIED}.log"
        wait_for(lambda: "secrets done" in reader_log.read_text() and denied_log.exists()
                 and "secrets done" in denied_log.read_text(), what="both components to finish")
        log = reader_log.read_text()
        assert f"by-name ok {ARN} ['AWSCURRENT']" in log and "by-arn same True" in log, log
        assert "previous ResourceNotFoundError: version stage AWSPREVIOUS of secret" in log, log
        assert "both ServiceError: versionId and versionStage are both set" in log, log
        assert "unknown ResourceNotFoundError: secret not-deployed is not on this device" in log, log
        denied = denied_log.read_text()
        assert "by-name UnauthorizedError:" in denied and f"on resource {ARN}" in denied, denied
        assert not (root / "work" / DENIED / "secret.out").exists()

        # Sealed at rest, readable by the agent's user only; the value is in no log and no state file.
        assert stat.S_IMODE((root / "secrets").stat().st_mode) == 0o700
        for name in ("key", "secrets.sealed"):
            assert stat.S_IMODE((root / "secrets" / name).stat().st_mode) == 0o600
        files = [p for p in root.rglob("*") if "work" not in p.relative_to(root).parts]
        assert _plaintext_in(files) == []
        assert _plaintext_in(list(hub.root.rglob("*")) + list(tmp_path.glob("hub-*.log"))) == []

        # A new value on the hub: a component asking with refresh gets it at once.
        (tmp_path / "value2").write_text(VALUE + "-v2")
        rotated = roost(*hub.cli("secret", "put", ARN, "--value-file", str(tmp_path / "value2")))
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        (root / "work" / READER / "rotate").touch()
        wait_for((root / "work" / READER / "rotated.out").exists, what="the reader's refreshed read")
        assert (root / "work" / READER / "rotated.out").read_text() == VALUE + "-v2"
        (root / "work" / READER / "rotate").unlink()

        # The agent restarted while the hub is down serves the secret from its sealed copy.
        hub.kill()
        assert roost("agent", "stop", "--root", str(root)).returncode == 0
        out.unlink()
        restarted = roost("agent", "start", "--root", str(root), "--detach")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        wait_for(out.exists, timeout=60, what="the reader to read the secret with the hub down")
        assert out.read_text() == VALUE + "-v2"
        agent_log = (root / "logs" / "agent.log").read_text()
        assert "cannot refresh the device's secrets from the hub" in agent_log
        assert VALUE not in agent_log
        assert _plaintext_in([p for p in root.rglob("*") if "work" not in p.relative_to(root).parts]) == []
    finally:
        roost("agent", "stop", "--root", str(root))


def test_a_local_only_agent_has_no_secrets_and_says_so(tmp_path: Path) -> None:
    """Without a hub there is no secret store: a local deployment's cloudSecrets deliver nothing (a note
    says so) and GetSecretValue answers ResourceNotFoundError naming the secret."""
    require_module("awsiot.greengrasscoreipc.clientv2")
    allow = {"aws.greengrass.SecretManager": {f"{READER}:secrets:1": {
        "operations": ["aws.greengrass#GetSecretValue"], "resources": ["*"]}}}
    recipe, art = _recipe(tmp_path / "pkg", READER, allow)
    recipes, artifacts = tmp_path / "recipes", tmp_path / "artifacts" / READER / "1.0.0"
    recipes.mkdir()
    artifacts.mkdir(parents=True)
    (recipes / recipe.name).write_text(recipe.read_text())
    (artifacts / "reader.py").write_text((art / "reader.py").read_text())
    root = tmp_path / "local"
    assert roost("agent", "start", "--root", str(root), "--detach", "--thing-name", "local-dev").returncode == 0
    try:
        config = {"aws.greengrass.SecretManager": {"MERGE": {"cloudSecrets": [{"arn": ARN}]}}}
        out = roost("deployment", "create", "--root", str(root), "--recipe-dir", str(recipes), "--artifact-dir",
                    str(tmp_path / "artifacts"), "--merge", f"{READER}=1.0.0", "--merge",
                    "aws.greengrass.SecretManager=2.2.0", "--update-config", json.dumps(config), "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        notes = "\n".join(json.loads(out.stdout)["deploymentStatusDetails"]["roostNotes"])
        assert "aws.greengrass.SecretManager: a local deployment delivers no secrets" in notes, notes
        log = root / "logs" / f"{READER}.log"
        wait_for(lambda: log.exists() and "secrets done" in log.read_text(), what="the reader")
        assert "by-name ResourceNotFoundError: secret db-password is not on this device" in log.read_text()
    finally:
        roost("agent", "stop", "--root", str(root))
