"""`roost logs NAME [--lines N] [--follow]` on a real log file, through the real CLI process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.agent.helpers import wait_until


def test_logs_tail_follow_and_rotation(tmp_path: Path) -> None:
    logs = tmp_path / "root" / "logs"
    logs.mkdir(parents=True)
    log = logs / "com.test.App.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    cmd = [sys.executable, "-m", "roost", "logs", "com.test.App", "--root", str(tmp_path / "root")]
    tail = subprocess.run([*cmd, "--lines", "3"], capture_output=True, text=True, timeout=60, check=True)
    assert tail.stdout.splitlines() == ["line 7", "line 8", "line 9"]

    out = tmp_path / "follow.out"
    with out.open("w") as fh:
        follower = subprocess.Popen([*cmd, "--lines", "1", "--follow"], stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "line 9" in out.read_text(), what="the last line")
            with log.open("a") as fh_log:
                fh_log.write("appended\n")
            wait_until(lambda: "appended" in out.read_text(), what="the appended line")
            log.rename(logs / "com.test.App.log.1")  # rotation: the follower reopens the new file
            time.sleep(0.5)
            log.write_text("after rotation\n")
            wait_until(lambda: "after rotation" in out.read_text(), what="the line after rotation")
        finally:
            follower.terminate()
            follower.wait(10)

    missing = subprocess.run([*cmd[:4], "com.test.Nope", "--root", str(tmp_path / "root")], capture_output=True,
                             text=True, timeout=60, check=False)
    assert missing.returncode == 4 and "no log for com.test.Nope" in missing.stderr


def test_logs_follow_json_lines(tmp_path: Path) -> None:
    logs = tmp_path / "root" / "logs"
    logs.mkdir(parents=True)
    log = logs / "com.test.App.log"
    log.write_text("2026-01-02T03:04:05.123Z [stdout] first\n")
    out = tmp_path / "follow.jsonl"
    cmd = [sys.executable, "-m", "roost", "logs", "com.test.App", "--root", str(tmp_path / "root"), "--json",
           "--follow"]
    with out.open("w") as fh:
        follower = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "first" in out.read_text(), what="the first line")
            with log.open("a") as fh_log:
                fh_log.write("2026-01-02T03:04:06.000Z [stderr] sec")
                fh_log.flush()
                fh_log.write("ond\n")
            wait_until(lambda: "second" in out.read_text(), what="the appended line")
        finally:
            follower.terminate()
            follower.wait(10)
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert docs == [{"time": "2026-01-02T03:04:05.123Z", "stream": "stdout", "line": "first"},
                    {"time": "2026-01-02T03:04:06.000Z", "stream": "stderr", "line": "second"}]
