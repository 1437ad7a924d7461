"""IPC flood benchmark: what unauthenticated and idle connections cost a real agent.

Starts a real agent through the CLI (``python -m roost agent start --detach``) in a private root
and reads its RSS (``VmRSS`` of ``/proc/PID/status``; ``VmHWM`` is the peak) at each phase:

1. ``baseline``: no connection;
2. ``big_partial``: N connections (``--partial``, default 500) that never authenticate, each
   sending the prelude of a frame claiming 1.4 MB followed by 64 KiB of data (as far as the
   socket takes it), measured while they are still open on the client side; then
   ``after_big_partial`` once they are closed;
3. ``max_preconnect_partial``: the worst an unauthenticated peer can make the agent buffer now:
   a frame just under the pre-CONNECT cap (8 KiB) sent but for its last byte, held open;
   then ``after_max_preconnect_partial``;
4. ``idle``: M connections (``--idle``, default 1500) that connect and send nothing; with the
   default cap (1024) the rest are refused with IPC_BUSY (counted); then ``after_idle``;
5. ``authenticated_idle``: K connections (``--authenticated``, default 500) that complete CONNECT
   (as the CLI principal, token from ROOT/cli.token) and stay idle; then ``after_authenticated``.

``--src DIR`` runs the agent from another source tree (e.g. a worktree of an older commit, to
measure "before"). The bench raises its own open-file soft limit as needed. Defaults run in well
under two minutes.

Usage::

    .venv/bin/python bench/ipc_flood.py [--partial N] [--idle M] [--authenticated K] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from roost.ipc import rpc  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MB (10^6 bytes)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


def prelude(total: int) -> bytes:
    head = struct.pack(">II", total, 0)
    return head + struct.pack(">I", zlib.crc32(head))


def open_sockets(path: str, n: int, deadline: float) -> list[socket.socket]:
    """``n`` connected non-blocking sockets (retrying while the listen backlog is full)."""
    socks: list[socket.socket] = []
    while len(socks) < n:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        while True:
            try:
                s.connect(path)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    s.close()
                    raise TimeoutError(f"only {len(socks)} of {n} connections within the deadline") from None
                time.sleep(0.001)
        socks.append(s)
    return socks


def send_some(s: socket.socket, data: bytes) -> int:
    try:
        return s.send(data)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        return 0


def drain(socks: list[socket.socket]) -> dict[str, int]:
    """What the agent sent back on each socket: IPC_BUSY refusals, other frames, nothing."""
    counts = {"busy": 0, "other_answer": 0, "no_answer": 0}
    for s in socks:
        try:
            data = s.recv(65536)
        except (BlockingIOError, ConnectionResetError):
            data = b""
        if b"IPC_BUSY" in data:
            counts["busy"] += 1
        elif data:
            counts["other_answer"] += 1
        else:
            counts["no_answer"] += 1
    return counts


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    socks.clear()


def settle(pid: int, seconds: float) -> dict[str, float]:
    time.sleep(seconds)
    return status(pid)


def raise_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(max(args.partial, args.idle, args.authenticated))
    root = Path(tempfile.mkdtemp(prefix="roost-flood-"))
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    extra = ["--ipc-max-connections", str(args.max_connections)] if args.max_connections else []
    start = subprocess.run([sys.executable, "-m", "roost", "agent", "start", "--detach", "--root", str(root), *extra],
                           capture_output=True, text=True, timeout=120, env=env, check=False)
    if start.returncode != 0:
        raise SystemExit(f"agent did not start: {start.stdout}{start.stderr}")
    pid = int((root / "agent.pid").read_text())
    path = str(root / "ipc.socket")
    phases: dict[str, dict[str, Any]] = {}
    socks: list[socket.socket] = []
    t0 = time.monotonic()
    try:
        phases["baseline"] = settle(pid, 2.0)
        log(f"baseline {phases['baseline']}")

        # 2. big partial frames before CONNECT
        socks = open_sockets(path, args.partial, time.monotonic() + 60)
        head = prelude(1_400_000)
        chunk = b"\0" * 65536
        sent = 0
        for s in socks:
            sent += send_some(s, head)
            sent += send_some(s, chunk)
        phases["big_partial"] = {**settle(pid, 1.0), "connections": args.partial, "bytes_sent": sent}
        phases["big_partial"].update(drain(socks))
        log(f"big_partial {phases['big_partial']}")
        close_all(socks)
        phases["after_big_partial"] = settle(pid, 2.0)
        log(f"after_big_partial {phases['after_big_partial']}")

        # 3. the largest partial frame the pre-CONNECT cap lets through, held open
        cap = args.preconnect_cap
        socks = open_sockets(path, args.partial, time.monotonic() + 60)
        for s in socks:
            send_some(s, prelude(cap) + b"\0" * (cap - 13))
        phases["max_preconnect_partial"] = {**settle(pid, 1.0), "connections": args.partial,
                                            "frame_bytes": cap, "sent_per_connection": cap - 1}
        log(f"max_preconnect_partial {phases['max_preconnect_partial']}")
        close_all(socks)
        phases["after_max_preconnect_partial"] = settle(pid, 2.0)
        log(f"after_max_preconnect_partial {phases['after_max_preconnect_partial']}")

        # 4. idle connections that never send anything
        socks = open_sockets(path, args.idle, time.monotonic() + 60)
        phases["idle"] = {**settle(pid, 1.0), "connections": args.idle}
        phases["idle"].update(drain(socks))
        log(f"idle {phases['idle']}")
        close_all(socks)
        phases["after_idle"] = settle(pid, 2.0)
        log(f"after_idle {phases['after_idle']}")

        # 5. authenticated idle connections
        token = (root / "cli.token").read_text()
        socks = open_sockets(path, args.authenticated, time.monotonic() + 60)
        for s in socks:
            send_some(s, rpc.connect_message(token))
        time.sleep(1.0)
        answers = drain(socks)
        phases["authenticated_idle"] = {**status(pid), "connections": args.authenticated, **answers}
        log(f"authenticated_idle {phases['authenticated_idle']}")
        close_all(socks)
        phases["after_authenticated"] = settle(pid, 2.0)
        log(f"after_authenticated {phases['after_authenticated']}")
        # After the agent's housekeeping pass (every 10 s) has run at least once more.
        phases["after_housekeeping"] = settle(pid, 11.0)
        log(f"after_housekeeping {phases['after_housekeeping']}")
    finally:
        close_all(socks)
        subprocess.run([sys.executable, "-m", "roost", "agent", "stop", "--root", str(root)], capture_output=True,
                       timeout=120, env=env, check=False)
        log_files = sorted(p.name for p in (root / "logs").iterdir()) if (root / "logs").is_dir() else []
        agent_log = root / "logs" / "agent.log"
        log_lines = agent_log.read_text(errors="replace").splitlines() if agent_log.exists() else []
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(root)], check=False)
    base = phases["baseline"]["VmRSS"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "src": str(args.src or REPO / "src"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "unit": "MB (10^6 bytes) of VmRSS / VmHWM from /proc/PID/status",
        "elapsed_s": round(time.monotonic() - t0, 1),
        "phases": phases,
        "delta_vs_baseline_mb": {k: round(v["VmRSS"] - base, 2) for k, v in phases.items()},
        "agent_log_files": log_files,
        "agent_log_lines": len(log_lines),
        "agent_log_refusal_lines": sum(1 for ln in log_lines if "refused" in ln),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partial", type=int, default=500, help="connections sending partial frames")
    parser.add_argument("--idle", type=int, default=1500, help="idle unauthenticated connections")
    parser.add_argument("--authenticated", type=int, default=500, help="idle authenticated connections")
    parser.add_argument("--preconnect-cap", type=int, default=8 * 1024, help="the agent's pre-CONNECT frame cap")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="the agent's --ipc-max-connections (default: the agent's own, 1024)")
    parser.add_argument("--src", default=None, help="run the agent from this source tree (PYTHONPATH)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
