"""Run the device playbook (``playbook/device.yml``) with ansible-runner, and turn its events into steps.

Per run, a private data dir (0700, under the hub root: ``ROOT/provision/runs/<id>``) holds the
inventory (the device's address, the account, the path of the hub's key: never the key itself), a
``known_hosts`` with the one pinned host key (Ansible's ssh runs with ``StrictHostKeyChecking=yes``
and no user configuration), an empty ``ansible.cfg`` (no machine-wide settings) and the runner's
artifacts, kept for troubleshooting (the newest :data:`KEEP_RUNS`).

Secrets: the one-time enrolment token and the become password are answered to Ansible's prompts
(``vars_prompt``, ``--ask-become-pass``) through ansible-runner's ``passwords`` (pexpect, in memory):
they are not extra vars, inventory variables or environment of the run, all of which the runner
writes into its artifacts. Step messages are masked with both before they leave this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from roost.hub.contract.provision import StepStatus
from roost.provision.errors import (
    BecomeError,
    HostKeyError,
    ProvisionError,
    ProvisionStepError,
    SshAuthError,
    SshUnreachableError,
)
from roost.provision.host_keys import HostKey
from roost.provision.identity import HubIdentity
from roost.provision.target import SshTarget

logger = logging.getLogger(__name__)

PLAYBOOK = "device.yml"
KEEP_RUNS = 20
MAX_MESSAGE = 2000
#: A whole playbook run (its tasks have their own timeouts, the package install the longest).
RUN_TIMEOUT = 2400

TOKEN_PROMPT = r"Roost enrolment token:\s*$"
BECOME_PROMPT = r"BECOME password:\s*$"
_BECOME_FAILURE = re.compile(r"incorrect sudo password|sudo: a password is required|missing sudo password|"
                             r"privilege escalation|become password|is not in the sudoers file|"
                             r"timeout \(\d+s\) waiting for privilege escalation prompt", re.I)

OnStep = Callable[[str, StepStatus, str | None], None]


def playbook_text() -> str:
    return resources.files("roost.provision.playbook").joinpath(PLAYBOOK).read_text()


def playbook_tasks() -> list[str]:
    """The task names of the playbook, in order (the steps a run reports)."""
    plays = yaml.safe_load(playbook_text())
    return [str(task["name"]) for play in plays for task in play.get("tasks", [])]


@dataclass
class PlaybookRun:
    ident: str
    target: SshTarget
    host_key: HostKey
    identity: HubIdentity
    python: str
    extravars: dict[str, Any]
    runs_dir: Path
    enroll_token: str | None = None
    become_password: str | None = None
    on_step: OnStep = field(default=lambda _name, _status, _message: None)
    cancel: threading.Event = field(default_factory=threading.Event)
    timeout: int = RUN_TIMEOUT

    def mask(self, text: str) -> str:
        for secret in (self.enroll_token, self.become_password):
            if secret:
                text = text.replace(secret, "***")
        return text


def _private_dir(run: PlaybookRun) -> Path:
    run.runs_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run.runs_dir, 0o700)
    _prune(run.runs_dir)
    base = run.runs_dir / run.ident
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(mode=0o700)
    for sub in ("project", "inventory", "env", "tmp", "home"):
        (base / sub).mkdir(mode=0o700)
    (base / "project" / PLAYBOOK).write_text(playbook_text())
    (base / "known_hosts").write_text(run.host_key.known_hosts(run.target))
    (base / "ansible.cfg").write_text("# empty: no machine-wide Ansible settings apply to Roost's runs\n")
    return base


def _prune(runs_dir: Path) -> None:
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEEP_RUNS + 1] if len(runs) >= KEEP_RUNS else []:
        shutil.rmtree(old, ignore_errors=True)


def _inventory(run: PlaybookRun, base: Path) -> dict[str, Any]:
    ssh_args = (f"-F /dev/null -o UserKnownHostsFile={base / 'known_hosts'} -o GlobalKnownHostsFile=/dev/null "
                "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=15 "
                "-o ControlMaster=no -o ControlPath=none")
    host = {"ansible_host": run.target.host, "ansible_port": run.target.port, "ansible_user": run.target.user,
            "ansible_ssh_private_key_file": str(run.identity.private_key), "ansible_python_interpreter": run.python,
            "ansible_ssh_args": "", "ansible_ssh_common_args": ssh_args}
    return {"all": {"children": {"device": {"hosts": {run.target.host: host}}}}}


def _message(run: PlaybookRun, res: dict[str, Any]) -> str:
    parts: list[str] = []
    for key in ("msg", "module_stderr", "stderr", "stdout"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip()[-MAX_MESSAGE:])
    if not parts and res.get("results"):  # a loop: the first failed item
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _message(run, item)
    text = "\n".join(dict.fromkeys(parts)) or json.dumps(res, default=str)[:MAX_MESSAGE]
    return run.mask(text)[-MAX_MESSAGE:]


def run_playbook(run: PlaybookRun) -> None:
    """Run the playbook to its end (blocking; call it in a thread). Steps go to ``run.on_step``;
    a failure raises the error that names its step, the host and Ansible's message."""
    import ansible_runner

    base = _private_dir(run)
    failed: dict[str, str] = {}
    current: list[str] = []

    def on_event(event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        task = str(data.get("task") or "")
        if kind == "playbook_on_task_start" and task:
            current[:] = [task]
            run.on_step(task, StepStatus.RUNNING, None)
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            run.on_step(task, StepStatus.CHANGED if res.get("changed") else StepStatus.OK, None)
        elif kind == "runner_on_skipped":
            run.on_step(task, StepStatus.SKIPPED, None)
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            message = _message(run, data.get("res") or {})
            failed.update(task=task, message=message, kind=kind)
            run.on_step(task, StepStatus.FAILED, message)
        return True  # keep the event in the artifacts (no secrets are in them)

    passwords = {TOKEN_PROMPT: run.enroll_token or ""}
    cmdline = None
    if run.become_password is not None:
        passwords[BECOME_PROMPT] = run.become_password
        cmdline = "--ask-become-pass"
    extravars = dict(run.extravars)
    if run.enroll_token is None:
        extravars["roost_enroll_token"] = ""  # no prompt for runs that do not enrol
    env = {"ANSIBLE_CONFIG": str(base / "ansible.cfg"), "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(base / "tmp"), "ANSIBLE_HOME": str(base / "home"),
           "ANSIBLE_DEPRECATION_WARNINGS": "False", "ANSIBLE_SYSTEM_WARNINGS": "False",
           "ANSIBLE_TIMEOUT": "15", "HOME": str(base / "home"),
           # ansible-playbook of this environment first (the hub's venv need not be on PATH)
           "PATH": os.pathsep.join([_ansible_bin(), os.environ.get("PATH", "/usr/bin:/bin")])}
    started = time.monotonic()
    result = ansible_runner.run(
        private_data_dir=str(base), ident="run", playbook=PLAYBOOK, inventory=_inventory(run, base),
        extravars=extravars, passwords=passwords, cmdline=cmdline, envvars=env, quiet=True,
        event_handler=on_event, cancel_callback=run.cancel.is_set, timeout=run.timeout, rotate_artifacts=1,
        # in memory only: without this the runner writes passwords (and the rest) into env/ files
        suppress_env_files=True, settings={"suppress_ansible_output": True, "pexpect_timeout": 5})
    logger.info("playbook on %s ended %s (rc %s) after %.1f s", run.target, result.status, result.rc,
                time.monotonic() - started)
    if result.status == "successful":
        return
    where = f"on {run.target}"
    if failed:
        step, message, kind = failed["task"], failed["message"], failed["kind"]
        if kind == "runner_on_unreachable":
            if "Host key verification failed" in message:
                raise HostKeyError(f"step {step} {where}: Ansible refused the host key: {message}",
                                   code="HOST_KEY_CHANGED")
            if "Permission denied" in message:
                raise SshAuthError(f"step {step} {where}: the device refused the hub's key: {message}")
            raise SshUnreachableError(f"step {step} {where}: unreachable: {message}")
        if step == "become" or _BECOME_FAILURE.search(message):
            raise BecomeError(f"step {step} {where}: become (sudo) was refused: {message}")
        raise ProvisionStepError(f"step {step} {where} failed: {message}")
    step = current[0] if current else "playbook"
    if result.status == "timeout":
        raise ProvisionStepError(f"step {step} {where}: the playbook did not end within {run.timeout} s",
                                 code="PROVISION_STEP_TIMEOUT")
    if result.status == "canceled":
        raise ProvisionError(f"step {step} {where}: the run was canceled (the hub is stopping)",
                             code="PROVISION_INTERRUPTED")
    tail = run.mask(_stdout_tail(result))
    if _BECOME_FAILURE.search(tail):
        raise BecomeError(f"step {step} {where}: become (sudo) was refused: {tail}")
    raise ProvisionStepError(f"step {step} {where}: ansible-playbook ended {result.status} (rc {result.rc}): {tail}")


def _stdout_tail(result: Any) -> str:
    try:
        return str(result.stdout.read())[-MAX_MESSAGE:].strip()
    except Exception:  # the artifacts may be gone
        return ""


def _ansible_bin() -> str:
    """The folder of ansible-playbook: this environment's (the hub's venv need not be on PATH), else PATH's."""
    beside = Path(sys.executable).parent
    if (beside / "ansible-playbook").exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise ProvisionError("ansible-playbook is not installed beside the hub (pip install ansible-core)",
                             code="ANSIBLE_MISSING")
    return str(Path(found).parent)
