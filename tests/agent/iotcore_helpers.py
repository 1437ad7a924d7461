"""Helpers of the IoT Core tests: the broker gate, a Mosquitto of the test's own, a paho peer, and an
awsiotsdk component driven through files in an inbox folder."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import require_module, require_service

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def require_machine_broker() -> None:
    """The machine's Mosquitto on 127.0.0.1:1883, or skip through the gate."""
    require_service("mosquitto", port_open(1883), "nothing listens on 127.0.0.1:1883")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnBroker:
    """A Mosquitto process of the test's own on a free port, with persistence (so that a paho
    subscriber with a persistent session gets what arrives while it reconnects)."""

    def __init__(self, base: Path) -> None:
        require_service("mosquitto", os.path.exists(MOSQUITTO), f"{MOSQUITTO} is not installed")
        self.port = free_port()
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.conf = base / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {base}/\n"
                             # Started as root, mosquitto drops to its own user, who cannot write here.
                             f"user {getpass.getuser()}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.base / "mosquitto.log", "ab"))  # noqa: SIM115
        wait_until(lambda: port_open(self.port), what=f"mosquitto on port {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()  # SIGTERM: it saves its persistence database
            proc.wait(timeout=20)
        wait_until(lambda: not port_open(self.port), what="mosquitto to stop")


@contextlib.contextmanager
def own_broker(base: Path) -> Iterator[OwnBroker]:
    broker = OwnBroker(base)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class PahoPeer:
    """A paho-mqtt client on the test's side of the broker: records what it receives, in order."""

    def __init__(self, port: int = 1883, *, client_id: str | None = None, persistent: bool = False) -> None:
        mqtt = require_module("paho.mqtt.client")
        from paho.mqtt.enums import CallbackAPIVersion

        self.received: list[tuple[str, bytes, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"peer-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "paho peer did not connect"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.received.append((msg.topic, bytes(msg.payload), msg.qos))

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p for _, p, _ in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# An awsiotsdk component that runs the commands the test drops in its inbox (one JSON file each).
SDK_COMPONENT = textwrap.dedent("""
    import glob, json, os, sys, threading, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage

    inbox = sys.argv[1]
    ipc = GreengrassCoreIPCClientV2()
    lock = threading.Lock()

    def say(*words):
        with lock:  # stream callbacks run on awsiotsdk's threads: one whole line at a time
            sys.stdout.write(" ".join(str(w) for w in words) + "\\n")
            sys.stdout.flush()

    def on_message(event):
        m = event.message
        say("got", m.topic_name, m.payload.decode())

    def on_local(event):
        m = event.binary_message
        say("local", m.context.topic, m.message.decode())

    say("ready")
    seen = set()
    while True:
        for path in sorted(glob.glob(os.path.join(inbox, "*.json"))):
            if path in seen:
                continue
            seen.add(path)
            with open(path) as fh:
                cmd = json.load(fh)
            try:
                if cmd["op"] == "pub":
                    for payload in cmd["payloads"]:
                        ipc.publish_to_iot_core(topic_name=cmd["topic"], qos=cmd["qos"], payload=payload.encode(),
                                                user_properties=None)
                    say("done", cmd["id"])
                elif cmd["op"] == "lpub":
                    for payload in cmd["payloads"]:
                        ipc.publish_to_topic(topic=cmd["topic"], publish_message=PublishMessage(
                            binary_message=BinaryMessage(message=payload.encode())))
                    say("done", cmd["id"])
                elif cmd["op"] == "lsub":
                    ipc.subscribe_to_topic(topic=cmd["topic"], on_stream_event=on_local)
                    say("done", cmd["id"])
                else:
                    ipc.subscribe_to_iot_core(topic_name=cmd["topic"], qos=cmd["qos"], on_stream_event=on_message)
                    say("done", cmd["id"])
            except Exception as err:
                say("error", cmd["id"], type(err).__name__, getattr(err, "message", str(err)))
        time.sleep(0.05)
""")


class SdkComponent:
    """One deployed awsiotsdk component and its inbox."""

    def __init__(self, agent_root: Path, base: Path, name: str, access_control: dict[str, Any]) -> None:
        require_module("awsiot.greengrasscoreipc.clientv2")
        self.root = agent_root
        self.name = name
        self.inbox = base / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        os.chmod(self.inbox, 0o755)
        self.ws = Workspace(base / "ws")
        # awsiotsdk is installed in the test environment, not in the component's own: name that interpreter.
        self.ws.component(name, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/c.py {self.inbox}"},
                          files={"c.py": SDK_COMPONENT}, config={"accessControl": access_control})
        self._n = 0

    def deploy_args(self) -> list[str]:
        return [*self.ws.deploy_args(), "--merge", f"{self.name}=1.0.0"]

    def log(self) -> str:
        path = self.root / "logs" / f"{self.name}.log"
        return path.read_text() if path.exists() else ""

    def wait_ready(self) -> None:
        wait_until(lambda: "ready" in self.log(), what=f"{self.name} to start")

    def run(self, op: str, topic: str, qos: str = "1", payloads: list[str] | None = None) -> str:
        """Drop one command; return its outcome line (``done N`` or ``error N <type> <message>``)."""
        self._n += 1
        n = self._n
        tmp = self.inbox / f".{n}.tmp"
        tmp.write_text(json.dumps({"id": n, "op": op, "topic": topic, "qos": qos, "payloads": payloads or []}))
        os.chmod(tmp, 0o644)
        tmp.rename(self.inbox / f"{n:04d}.json")

        pattern = re.compile(rf"\[stdout\] ((?:done|error) {n}\b.*)$")

        def outcome() -> str | None:
            for line in self.log().splitlines():
                match = pattern.search(line)
                if match:
                    return match.group(1)
            return None

        result = wait_until(outcome, what=f"{self.name} to run command {n} ({op} {topic})")
        return str(result)

    def local(self) -> list[str]:
        """``topic payload`` of every local pub/sub message the component received, in order."""
        return [line.split("[stdout] local ", 1)[1] for line in self.log().splitlines() if "[stdout] local " in line]

    def got(self) -> list[str]:
        """``topic payload`` of every message the component's streams received, in order."""
        return [line.split("[stdout] got ", 1)[1] for line in self.log().splitlines() if "[stdout] got " in line]


def pubsub_policy(resources: list[str]) -> dict[str, Any]:
    return {"aws.greengrass.ipc.pubsub": {"test:pubsub:1": {
        "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"], "resources": resources}}}


def mqttproxy_policy(publish: list[str], subscribe: list[str]) -> dict[str, Any]:
    return {"aws.greengrass.ipc.mqttproxy": {
        "test:mqttproxy:pub": {"operations": ["aws.greengrass#PublishToIoTCore"], "resources": publish},
        "test:mqttproxy:sub": {"operations": ["aws.greengrass#SubscribeToIoTCore"], "resources": subscribe}}}


def wait_for(pred: Any, what: str, timeout: float = 30.0) -> Any:
    return wait_until(pred, timeout=timeout, what=what)


def spool_counters(root: Path) -> dict[str, int]:
    import sqlite3

    db = sqlite3.connect(root / "iotcore-spool.db")
    try:
        return {str(n): int(v) for n, v in db.execute("SELECT name, value FROM counters")}
    finally:
        db.close()


def spooled_count(root: Path) -> int:
    import sqlite3

    db = sqlite3.connect(root / "iotcore-spool.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    finally:
        db.close()



def make_pki(base: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    require_service("openssl", shutil.which("openssl") is not None, "the openssl command is not installed")
    base.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=base, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Roost test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (base / f"{name}.ext").write_text(ext)
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=roost-test-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    for p in base.iterdir():
        os.chmod(p, 0o644)
    return {n: base / f"{n}" for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class TlsBroker(OwnBroker):
    """Mosquitto with a mutual-TLS listener that also wants a user name and password (for the agent),
    and a plain anonymous listener on :attr:`plain_port` (for the paho peer)."""

    def __init__(self, base: Path, user: str, password: str) -> None:
        super().__init__(base)
        require_service("mosquitto_passwd", shutil.which("mosquitto_passwd") is not None, "it is not installed")
        self.pki = make_pki(base / "pki")
        self.plain_port = free_port()
        passwd = base / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), user, password], check=True,
                       capture_output=True)
        os.chmod(passwd, 0o644)
        self.conf.write_text(
            "per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
            f"cafile {self.pki['ca.pem']}\ncertfile {self.pki['server.pem']}\nkeyfile {self.pki['server.key']}\n"
            "require_certificate true\n"
            f"listener {self.plain_port} 127.0.0.1\nallow_anonymous true\n"
            f"user {getpass.getuser()}\n")

    @property
    def uri(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"
