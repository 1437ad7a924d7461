"""Local shadows through a real agent, driven by a component written with AWS's awsiotsdk
(``GreengrassCoreIPCClientV2``) as for Greengrass' ShadowManager: versions, delta, the
``$aws/things/.../shadow/...`` local topics seen by a subscriber, bad input, policy, and the
documents surviving an agent restart."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, _searchable, require_module

pytestmark = pytest.mark.slow
require_module("awsiot.greengrasscoreipc.clientv2")

THING = "test-device"
APP = "com.test.ShadowApp"
NOSY = "com.test.NoShadowPolicy"

SHADOW_APP = textwrap.dedent("""
    import json, os, sys, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import (BinaryMessage, ConflictError, InvalidArgumentsError, JsonMessage,
                                                PublishMessage, ResourceNotFoundError, UnauthorizedError)

    thing = os.environ["AWS_IOT_THING_NAME"]
    ipc = GreengrassCoreIPCClientV2()

    lock = threading.Lock()

    def line(text):  # whole lines: the stream callback prints from another thread
        with lock:
            sys.stdout.write(text + "\\n")
            sys.stdout.flush()

    def out(label, value):
        line("R " + label + " " + json.dumps(value))

    def update(doc, name="cfg"):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return json.loads(ipc.update_thing_shadow(thing_name=thing, shadow_name=name, payload=body).payload)

    def expect(label, call, *errors):
        try:
            call()
            out(label, "no error")
        except errors as err:
            out(label, [type(err).__name__, err.message])

    try:
        got = ipc.get_thing_shadow(thing_name=thing, shadow_name="cfg")
        out("persisted", json.loads(got.payload))
        threading.Event().wait()
    except ResourceNotFoundError as err:
        out("notfound", err.message)

    def on_event(event):
        msg = event.binary_message  # ShadowManager's messages are bytes; the app's own JSON request is not
        if msg is not None and msg.message.startswith(b"{"):
            line("E " + msg.context.topic + " " + msg.message.decode())

    ipc.subscribe_to_topic(topic=f"$aws/things/{thing}/shadow/#", on_stream_event=on_event)
    out("update1", update({"state": {"desired": {"mode": "eco", "t": 21}}, "clientToken": "c1"}))
    out("update2", update({"state": {"reported": {"mode": "off", "t": 21}}, "version": 1}))
    expect("conflict", lambda: update({"state": {"reported": {"mode": "eco"}}, "version": 1}), ConflictError)
    expect("badjson", lambda: update(b"{not json"), InvalidArgumentsError)
    expect("toolarge", lambda: update({"state": {"reported": {"blob": "x" * 9000}}}), InvalidArgumentsError)
    expect("toodeep", lambda: update({"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}),
           InvalidArgumentsError)
    expect("badname", lambda: ipc.get_thing_shadow(thing_name=thing, shadow_name="bad name"), InvalidArgumentsError)
    expect("nothing", lambda: ipc.get_thing_shadow(thing_name=thing, shadow_name="nope"), ResourceNotFoundError)
    expect("otherthing", lambda: ipc.get_thing_shadow(thing_name="another-thing"), UnauthorizedError)
    out("get", json.loads(ipc.get_thing_shadow(thing_name=thing, shadow_name="cfg").payload))
    out("classic", json.loads(ipc.update_thing_shadow(
        thing_name=thing, payload=json.dumps({"state": {"reported": {"up": True}}}).encode()).payload))
    update({"state": {"reported": {"x": 1}}}, name="tmp")
    first = ipc.list_named_shadows_for_thing(thing_name=thing, page_size=1)
    rest = ipc.list_named_shadows_for_thing(thing_name=thing, page_size=1, next_token=first.next_token)
    out("list", [first.results, rest.results, bool(first.next_token)])
    out("delete", ipc.delete_thing_shadow(thing_name=thing, shadow_name="tmp").payload.decode())
    expect("deleted", lambda: ipc.get_thing_shadow(thing_name=thing, shadow_name="tmp"), ResourceNotFoundError)
    expect("deletemissing", lambda: ipc.delete_thing_shadow(thing_name=thing, shadow_name="tmp"),
           ResourceNotFoundError)
    expect("badpage", lambda: ipc.list_named_shadows_for_thing(thing_name=thing, page_size=500),
           InvalidArgumentsError)
    expect("badtoken", lambda: ipc.list_named_shadows_for_thing(thing_name=thing, next_token="forged"),
           InvalidArgumentsError)
    expect("nothing-to-list", lambda: ipc.list_named_shadows_for_thing(thing_name=""), InvalidArgumentsError)
    # ShadowManager also takes requests published on the shadow topics.
    via = f"$aws/things/{thing}/shadow/name/viapubsub"
    ipc.publish_to_topic(topic=via + "/update", publish_message=PublishMessage(
        json_message=JsonMessage(message={"state": {"reported": {"p": 1}}, "clientToken": "pub"})))
    ipc.publish_to_topic(topic=via + "/update", publish_message=PublishMessage(
        binary_message=BinaryMessage(message=b"not json")))
    ipc.publish_to_topic(topic=via + "/get", publish_message=PublishMessage(binary_message=BinaryMessage(message=b"")))
    out("done", True)
    threading.Event().wait()
""")

NO_POLICY = textwrap.dedent("""
    import os, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import UnauthorizedError

    ipc = GreengrassCoreIPCClientV2()
    try:
        ipc.get_thing_shadow(thing_name=os.environ["AWS_IOT_THING_NAME"], shadow_name="cfg")
        print("nosy read it", flush=True)
    except UnauthorizedError as err:
        print("nosy denied:", err.message, flush=True)
    threading.Event().wait()
""")

POLICY = {
    "aws.greengrass.ShadowManager": {f"{APP}:shadow:1": {
        "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow",
                       "aws.greengrass#DeleteThingShadow", "aws.greengrass#ListNamedShadowsForThing"],
        "resources": [f"$aws/things/{THING}/shadow", f"$aws/things/{THING}/shadow/name/*", THING]}},
    "aws.greengrass.ipc.pubsub": {f"{APP}:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
        "resources": [f"$aws/things/{THING}/shadow/#"]}},
}


def _log(cli: Cli, name: str) -> str:
    path = cli.root / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _results(log: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in log.splitlines():
        _, sep, rest = line.partition("R ")
        if sep and " " in rest:
            label, _, value = rest.partition(" ")
            out[label] = json.loads(value)
    return out


def _events(log: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for line in log.splitlines():
        _, sep, rest = line.partition("E $aws/")
        if sep:
            topic, _, body = rest.partition(" ")
            events.append(("$aws/" + topic, json.loads(body)))
    return events


def test_shadows_with_awsiotsdk_topics_policy_and_restart(cli: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    # awsiotsdk lives in the test environment, not in the component's own: name that interpreter.
    ws.component(APP, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/app.py"},
                 files={"app.py": SHADOW_APP}, config={"accessControl": POLICY},
                 dependencies={"aws.greengrass.ShadowManager": {"VersionRequirement": "^2.0.0"}})
    ws.component(NOSY, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/nosy.py"},
                 files={"nosy.py": NO_POLICY})
    start = cli.run("agent", "start", "--detach", "--thing-name", THING)
    assert start.returncode == 0, start.stderr + start.stdout
    try:
        out = cli.run("deployment", "create", *ws.deploy_args(), "--merge", f"{APP}=1.0.0", "--merge",
                      f"{NOSY}=1.0.0", "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: "done" in _results(_log(cli, APP)), what="the shadow app's sequence")
        r = _results(_log(cli, APP))
        assert "No shadow exists: shadow cfg of test-device".lower() in r["notfound"].lower(), r
        u1 = r["update1"]
        assert u1["version"] == 1 and u1["clientToken"] == "c1"
        assert u1["state"] == {"desired": {"mode": "eco", "t": 21}}
        assert set(u1["metadata"]["desired"]) == {"mode", "t"} and isinstance(u1["metadata"]["desired"]["t"]
                                                                              ["timestamp"], int)
        assert r["update2"]["version"] == 2
        assert r["conflict"][0] == "ConflictError" and "shadow is at version 2" in r["conflict"][1]
        assert r["badjson"][0] == "InvalidArgumentsError" and "not valid JSON" in r["badjson"][1]
        assert r["toolarge"][0] == "InvalidArgumentsError" and "over the limit of 8192 bytes" in r["toolarge"][1]
        assert r["toodeep"][0] == "InvalidArgumentsError" and "maximum is 6" in r["toodeep"][1]
        assert r["badname"][0] == "InvalidArgumentsError" and "must match the pattern" in r["badname"][1]
        assert r["nothing"][0] == "ResourceNotFoundError"
        assert r["otherthing"][0] == "UnauthorizedError" and "$aws/things/another-thing/shadow" in r["otherthing"][1]
        got = r["get"]
        assert got["version"] == 2
        assert got["state"] == {"desired": {"mode": "eco", "t": 21}, "reported": {"mode": "off", "t": 21},
                                "delta": {"mode": "eco"}}
        assert set(got["metadata"]) == {"desired", "reported"}
        assert r["classic"]["version"] == 1
        assert r["list"] == [["cfg"], ["tmp"], True]
        assert r["delete"] == ""
        assert r["deleted"][0] == "ResourceNotFoundError"
        assert r["deletemissing"][0] == "ResourceNotFoundError"
        assert r["badpage"][0] == "InvalidArgumentsError" and "from 1 to 100" in r["badpage"][1]
        assert r["badtoken"][0] == "InvalidArgumentsError" and "nextToken" in r["badtoken"][1]
        assert r["nothing-to-list"][0] == "InvalidArgumentsError" and "thingName is required" in r["nothing-to-list"][1]

        prefix = f"$aws/things/{THING}/shadow/name/cfg"
        events = wait_until(lambda: (lambda ev: ev if any(t.endswith("viapubsub/get/accepted") for t, _ in ev)
                                     else None)(_events(_log(cli, APP))), what="the shadow topics")
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for topic, body in events:
            by_topic.setdefault(topic, []).append(body)
        accepted = by_topic[f"{prefix}/update/accepted"]
        assert [a["version"] for a in accepted] == [1, 2] and accepted[0]["clientToken"] == "c1"
        assert [d["state"] for d in by_topic[f"{prefix}/update/delta"]] == [{"mode": "eco", "t": 21},
                                                                             {"mode": "eco"}]
        documents = by_topic[f"{prefix}/update/documents"]
        assert documents[0]["previous"] is None and documents[1]["previous"]["version"] == 1
        assert documents[1]["current"]["state"]["reported"] == {"mode": "off", "t": 21}
        rejected = by_topic[f"{prefix}/update/rejected"]
        assert [x["code"] for x in rejected] == [409, 400, 413, 400]
        assert by_topic[f"{prefix}/get/accepted"][0]["version"] == 2
        assert by_topic[f"$aws/things/{THING}/shadow/update/accepted"][0]["version"] == 1
        assert by_topic[f"$aws/things/{THING}/shadow/name/tmp/delete/accepted"][0]["version"] == 1
        assert by_topic[f"$aws/things/{THING}/shadow/name/nope/get/rejected"][0]["code"] == 404
        via = f"$aws/things/{THING}/shadow/name/viapubsub"
        assert by_topic[f"{via}/update/accepted"][0]["clientToken"] == "pub"
        assert by_topic[f"{via}/update/accepted"][0]["state"] == {"reported": {"p": 1}}
        assert by_topic[f"{via}/update/rejected"][0]["code"] == 400
        assert "not valid JSON" in by_topic[f"{via}/update/rejected"][0]["message"]
        assert by_topic[f"{via}/get/accepted"][0]["state"] == {"reported": {"p": 1}}

        nosy = wait_until(lambda: "nosy " in _log(cli, NOSY) and _log(cli, NOSY), what="the component without policy")
        assert "nosy denied:" in nosy and "aws.greengrass.ShadowManager:aws.greengrass#GetThingShadow" in nosy, nosy
        assert (cli.root / "shadows.db").stat().st_mode & 0o077 == 0

        # The documents survive an agent restart: the app, started again, finds its shadow.
        assert cli.run("agent", "stop").returncode == 0
        # Another pytest session of this user (parallel runs on one machine) may have reset the temp
        # base folder to 0700 since this test's folders were opened: open them again for the restart.
        _searchable(cli.root)
        start = cli.run("agent", "start", "--detach", "--thing-name", THING)
        assert start.returncode == 0, start.stderr + start.stdout
        persisted = wait_until(lambda: _results(_log(cli, APP)).get("persisted"), what="the restarted app")
        assert persisted["version"] == 2
        assert persisted["state"]["delta"] == {"mode": "eco"}
        assert persisted["state"]["reported"] == {"mode": "off", "t": 21}
    finally:
        stop = cli.run("agent", "stop")
        assert stop.returncode == 0, stop.stderr
