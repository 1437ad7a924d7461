"""Artifact folders as greengrass-cli brings them: every file and folder of ``A/<name>/<version>/``,
recipe-listed artifacts still verified, links never followed out, special files refused, bounded.

The first tests call :mod:`roost.agent.artifacts` directly; the ``slow`` ones deploy through a real
agent process with recipes in the forms AWS's documentation and templates use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import textwrap
import zipfile
from pathlib import Path

import pytest

from roost.agent import artifacts
from roost.agent.artifacts import copy_artifact_folder, install_artifacts
from roost.agent.errors import ArtifactError
from roost.recipe import Artifact, ArtifactPermission
from tests.agent.helpers import wait_until
from tests.conftest import Cli


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dest, unz = tmp_path / "A" / "c" / "1.0.0", tmp_path / "store", tmp_path / "unz"
    src.mkdir(parents=True)
    return src, dest, unz


# -- the copy itself ------------------------------------------------------------------------------------


def test_every_file_and_nested_folder_arrives(tmp_path: Path) -> None:
    src, dest, unz = _folder(tmp_path)
    (src / "hello.py").write_text("print('hi')")
    (src / "lib" / "deep").mkdir(parents=True)
    (src / "lib" / "deep" / "util.py").write_text("X = 1")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "empty").mkdir()
    (src / "alias.py").symlink_to("lib/deep/util.py")  # inside the folder: kept as a link
    (src / "lib" / "up").symlink_to("..")
    install_artifacts("c", "1.0.0", [], src, dest, unz, whole_folder=True)
    assert (dest / "hello.py").read_text() == "print('hi')"
    assert (dest / "lib" / "deep" / "util.py").read_text() == "X = 1"
    assert (dest / "empty").is_dir()
    assert os.readlink(dest / "alias.py") == os.path.join("lib", "deep", "util.py")
    assert (dest / "alias.py").read_text() == "X = 1"
    assert (dest / "lib" / "up").resolve() == dest.resolve()
    assert _mode(dest / "hello.py") == 0o600
    assert _mode(dest / "run.sh") == 0o700  # the source's execute bit is kept for the owner
    assert _mode(dest / "lib") == 0o755


def test_listed_artifacts_still_verified(tmp_path: Path) -> None:
    src, dest, unz = _folder(tmp_path)
    (src / "main.py").write_text("print(1)")
    (src / "extra.txt").write_text("x")
    good = Artifact(uri="s3://b/main.py", digest=_b64(b"print(1)"),
                    permission=ArtifactPermission(read="ALL", execute="ALL"))
    install_artifacts("c", "1.0.0", [good], src, dest, unz, whole_folder=True)
    assert _mode(dest / "main.py") == 0o755  # the recipe's Permission wins for a listed file
    assert (dest / "extra.txt").read_text() == "x"

    bad = Artifact(uri="s3://b/main.py", digest=_b64(b"something else"))
    with pytest.raises(ArtifactError, match=r"main\.py failed its SHA-256 check") as info:
        install_artifacts("c", "1.0.0", [bad], src, tmp_path / "store2", unz, whole_folder=True)
    assert info.value.code == "ARTIFACT_DIGEST_MISMATCH"
    assert not (tmp_path / "store2" / "main.py").exists()

    with pytest.raises(ArtifactError, match=r"artifact gone\.py .* not found") as info:
        install_artifacts("c", "1.0.0", [Artifact(uri="s3://b/gone.py")], src, tmp_path / "store3", unz,
                          whole_folder=True)
    assert info.value.code == "ARTIFACT_MISSING"
    assert not (tmp_path / "store3" / "extra.txt").exists()  # checked before anything is copied


def test_symlink_out_of_the_folder_refused(tmp_path: Path) -> None:
    src, dest, _ = _folder(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root's")
    (src / "ok.py").write_text("")
    (src / "sub").mkdir()
    (src / "sub" / "leak").symlink_to(secret)
    with pytest.raises(ArtifactError, match=r"sub/leak .* is a symlink to .*secret\.txt, outside") as info:
        copy_artifact_folder("c", "1.0.0", src, dest)
    assert info.value.code == "ARTIFACT_UNSAFE_FILE"
    assert not dest.exists()  # nothing copied

    (src / "sub" / "leak").unlink()
    (src / "sub" / "etc").symlink_to("/etc")
    with pytest.raises(ArtifactError, match="outside") as info:
        copy_artifact_folder("c", "1.0.0", src, dest)
    (src / "sub" / "etc").unlink()
    (src / "sub" / "dangling").symlink_to(src / "nothing-here")
    with pytest.raises(ArtifactError, match="not a file or folder") as info:
        copy_artifact_folder("c", "1.0.0", src, dest)
    assert info.value.code == "ARTIFACT_UNSAFE_FILE"


def test_file_swapped_for_a_link_after_the_scan_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest, _ = _folder(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root's")
    (src / "a.txt").write_text("fine")
    real_scan = artifacts._scan_folder

    def scan_then_swap(*args: object) -> list:
        entries = real_scan(*args)  # type: ignore[arg-type]
        (src / "a.txt").unlink()
        (src / "a.txt").symlink_to(secret)
        return entries

    monkeypatch.setattr(artifacts, "_scan_folder", scan_then_swap)
    with pytest.raises(ArtifactError, match="changed while being copied") as info:
        copy_artifact_folder("c", "1.0.0", src, dest)
    assert info.value.code == "ARTIFACT_UNSAFE_FILE"
    assert not (dest / "a.txt").exists()


def test_special_files_refused(tmp_path: Path) -> None:
    src, dest, _ = _folder(tmp_path)
    os.mkfifo(src / "pipe")
    with pytest.raises(ArtifactError, match=r"pipe .* not a regular file or folder") as info:
        copy_artifact_folder("c", "1.0.0", src, dest)
    assert info.value.code == "ARTIFACT_UNSAFE_FILE"


def test_size_and_count_bounds(tmp_path: Path) -> None:
    src, dest, _ = _folder(tmp_path)
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * 100)
    with pytest.raises(ArtifactError, match="more than 4 files and folders") as info:
        copy_artifact_folder("c", "1.0.0", src, dest, max_files=4)
    assert info.value.code == "ARTIFACT_FOLDER_TOO_LARGE"
    with pytest.raises(ArtifactError, match="more than 250 bytes") as info:
        copy_artifact_folder("c", "1.0.0", src, dest, max_bytes=250)
    assert info.value.code == "ARTIFACT_FOLDER_TOO_LARGE"
    assert not dest.exists()
    assert len(copy_artifact_folder("c", "1.0.0", src, dest, max_files=5, max_bytes=500)) == 5


def test_unarchived_files_get_the_recipe_permission(tmp_path: Path) -> None:
    src, dest, unz = _folder(tmp_path)
    with zipfile.ZipFile(src / "app.zip", "w") as zf:
        zf.writestr("app/main.py", "print(1)")
        zf.writestr("app/bin/tool", "#!/bin/sh\n")
    art = Artifact(uri="s3://b/app.zip", unarchive="ZIP", permission=ArtifactPermission(read="ALL", execute="OWNER"))
    install_artifacts("c", "1.0.0", [art], src, dest, unz, whole_folder=True)
    out = unz / "app" / "app"
    assert _mode(out / "main.py") == 0o744
    assert _mode(out / "bin" / "tool") == 0o744
    assert _mode(out / "bin") == 0o755
    private = Artifact(uri="s3://b/app.zip", unarchive="ZIP")  # Read OWNER, Execute NONE by default
    install_artifacts("c", "1.0.0", [private], src, dest, unz, whole_folder=True)
    # Owner and others follow the new Permission; the group's read/execute bits stay (the workspace
    # shares artifacts with the component's group, so taking them away would only be momentary).
    assert _mode(out / "main.py") & 0o707 == 0o600
    assert _mode(out / "bin") & 0o707 == 0o700


# -- through a real agent -------------------------------------------------------------------------------

# AWS's "create your first component" recipe: no Artifacts section, the script is found in the
# artifact folder greengrass-cli copies whole.
HELLO_RECIPE = """\
---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.HelloWorld
ComponentVersion: '1.0.0'
ComponentDescription: My first AWS IoT Greengrass component.
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration:
    Message: world
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      Run: |
        python3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
