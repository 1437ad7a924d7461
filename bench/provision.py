"""`roost device add` to the first deployment SUCCEEDED on the new device, over real SSH and Ansible.

A real OpenSSH server (Debian's sshd on 127.0.0.1, a free port, its own config and host key), a fresh
local account per route holding the hub's key, a real `roost hub serve`. Routes, each timed step by step
(the hub's own step timings) and end to end (`device add` start -> a hub deployment of a sample
component SUCCEEDED with the component RUNNING on the new device):

* ``index`` — `roost device add` whose device installs the dependencies from the package index it
  reaches (here: PyPI through the machine's network; the account has no pip cache);
* ``wheelhouse`` — `roost device add --wheelhouse`: the dependencies come from the hub
  (`roost hub wheelhouse build` first, timed on its own);
* ``manual`` — the README's hand steps, typed over SSH by a person: a venv, `pip install` from the same
  wheelhouse, `roost device enroll-token`, `roost agent start --hub --enroll-token --detach`.

Run as root (it creates accounts): `make bench-provision` -> bench/results-provision.json.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-provision.json"
COMPONENT = "com.example.BenchProvisioned"


def roost(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def roost_json(*args: str, timeout: float = 1800) -> Any:
    proc = roost(*args, "--json", timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"roost {' '.join(args)} exited {proc.returncode}: {proc.stdout} {proc.stderr}")
    return json.loads(proc.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the process exited") from None
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_sshd(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_ed25519")], check=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_ed25519'}\nPidFile {folder / 'sshd.pid'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin no\n")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def make_account(key: str) -> str:
    name = f"rbench{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)
    ssh = Path(f"/home/{name}/.ssh")
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(key + "\n")
    os.chmod(ssh / "authorized_keys", 0o600)
    subprocess.run(["chown", "-R", f"{name}:{name}", str(ssh)], check=True)
    return name


def drop_account(name: str, venv: str) -> None:
    roost_bin = Path(f"/home/{name}/{venv}/bin/roost")
    if roost_bin.exists():
        subprocess.run(["runuser", "-u", name, "--", str(roost_bin), "agent", "stop", "--root", f"/home/{name}/.roost"],
                       capture_output=True, timeout=180, check=False)
    for _ in range(40):  # the agent's last processes may take a moment to exit after `agent stop`
        if subprocess.run(["userdel", "-r", name], capture_output=True, check=False).returncode in (0, 6):
            return
        time.sleep(0.5)


def write_component(folder: Path) -> tuple[Path, Path]:
    art = folder / "art"
    art.mkdir()
    (art / "main.py").write_text("import time\nprint('up', flush=True)\nwhile True:\n    time.sleep(1)\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text('RecipeFormatVersion: "2020-01-25"\n'
                      f"ComponentName: {COMPONENT}\nComponentVersion: \"1.0.0\"\n"
                      "Manifests:\n  - Platform:\n      os: linux\n"
                      "    Lifecycle:\n      Run: python3 -u {artifacts:path}/main.py\n"
                      "    Artifacts:\n      - URI: greengrass:main.py\n")
    return recipe, art


def deploy(hub: list[str], device: str) -> float:
    """Seconds from `deployment create` to SUCCEEDED with the component RUNNING."""
    started = time.monotonic()
    out = roost_json("deployment", "create", "--target", f"device:{device}", "--component", f"{COMPONENT}=1.0.0",
                     "--wait", "--wait-timeout", "300", *hub)
    if out["status"] not in ("COMPLETED", "SUCCEEDED"):
        raise RuntimeError(f"deployment ended {out['status']}")
    while roost_json("device", "show", device, *hub)["components"].get(COMPONENT, {}).get("state") != "RUNNING":
        time.sleep(0.2)
    return time.monotonic() - started


def via_hub(hub: list[str], key: str, port: int, device: str, *extra: str) -> dict[str, Any]:
    account = make_account(key)
    try:
        started = time.monotonic()
        out = roost_json("device", "add", device, "--ssh", f"{account}@127.0.0.1:{port}", *extra, *hub)
        added = time.monotonic() - started
        deployed = deploy(hub, device)
        return {"device_add_s": round(added, 2), "deployment_s": round(deployed, 2),
                "total_s": round(added + deployed, 2), "status": out["status"],
                "steps_s": {s["name"]: s["seconds"] for s in out["steps"] if s["status"] != "SKIPPED"}}
    finally:
        drop_account(account, ".local/share/roost/venv")


def manual(hub: list[str], hub_url: str, key_file: Path, key: str, port: int, device: str) -> dict[str, Any]:
    """The README's hand steps over SSH (as a person would type them), dependencies from the same wheelhouse."""
    account = make_account(key)
    ssh = ["ssh", "-F", "/dev/null", "-i", str(key_file), "-p", str(port), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", f"{account}@127.0.0.1"]
    steps: dict[str, float] = {}

    def step(name: str, command: str) -> None:
        t = time.monotonic()
        proc = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{name}: {proc.stderr[-1500:]}")
        steps[name] = round(time.monotonic() - t, 2)

    try:
        started = time.monotonic()
        step("create venv", "python3 -m venv ~/roost-venv")
        wheel = next(p.name for p in Path(hub_root).glob("dist/roost-*.whl"))
        step("install roost", f"~/roost-venv/bin/pip install -q --no-index --find-links {hub_url}/v1/dist/wheelhouse/ "
                              f"{hub_url}/v1/dist/{wheel}")
        t = time.monotonic()
        token = roost_json("device", "enroll-token", *hub)["token"]
        steps["enroll-token"] = round(time.monotonic() - t, 2)
        step("start agent", f"~/roost-venv/bin/roost agent start --root ~/.roost --detach --hub {hub_url} "
                            f"--enroll-token {token} --thing-name {device}")
        added = time.monotonic() - started
        deployed = deploy(hub, device)
        return {"device_add_s": round(added, 2), "deployment_s": round(deployed, 2),
                "total_s": round(added + deployed, 2), "steps_s": steps}
    finally:
        drop_account(account, "roost-venv")


hub_root = ""


def main() -> None:
    global hub_root
    if os.geteuid() != 0:
        sys.exit("run as root: the bench creates local accounts")
    base = Path(tempfile.mkdtemp(prefix="roost-bench-prov-"))
    os.chmod(base, 0o755)
    (base / "sshd").mkdir()
    sshd, port = start_sshd(base / "sshd")
    hub_root = str(base / "hub")
    token = json.loads(roost("hub", "init", "--root", hub_root, "--json").stdout)["token"]
    hub_port = free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    hub_proc = subprocess.Popen([sys.executable, "-m", "roost", "hub", "serve", "--root", hub_root, "--port",
                                 str(hub_port), "--log-level", "warning"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "load_avg_1m": round(os.getloadavg()[0], 2)}}
    try:
        wait_port(hub_port, hub_proc)
        hub = ["--hub", hub_url, "--token", token]
        key = roost("hub", "ssh-key", "--root", hub_root).stdout.strip()
        recipe, art = write_component(base)
        roost_json("component", "publish", "--recipe", str(recipe), "--artifacts", str(art), *hub)
        t = time.monotonic()
        wheels = roost_json("hub", "wheelhouse", "build", "--root", hub_root)["wheels"]
        results["wheelhouse_build"] = {"seconds": round(time.monotonic() - t, 2), "wheels": len(wheels),
                                       "mb": round(sum(p.stat().st_size for p in Path(hub_root, "wheelhouse")
                                                       .glob("*.whl")) / 1e6, 1)}
        routes = sys.argv[1:] or ["wheelhouse", "manual", "index"]
        for route in routes:
            print(f"route {route} ...", flush=True)
            if route == "index":
                results["index"] = via_hub(hub, key, port, "bench-index")
            elif route == "wheelhouse":
                results["wheelhouse"] = via_hub(hub, key, port, "bench-wheelhouse", "--wheelhouse")
            elif route == "manual":
                results["manual"] = manual(hub, hub_url, Path(hub_root) / "ssh" / "id_ed25519", key, port,
                                           "bench-manual")
            print(json.dumps(results[route]), flush=True)
        results["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    finally:
        hub_proc.terminate()
        hub_proc.wait(timeout=30)
        sshd.terminate()
        sshd.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
