"""The bench components of ``bench/inference.py`` (copied into a temp artifact dir, run by the agent).

Usage (as the agent runs it)::

    python3 inference_component.py serve STATS_FILE [roost serve options...]
    python3 inference_component.py e2e CONFIG_JSON
    python3 inference_component.py load CONFIG_JSON

``serve`` is ``roost serve`` itself (the same CLI entry point, options passed through) with one
addition: the micro-batcher's own counters (``batches``, ``rows``, ``largest_batch``) are written
to STATS_FILE every 50 ms while they change, so the bench can report the average batch size.

``e2e`` sends the original two-record Lambda event (``{"body": json.dumps(samples),
"isBase64Encoded": false}``) with :meth:`roost.ipc.client.IpcClient.request`: a probe until the
server answers, a warm-up, then N sequential requests; every reply is checked against the
expected predictions. ``load`` keeps ``concurrency`` single-row requests in flight (one
``asyncio.gather`` of workers on one client) for a warm-up and then a measured window. Both write
their result JSON to ``resultFile`` (atomically) and exit; every role exits on its own after
``maxSeconds``.
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

REQ_TIMEOUT_S = 10.0
TOL = 1e-4  # replies carry float32 predictions printed as JSON numbers


def _watchdog(max_s: float) -> None:
    def run() -> None:
        time.sleep(max_s)
        os._exit(4)

    threading.Thread(target=run, daemon=True).start()


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def _mark(conf: dict[str, Any], what: str) -> None:
    """Tell the bench the measured window starts/ends (it samples per-process CPU times then)."""
    if conf.get("markFile"):
        with open(f"{conf['markFile']}.{what}", "w") as fh:
            fh.write(str(time.time()))


def _percentiles(lat_ns: list[int]) -> dict[str, float]:
    us = sorted(x / 1000.0 for x in lat_ns)
    k = len(us)
    if not k:
        return {"n": 0}
    return {"n": k, "median_us": statistics.median(us), "p99_us": us[min(k - 1, int(0.99 * k))],
            "mean_us": statistics.fmean(us), "min_us": us[0], "max_us": us[-1]}


def _predictions(reply: Any) -> list[float]:
    """The prediction list of a ``roost serve`` reply or of a Lambda host reply."""
    if not isinstance(reply, dict):
        raise AssertionError(f"unexpected reply {reply!r:.200}")
    if "error" in reply:
        raise AssertionError(f"error reply: {reply['error']}")
    if "predictions" in reply:
        return list(reply["predictions"])
    if "result" in reply:
        result = reply["result"]
        if isinstance(result, str):
            result = json.loads(result)
        return list(result)
    raise AssertionError(f"reply without predictions: {reply!r:.200}")


def _check(reply: Any, expect: list[float]) -> None:
    got = _predictions(reply)
    if len(got) != len(expect) or any(abs(a - b) > TOL for a, b in zip(got, expect, strict=True)):
        raise AssertionError(f"predictions {got} differ from the expected {expect}")


# -- serve: `roost serve` with the micro-batcher's counters exported ------------------------------


def serve(stats_file: str, argv: list[str]) -> None:
    import roost.serve.service as service
    from roost.serve.batching import MicroBatcher

    class CountingBatcher(MicroBatcher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            threading.Thread(target=self._export, daemon=True, name="bench-stats").start()

        def _export(self) -> None:
            last = None
            while True:
                now = (self.batches, self.rows, self.largest_batch)
                if now != last:
                    _write_json(stats_file, {"batches": now[0], "rows": now[1], "largest_batch": now[2],
                                             "max_batch": self.max_batch, "t": time.time()})
                    last = now
                time.sleep(0.05)

    service.MicroBatcher = CountingBatcher  # type: ignore[misc]
    from roost.cli.main import main

    sys.argv = ["roost", "serve", *argv]
    main()


def _read_stats(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        with open(path) as fh:
            doc: dict[str, Any] = json.load(fh)
            return doc
    except (OSError, ValueError):
        return None


# -- requesters ------------------------------------------------------------------------------------


async def _probe(ipc: Any, topic: str, event: dict[str, Any], wait_s: float) -> int:
    """Request until the server answers (it may still be loading the model); return the tries."""
    from roost.ipc.client import IpcTimeoutError

    t_end = time.monotonic() + wait_s
    tries = 0
    while True:
        tries += 1
        try:
            await ipc.request(topic, event, timeout=1.0)
            return tries
        except IpcTimeoutError:
            if time.monotonic() > t_end:
                raise


async def e2e(conf: dict[str, Any]) -> dict[str, Any]:
    from roost.ipc.client import IpcClient

    topic, event, expect = conf["topic"], conf["event"], conf["expect"]
    direct = bool(conf.get("direct", False))
    async with await IpcClient.connect(direct=direct) as ipc:
        tries = await _probe(ipc, topic, event, conf["probeSeconds"])
        if direct:  # a channel is asked for again 1 s after a refusal (the probes may have come before the offer)
            t_end = time.monotonic() + 10
            while not ipc.direct_channel_count and time.monotonic() < t_end:
                _check(await ipc.request(topic, event, timeout=REQ_TIMEOUT_S), expect)
                await asyncio.sleep(0.05)
        for _ in range(conf["warmup"]):
            _check(await ipc.request(topic, event, timeout=REQ_TIMEOUT_S), expect)
        lat: list[int] = []
        server_us: list[int] = []
        engines: set[str] = set()
        _mark(conf, "start")
        c0 = time.process_time()
        for _ in range(conf["n"]):
            t0 = time.perf_counter_ns()
            rep = await ipc.request(topic, event, timeout=REQ_TIMEOUT_S)
            t1 = time.perf_counter_ns()
            _check(rep, expect)
            lat.append(t1 - t0)
            if isinstance(rep.get("elapsed_us"), int):
                server_us.append(rep["elapsed_us"] * 1000)
            if "engine" in rep:
                engines.add(str(rep["engine"]))
        cpu = time.process_time() - c0
        _mark(conf, "end")
        used_direct = bool(ipc.direct_channel_count)
    out: dict[str, Any] = {"role": "e2e", "probe_tries": tries, **_percentiles(lat), "direct_channel": used_direct,
                           "requester_cpu_us": cpu / conf["n"] * 1e6, "engines": sorted(engines)}
    if server_us:
        out["server_elapsed"] = _percentiles(server_us)
    return out


async def load(conf: dict[str, Any]) -> dict[str, Any]:
    from roost.ipc.client import IpcClient

    topic = conf["topic"]
    with open(conf["eventsFile"]) as fh:
        cases: list[dict[str, Any]] = json.load(fh)  # [{"event": ..., "expect": [x]}]
    concurrency = int(conf["concurrency"])
    stop = asyncio.Event()
    window: dict[str, Any] = {"open": False}
    lat: list[int] = []
    done = [0]

    async with await IpcClient.connect() as ipc:
        tries = await _probe(ipc, topic, cases[0]["event"], conf["probeSeconds"])

        async def worker(w: int) -> None:
            i = w
            while not stop.is_set():
                case = cases[i % len(cases)]
                i += concurrency
                t0 = time.perf_counter_ns()
                rep = await ipc.request(topic, case["event"], timeout=REQ_TIMEOUT_S)
                t1 = time.perf_counter_ns()
                _check(rep, case["expect"])
                done[0] += 1
                if window["open"]:
                    lat.append(t1 - t0)

        async def control() -> dict[str, Any]:
            await asyncio.sleep(conf["warmupSeconds"])
            _mark(conf, "start")
            s0, n0, t0, c0 = _read_stats(conf.get("statsFile")), done[0], time.perf_counter(), time.process_time()
            window["open"] = True
            await asyncio.sleep(conf["seconds"])
            window["open"] = False
            s1, n1, t1, c1 = _read_stats(conf.get("statsFile")), done[0], time.perf_counter(), time.process_time()
            _mark(conf, "end")
            stop.set()
            out: dict[str, Any] = {"requests": n1 - n0, "seconds": t1 - t0, "rps": (n1 - n0) / (t1 - t0),
                                   "requester_cpu_us": (c1 - c0) / max(1, n1 - n0) * 1e6}
            if s0 is not None and s1 is not None and s1["batches"] > s0["batches"]:
                out["batches"] = s1["batches"] - s0["batches"]
                out["rows"] = s1["rows"] - s0["rows"]
                out["avg_batch"] = out["rows"] / out["batches"]
                out["largest_batch"] = s1["largest_batch"]
                out["max_batch"] = s1.get("max_batch")
            return out

        results = await asyncio.gather(control(), *(worker(w) for w in range(concurrency)))
    return {"role": "load", "probe_tries": tries, "concurrency": concurrency, "total_requests": done[0] + tries,
            **results[0], **_percentiles(lat)}


def main() -> None:
    role = sys.argv[1]
    if role == "serve":
        serve(sys.argv[2], sys.argv[3:])
        return
    with open(sys.argv[2]) as fh:
        conf: dict[str, Any] = json.load(fh)
    _watchdog(conf["maxSeconds"])
    run: Any = asyncio.run
    if conf.get("loop") == "uvloop":
        import uvloop

        run = uvloop.run
    try:
        if role == "e2e":
            result = run(e2e(conf))
        elif role == "load":
            result = run(load(conf))
        else:
            raise SystemExit(f"unknown role {role}")
        result["loop"] = conf.get("loop", "asyncio")
        _write_json(conf["resultFile"], result)
    except BaseException as err:
        _write_json(conf["resultFile"], {"error": f"{type(err).__name__}: {err}"})
        raise
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