"""

HELLO_SCRIPT = textwrap.dedent("""\
    import sys
    sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/lib/greet")
    from greeting import greet
    print(greet(sys.argv[1]), flush=True)
    import time
    time.sleep(1000)
""")

# gdk template style: Platform os all, Uri spelled as the templates spell it.
GDK_RECIPE = """\
---
RecipeFormatVersion: "2020-01-25"
ComponentName: "com.example.Gdk"
ComponentVersion: "1.0.0"
ComponentPublisher: "Amazon"
Manifests:
  - Platform:
      os: all
    Artifacts:
      - Uri: "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/main.py"
        Digest: "{digest}"
    Lifecycle:
      run: "python3 -u {{artifacts:path}}/main.py"
"""

GDK_MAIN = textwrap.dedent("""\
    import json, pathlib, time
    settings = pathlib.Path(__file__).with_name("data") / "settings.json"
    print("gdk", json.loads(settings.read_text())["v"], flush=True)
    time.sleep(1000)
""")


def _deploy(cli: Cli, recipes: Path, artifacts: Path, *merge: str) -> dict:
    args = [arg for m in merge for arg in ("--merge", m)]
    proc = cli.run("deployment", "create", "--recipe-dir", str(recipes), "--artifact-dir", str(artifacts), *args,
                   "--wait", "--timeout", "60", "--json")
    assert proc.stdout, proc.stderr
    out: dict = json.loads(proc.stdout)
    out["_exit"] = proc.returncode
    return out


@pytest.mark.slow
def test_recipe_without_artifacts_runs_helper_files_from_the_folder(agent: Cli, tmp_path: Path) -> None:
    recipes, artifacts = tmp_path / "recipes", tmp_path / "artifacts"
    recipes.mkdir()
    (recipes / "com.example.HelloWorld-1.0.0.yaml").write_text(HELLO_RECIPE)
    hello = artifacts / "com.example.HelloWorld" / "1.0.0"
    (hello / "lib" / "greet").mkdir(parents=True)
    (hello / "hello_world.py").write_text(HELLO_SCRIPT)
    (hello / "lib" / "greet" / "greeting.py").write_text("def greet(name):\n    return f'Hello, {name}!'\n")
    gdk = artifacts / "com.example.Gdk" / "1.0.0"
    (gdk / "data").mkdir(parents=True)
    (gdk / "main.py").write_text(GDK_MAIN)
    (gdk / "data" / "settings.json").write_text('{"v": 42}')
    (recipes / "gdk.yaml").write_text(GDK_RECIPE.format(digest=_b64(GDK_MAIN.encode())))

    out = _deploy(agent, recipes, artifacts, "com.example.HelloWorld=1.0.0", "com.example.Gdk=1.0.0")
    assert out["status"] == "SUCCEEDED", out
    store = agent.root / "packages" / "artifacts"
    assert (store / "com.example.HelloWorld" / "1.0.0" / "lib" / "greet" / "greeting.py").is_file()
    assert (store / "com.example.Gdk" / "1.0.0" / "data" / "settings.json").is_file()
    log = agent.root / "logs" / "com.example.HelloWorld.log"
    wait_until(lambda: log.exists() and "Hello, world!" in log.read_text(), what="the greeting")
    gdk_log = agent.root / "logs" / "com.example.Gdk.log"
    wait_until(lambda: gdk_log.exists() and "gdk 42" in gdk_log.read_text(), what="the gdk component's output")
    states = {c["componentName"]: c["state"] for c in agent.json("component", "list")}
    assert states["com.example.HelloWorld"] == states["com.example.Gdk"] == "RUNNING"


@pytest.mark.slow
def test_folder_deployments_still_refuse_bad_digests_and_outward_links(agent: Cli, tmp_path: Path) -> None:
    recipes, artifacts = tmp_path / "recipes", tmp_path / "artifacts"
    recipes.mkdir()
    gdk = artifacts / "com.example.Gdk" / "1.0.0"
    gdk.mkdir(parents=True)
    (gdk / "main.py").write_text(GDK_MAIN)
    (recipes / "gdk.yaml").write_text(GDK_RECIPE.format(digest=_b64(b"not the file")))
    out = _deploy(agent, recipes, artifacts, "com.example.Gdk=1.0.0")
    assert out["status"] == "FAILED" and out["_exit"] != 0
    assert "main.py failed its SHA-256 check" in out["deploymentStatusDetails"]["deploymentErrorStack"][0]

    (recipes / "gdk.yaml").unlink()
    (recipes / "hello.yaml").write_text(HELLO_RECIPE)
    hello = artifacts / "com.example.HelloWorld" / "1.0.0"
    hello.mkdir(parents=True)
    (hello / "hello_world.py").write_text(HELLO_SCRIPT)
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    (hello / "config.txt").symlink_to(secret)
    out = _deploy(agent, recipes, artifacts, "com.example.HelloWorld=1.0.0")
    assert out["status"] == "FAILED" and out["_exit"] != 0
    stack = " ".join(out["deploymentStatusDetails"]["deploymentErrorStack"])
    assert "config.txt" in stack and "outside that folder" in stack
    assert not (agent.root / "packages" / "artifacts" / "com.example.HelloWorld" / "1.0.0" / "config.txt").exists()
    names = {c["componentName"] for c in agent.json("component", "list")}
    assert "com.example.HelloWorld" not in names
