"""`roost component publish` of whole artifact folders, through the real CLI (in process) and a real hub.

Both layouts (flat ``DIR/`` and ``DIR/NAME/VERSION/``), nested files, the recipe file skipped when it
lives in the folder, and the local side's refusals (links out, special files, the limits).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from roost.cli.component import collect_artifacts
from roost.cli.main import app
from roost.errors import InvalidInputError
from tests.hub.conftest import HubServer, make_recipe

runner = CliRunner()


def _publish(hub: HubServer, *args: str) -> Any:
    return runner.invoke(app, ["component", "publish", "--hub", hub.url, "--token", hub.token, *args],
                         catch_exceptions=False)


def _files(result: Any) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    return {a["file"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]}


def _tree(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TREE = {"hello.py": "from lib.greet import greet\nprint(greet())\n", "lib/__init__.py": "",
        "lib/greet.py": "def greet():\n    return 'hi'\n", "src/deep/util.py": "X = 1\n"}


def test_nested_layout_publishes_every_file(hub_server: HubServer, tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "folder.yaml"
    recipe.parent.mkdir()
    recipe.write_bytes(make_recipe("com.example.Tree", "1.0.0", ("hello.py",)))
    _tree(tmp_path / "artifacts" / "com.example.Tree" / "1.0.0", TREE)
    (tmp_path / "artifacts" / "com.example.Tree" / "1.0.0" / "empty").mkdir()
    result = _publish(hub_server, "--recipe", str(recipe), "--artifacts", str(tmp_path / "artifacts"), "--json")
    assert _files(result) == {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in TREE.items()}
    assert "layout DIR/NAME/VERSION/" in result.stderr and "4 file(s)" in result.stderr
    r = httpx.get(f"{hub_server.url}/v1/artifacts/com.example.Tree/1.0.0/src/deep/util.py",
                  headers={"Authorization": f"Bearer {hub_server.token}"})
    assert r.status_code == 200 and r.text == "X = 1\n"


def test_flat_folder_skips_its_recipe_and_says_so(hub_server: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "comp"
    _tree(folder, TREE)
    (folder / "recipe.yaml").write_bytes(make_recipe("com.example.Flat", "1.0.0", ("hello.py",)))
    result = _publish(hub_server, str(folder), "--json")
    assert set(_files(result)) == set(TREE)
    assert "layout flat DIR/" in result.stderr and "skipped the recipe file recipe.yaml" in result.stderr
    # The same with --recipe inside --artifacts.
    (folder / "recipe.yaml").write_bytes(make_recipe("com.example.Flat", "2.0.0", ("hello.py",)))
    result = _publish(hub_server, "--recipe", str(folder / "recipe.yaml"), "--artifacts", str(folder), "--json")
    assert set(_files(result)) == set(TREE)


def test_a_folder_argument_with_the_nested_layout(hub_server: HubServer, tmp_path: Path) -> None:
    base = tmp_path / "ws"
    _tree(base / "com.example.Arg" / "1.0.0", TREE)
    (base / "recipe.yaml").write_bytes(make_recipe("com.example.Arg", "1.0.0", ("hello.py",)))
    result = _publish(hub_server, str(base), "--json")
    assert set(_files(result)) == set(TREE)  # the recipe is outside the chosen folder: nothing to skip
    assert "layout DIR/NAME/VERSION/" in result.stderr and "skipped" not in result.stderr


def test_the_nested_layout_wins_when_both_could_apply(hub_server: HubServer, tmp_path: Path) -> None:
    base = tmp_path / "both"
    _tree(base, {"hello.py": "print('flat')\n", "notes.txt": "not published"})
    _tree(base / "com.example.Both" / "1.0.0", {"hello.py": "print('nested')\n", "lib/x.py": ""})
    recipe = tmp_path / "both.yaml"
    recipe.write_bytes(make_recipe("com.example.Both", "1.0.0", ("hello.py",)))
    files = _files(_publish(hub_server, "--recipe", str(recipe), "--artifacts", str(base), "--json"))
    assert files == {"hello.py": hashlib.sha256(b"print('nested')\n").hexdigest(),
                     "lib/x.py": hashlib.sha256(b"").hexdigest()}
    # Another version has no NAME/VERSION folder: the flat folder is taken, subfolders and all.
    recipe.write_bytes(make_recipe("com.example.Both", "2.0.0", ("hello.py",)))
    files = _files(_publish(hub_server, "--recipe", str(recipe), "--artifacts", str(base), "--json"))
    assert set(files) == {"hello.py", "notes.txt", "com.example.Both/1.0.0/hello.py", "com.example.Both/1.0.0/lib/x.py"}


def test_a_link_to_a_file_inside_is_published_as_that_file(hub_server: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "links"
    _tree(folder, {"real/hello.py": "print('via link')\n"})
    (folder / "hello.py").symlink_to("real/hello.py")
    recipe = tmp_path / "links.yaml"
    recipe.write_bytes(make_recipe("com.example.Links", "1.0.0", ("hello.py",)))
    files = _files(_publish(hub_server, "--recipe", str(recipe), "--artifacts", str(folder), "--json"))
    digest = hashlib.sha256(b"print('via link')\n").hexdigest()
    assert files == {"hello.py": digest, "real/hello.py": digest}


def _refused(hub: HubServer, tmp_path: Path, folder: Path, name: str = "com.example.Refused") -> Any:
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_bytes(make_recipe(name, "1.0.0", ("hello.py",)))
    result = _publish(hub, "--recipe", str(recipe), "--artifacts", str(folder))
    assert result.exit_code == 3, result.output
    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {hub.token}"}) as admin:
        assert all(c["name"] != name for c in admin.get("/v1/components").json())
    return result


def test_unsafe_files_are_refused_before_any_upload(hub_server: HubServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    out = tmp_path / "out"
    _tree(out, {"hello.py": ""})
    (out / "lib").mkdir()
    (out / "lib" / "leak").symlink_to(secret)
    result = _refused(hub_server, tmp_path, out)
    assert "ARTIFACT_UNSAFE_FILE" in result.output and "lib/leak" in result.output and "outside" in result.output

    fifo = tmp_path / "fifo"
    _tree(fifo, {"hello.py": ""})
    os.mkfifo(fifo / "pipe")
    result = _refused(hub_server, tmp_path, fifo)
    assert "ARTIFACT_UNSAFE_FILE" in result.output and "pipe" in result.output and "FIFO" in result.output

    dirlink = tmp_path / "dirlink"
    _tree(dirlink, {"hello.py": "", "lib/a.py": ""})
    (dirlink / "alias").symlink_to("lib")
    result = _refused(hub_server, tmp_path, dirlink)
    assert "ARTIFACT_UNSAFE_FILE" in result.output and "alias" in result.output and "folder" in result.output


def test_missing_recipe_artifacts_and_bad_names_are_refused(hub_server: HubServer, tmp_path: Path) -> None:
    deep = tmp_path / "deep"
    _tree(deep, {"lib/hello.py": ""})
    result = _refused(hub_server, tmp_path, deep)
    assert "ARTIFACT_MISSING" in result.output and "hello.py" in result.output
    assert "DIR/NAME/VERSION" in result.output  # says which layouts were looked at

    odd = tmp_path / "odd"
    _tree(odd, {"hello.py": "", "sub/back\\slash.txt": ""})
    result = _refused(hub_server, tmp_path, odd)
    assert "INVALID_PATH" in result.output and "backslash" in result.output

    quoted = tmp_path / "quoted"
    _tree(quoted, {"hello.py": "", 'say "hi".txt': ""})
    result = _refused(hub_server, tmp_path, quoted)
    assert "INVALID_PATH" in result.output and "rename the file" in result.output

    nothing = _refused(hub_server, tmp_path, tmp_path / "does-not-exist")
    assert "ARTIFACT_MISSING" in nothing.output and "does-not-exist" in nothing.output


def test_the_local_limits_apply(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    _tree(folder, {f"f{i}.txt": "x" * 100 for i in range(5)})
    recipe = tmp_path / "r.yaml"
    with pytest.raises(InvalidInputError, match="more than 4 files and folders") as many:
        collect_artifacts(folder, recipe, "c@1", max_files=4)
    assert many.value.code == "ARTIFACT_FOLDER_TOO_LARGE"
    with pytest.raises(InvalidInputError, match="more than 250 bytes") as big:
        collect_artifacts(folder, recipe, "c@1", max_bytes=250)
    assert big.value.code == "ARTIFACT_FOLDER_TOO_LARGE"
    # A link's target counts against the bytes too (its content is uploaded).
    (folder / "again").symlink_to("f0.txt")
    with pytest.raises(InvalidInputError, match="more than 500 bytes"):
        collect_artifacts(folder, recipe, "c@1", max_bytes=500)
    files, skipped = collect_artifacts(folder, recipe, "c@1", max_files=6, max_bytes=600)
    assert sorted(files) == ["again", "f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt"] and skipped == []
