"""The two bench components of ``bench/ipc.py`` (copied into a temp artifact dir and run by the agent).

Usage (as the agent runs it)::

    python3 ipc_component.py ROLE TOPIC RESULT_FILE N WARMUP PIPE_N INFLIGHT MAX_S

ROLE is ``roost-responder``, ``roost-requester`` (Roost's asyncio :class:`IpcClient`),
``aws-responder`` or ``aws-requester`` (awsiotsdk ``GreengrassCoreIPCClientV2``). Requesters
measure, write their result JSON to RESULT_FILE (atomically) and exit; responders answer until
the agent stops them. Every role exits on its own after MAX_S seconds.

Payloads are those of ``../shared/peers/peers_messaging.py``: a ~300-byte JSON request, a
~50-byte JSON reply; the requester encodes the request and decodes the reply, the responder
decodes the request and encodes the reply (here the client library does the JSON work).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

FEATS = [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4, 1.0, 0.0]
REQ_TIMEOUT_S = 5.0


def _pad_len() -> int:
    base = json.dumps({"id": f"{0:08d}", "model": "wine-quality", "features": FEATS, "pad": ""},
                      separators=(",", ":"))
    return 300 - len(base)


PAD = "x" * _pad_len()


def request_doc(i: int) -> dict[str, Any]:
    return {"id": f"{i:08d}", "model": "wine-quality", "features": FEATS, "pad": PAD}


def request_bytes(i: int) -> bytes:
    return json.dumps(request_doc(i), separators=(",", ":")).encode()


def reply_doc(req: dict[str, Any]) -> dict[str, Any]:
    return {"id": req["id"], "quality": 5.4321, "ok": True}


def reply_bytes(req_bytes: bytes) -> bytes:
    return json.dumps(reply_doc(json.loads(req_bytes)), separators=(",", ":")).encode()


def _watchdog(max_s: float) -> None:
    def run() -> None:
        time.sleep(max_s)
        os._exit(4)

    threading.Thread(target=run, daemon=True).start()


def _write_result(path: str, result: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, path)


def _summary(client: str, lat_ns: list[int], pipe_requests: int, pipe_s: float, inflight: int,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    us = sorted(x / 1000.0 for x in lat_ns)
    k = len(us)
    out: dict[str, Any] = {
        "client": client,
        "n": k,
        "median_us": statistics.median(us),
        "p99_us": us[min(k - 1, int(0.99 * k))],
        "mean_us": statistics.fmean(us),
        "min_us": us[0],
        "pipe_inflight": inflight,
        "pipe_requests": pipe_requests,
        "pipe_rps": pipe_requests / pipe_s if pipe_s > 0 else None,
    }
    out.update(extra or {})
    return out


# -- Roost client ------------------------------------------------------------------------------


async def roost_responder(topic: str, max_s: float, direct: bool = False) -> None:
    from roost.ipc.client import IpcClient, Received

    async with await IpcClient.connect() as ipc:

        def on_request(msg: Received) -> None:
            req = msg.json
            ipc.reply_nowait(req, reply_doc(req))

        await ipc.subscribe(topic, on_request, direct=direct)
        print(f"responder subscribed to {topic}", flush=True)
        await asyncio.sleep(max_s)


async def roost_requester(topic: str, result_file: str, n: int, warmup: int, pipe_n: int, inflight: int,
                          direct: bool = False) -> None:
    from roost.ipc.client import IpcClient, IpcTimeoutError

    async with await IpcClient.connect(direct=direct) as ipc:
        # The responder may not have subscribed yet: probe until it answers.
        t_end = time.monotonic() + 30
        while True:
            try:
                await ipc.request(topic, request_doc(0), timeout=0.5)
                break
            except IpcTimeoutError:
                if time.monotonic() > t_end:
                    raise
        if direct:  # a channel is asked for again 1 s after a refusal (the probes came before the offer)
            t_end = time.monotonic() + 10
            while not ipc.direct_channel_count and time.monotonic() < t_end:
                await ipc.request(topic, request_doc(0), timeout=REQ_TIMEOUT_S)
                await asyncio.sleep(0.05)
        lat: list[int] = []
        c0 = time.process_time()
        for i in range(warmup + n):
            t0 = time.perf_counter_ns()
            rep = await ipc.request(topic, request_doc(i), timeout=REQ_TIMEOUT_S)
            t1 = time.perf_counter_ns()
            if rep["id"] != f"{i:08d}":
                raise AssertionError(f"reply {rep['id']} to request {i}")
            if i >= warmup:
                lat.append(t1 - t0)

        async def worker(start: int, count: int) -> None:
            for k in range(start, start + count):
                rep = await ipc.request(topic, request_doc(k), timeout=REQ_TIMEOUT_S)
                if rep["id"] != f"{k:08d}":
                    raise AssertionError(f"reply {rep['id']} to request {k}")

        per = pipe_n // inflight
        c1 = time.process_time()
        t0p = time.perf_counter()
        await asyncio.gather(*(worker(w * per, per) for w in range(inflight)))
        el = time.perf_counter() - t0p
        c2 = time.process_time()
        # whether the requests really went over a direct channel (granted and still open at the end)
        used_direct = bool(ipc.direct_channel_count)
    _write_result(result_file, _summary("roost", lat, per * inflight, el, inflight, {
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "direct_channel": used_direct,
        "requester_cpu_us_seq": (c1 - c0) / (warmup + n) * 1e6,
        "requester_cpu_us_pipe": (c2 - c1) / (per * inflight) * 1e6}))


# -- awsiotsdk GreengrassCoreIPCClientV2 ----------------------------------------------------------


def aws_responder(topic: str, max_s: float) -> None:
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage, SubscriptionResponseMessage

    reply_topic = topic + "/reply"
    # executor=None: callbacks run on the CRT event-loop thread (no thread-pool hop per message).
    ipc = GreengrassCoreIPCClientV2(executor=None)

    def on_event(event: SubscriptionResponseMessage) -> None:
        assert event.binary_message is not None
        body = reply_bytes(event.binary_message.message)
        ipc.publish_to_topic_async(topic=reply_topic,
                                   publish_message=PublishMessage(binary_message=BinaryMessage(message=body)))

    ipc.subscribe_to_topic(topic=topic, on_stream_event=on_event)
    print(f"responder subscribed to {topic}", flush=True)
    time.sleep(max_s)


def aws_requester(topic: str, result_file: str, n: int, warmup: int, pipe_n: int, inflight: int) -> None:
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage, SubscriptionResponseMessage

    reply_topic = topic + "/reply"
    ipc = GreengrassCoreIPCClientV2(executor=None)
    got: list[int] = []
    ev = threading.Event()
    sem = threading.Semaphore(inflight)
    state = {"pipe": False, "recvd": 0}
    done = threading.Event()
    pipe_total = [0]

    def on_event(event: SubscriptionResponseMessage) -> None:
        assert event.binary_message is not None
        rid = int(json.loads(event.binary_message.message)["id"])
        if state["pipe"]:
            state["recvd"] += 1
            sem.release()
            if state["recvd"] >= pipe_total[0]:
                done.set()
        else:
            got.append(rid)
            ev.set()

    ipc.subscribe_to_topic(topic=reply_topic, on_stream_event=on_event)

    def publish(i: int) -> Any:
        return ipc.publish_to_topic_async(
            topic=topic, publish_message=PublishMessage(binary_message=BinaryMessage(message=request_bytes(i))))

    # probe until the responder answers
    t_end = time.monotonic() + 30
    while True:
        ev.clear()
        publish(0)
        if ev.wait(0.5):
            break
        if time.monotonic() > t_end:
            raise TimeoutError("the aws responder never answered")
    time.sleep(0.2)  # late duplicate probe answers
    lat: list[int] = []
    c0 = time.process_time()
    for i in range(warmup + n):
        ev.clear()
        got.clear()
        t0 = time.perf_counter_ns()
        ipc.publish_to_topic(topic=topic,
                             publish_message=PublishMessage(binary_message=BinaryMessage(message=request_bytes(i))))
        if not ev.wait(REQ_TIMEOUT_S):
            raise TimeoutError(f"aws request {i}")
        t1 = time.perf_counter_ns()
        if got[-1] != i:
            raise AssertionError(f"reply {got[-1]} to request {i}")
        if i >= warmup:
            lat.append(t1 - t0)
    # pipelined: publish_to_topic_async futures, at most `inflight` requests without a reply
    pipe_total[0] = pipe_n
    state["pipe"] = True
    futures = []
    c1 = time.process_time()
    t0p = time.perf_counter()
    for i in range(pipe_n):
        if not sem.acquire(timeout=REQ_TIMEOUT_S):
            raise TimeoutError("aws pipelined window stalled")
        futures.append(publish(i))
    if not done.wait(30):
        raise TimeoutError(f"aws pipelined drain: {state['recvd']}/{pipe_n}")
    el = time.perf_counter() - t0p
    c2 = time.process_time()
    for f in futures:
        f.result(REQ_TIMEOUT_S)
    _write_result(result_file, _summary("awsiotsdk", lat, pipe_n, el, inflight, {
        "requester_cpu_us_seq": (c1 - c0) / (warmup + n) * 1e6,
        "requester_cpu_us_pipe": (c2 - c1) / pipe_n * 1e6}))
    ipc.close()


def main() -> None:
    role, topic, result_file = sys.argv[1], sys.argv[2], sys.argv[3]
    n, warmup, pipe_n, inflight = (int(x) for x in sys.argv[4:8])
    max_s = float(sys.argv[8])
    loop, _, mode = (sys.argv[9] if len(sys.argv) > 9 else "default").partition("+")
    direct = mode == "direct"
    run: Any = asyncio.run
    if loop == "uvloop":
        import uvloop

        run = uvloop.run
    _watchdog(max_s)
    try:
        if role == "roost-responder":
            run(roost_responder(topic, max_s, direct))
        elif role == "roost-requester":
            run(roost_requester(topic, result_file, n, warmup, pipe_n, inflight, direct))
        elif role == "aws-responder":
            aws_responder(topic, max_s)
        elif role == "aws-requester":
            aws_requester(topic, result_file, n, warmup, pipe_n, inflight)
        else:
            raise SystemExit(f"unknown role {role}")
    except BaseException as err:
        if role.endswith("requester"):
            _write_result(result_file, {"error": f"{type(err).__name__}: {err}"})
        raise
    sys.stdout.flush()
    os._exit(0)  # awscrt's threads must not delay the exit


if __name__ == "__main__":
    main()
