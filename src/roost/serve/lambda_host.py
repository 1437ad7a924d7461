"""Run an unchanged AWS Lambda Python handler as a component.

``roost lambda run --handler module.function`` subscribes to the request topic, turns each message
into the event the original interface used (``{"body": "<JSON>", "isBase64Encoded": false}``;
a message that already is such an event is passed as is), calls ``handler(event, context)`` with
a Lambda-like context, and publishes ``result["body"]`` to the result topic and, when the request
has ``replyTo``/``correlationId``, ``{"result", "statusCode", "function", "elapsed_us"}`` to the
requester.

The handler runs in a worker *process* (like a Lambda execution environment: one invocation at a
time, module state kept between invocations). That is what makes the per-invocation timeout real:
a handler that overruns is killed with its worker and a fresh worker takes the next request. A
handler exception becomes an error reply (``HANDLER_ERROR`` with the exception type and message);
the host keeps serving.

``--memory-mb N`` is enforced on the worker with ``RLIMIT_AS`` (its virtual address space), set
once the handler module is imported: the limit is the worker's virtual size at that moment (the
interpreter, the handler's libraries, whatever its module-level code loaded) plus N MiB. So what
the invocations allocate, in total, is held to N MiB; the import (Lambda's "init" phase) is not
limited. Why not from before the import: ``RLIMIT_AS`` counts address space, not resident memory,
and the libraries handlers use reserve far more than they touch (measured here in a spawned
worker: 17 MiB bare; numpy 211 MiB virtual / 31 MiB resident; pandas + xgboost 485 MiB / 157 MiB),
so a limit counted from the bare interpreter would refuse the import of an ordinary handler at
AWS's default 128 MB. Address space the invocations reserve counts in full (a new thread's stack
and malloc arena too), so the limit is strict rather than generous. A cgroup v2 ``memory.max``
would count resident memory as AWS does, but needs a delegated cgroup (a cgroup with processes
cannot enable the memory controller for children), which a component does not get: see
:func:`cgroup_memory_status`, logged at start.

A handler that exceeds the limit gets ``MemoryError`` from the allocator (Python raises it;
numpy's "Unable to allocate" is one); the requester gets ``HANDLER_OUT_OF_MEMORY`` naming the
limit, the worker is replaced (a fresh execution environment, as AWS replaces one that ran out of
memory) and the host serves the next request.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.errors import RoostError
from roost.ipc.client import IpcClient, Received
from roost.serve.errors import HANDLER_ERROR, HANDLER_TIMEOUT, INVALID_JSON, RequestError, ServeError

log = logging.getLogger(__name__)

#: An invocation exceeded ``--memory-mb`` (the worker was replaced).
HANDLER_OUT_OF_MEMORY = "HANDLER_OUT_OF_MEMORY"
#: The memory limit cannot be applied on this system (no ``/proc/self/status`` or ``RLIMIT_AS``).
MEMORY_LIMIT_UNAVAILABLE = "MEMORY_LIMIT_UNAVAILABLE"
MIB = 1024 * 1024


@dataclass
class LambdaOptions:
    handler: str
    path: Path | None = None
    request_topic: str = "local/inference"
    result_topic: str = "local/result"
    timeout_s: float = 3.0
    function_name: str | None = None
    memory_mb: int = 128
    concurrency: int = 1


class LambdaContext:
    """The attributes and method of AWS Lambda's context object that handlers use."""

    def __init__(self, function_name: str, timeout_s: float, memory_mb: int, request_id: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:roost:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/roost/lambda/{function_name}"
        self.log_stream_name = f"{os.getpid()}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(spec: str, path: Path | None) -> Any:
    """Import ``module.function`` (``path`` is put first on sys.path)."""
    module_name, _, func_name = spec.rpartition(".")
    if not module_name or not func_name:
        raise ServeError(f"--handler {spec!r}: expected module.function (e.g. inference.handler)",
                         code="INVALID_HANDLER")
    if path is not None:
        sys.path.insert(0, str(path))
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ServeError(f"cannot import handler module {module_name!r}: {type(err).__name__}: {err}",
                         code="INVALID_HANDLER") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ServeError(f"{module_name} has no callable {func_name!r}", code="INVALID_HANDLER")
    return func


def vm_status(path: Path = Path("/proc/self/status")) -> dict[str, int]:
    """``VmSize``, ``VmRSS``, ``VmPeak`` (bytes) of this process, from ``/proc/self/status``."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmSize", "VmRSS", "VmPeak"):
            out[key] = int(value.split()[0]) * 1024
    if "VmSize" not in out:
        raise OSError(f"{path} has no VmSize")
    return out


@dataclass(frozen=True)
class MemoryLimit:
    """What the worker limited: ``RLIMIT_AS`` = ``base_virtual`` + ``memory_mb`` MiB."""

    memory_mb: int
    base_virtual: int
    base_resident: int
    limit: int


def limit_memory(memory_mb: int) -> MemoryLimit:
    """Limit this process' address space to its current virtual size plus ``memory_mb`` MiB."""
    try:
        status = vm_status()
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = status["VmSize"] + memory_mb * MIB
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError) as err:
        raise ServeError(f"cannot apply --memory-mb {memory_mb}: {err}", code=MEMORY_LIMIT_UNAVAILABLE) from err
    return MemoryLimit(memory_mb, status["VmSize"], status.get("VmRSS", 0), limit)


def cgroup_memory_status(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup"),
                         ) -> str:
    """Why the limit is ``RLIMIT_AS`` and not a cgroup v2 ``memory.max``, in a sentence (logged).

    A cgroup v2 child with ``memory.max`` needs the memory controller enabled in this process'
    cgroup's ``cgroup.subtree_control``, which the kernel allows only for a cgroup without processes
    of its own, so only a delegated cgroup (e.g. systemd ``Delegate=yes`` with the host in a leaf)
    could do it. This reports what the system offers; the host does not rearrange cgroups.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError as err:
        return f"no cgroup information ({err.strerror})"
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    v1_memory = [line for line in lines if ":memory:" in line]
    mount = root if (root / "cgroup.controllers").exists() else root / "unified"
    if not unified or not (mount / "cgroup.controllers").exists():
        return "no cgroup v2 hierarchy" + (" (memory is a cgroup v1 controller here)" if v1_memory else "")
    controllers = (mount / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        return (f"cgroup v2 at {mount} has no memory controller"
                + (" (hybrid layout: memory is a cgroup v1 controller)" if v1_memory else ""))
    own = mount / unified[0].lstrip("/")
    try:
        delegated = "memory" in (own / "cgroup.subtree_control").read_text().split()
    except OSError:
        delegated = False
    if not delegated:
        return f"cgroup v2 memory controller present, but not delegated to {own} (its subtree_control lacks memory)"
    return f"cgroup v2 memory controller delegated to {own} (not used: RLIMIT_AS applies)"


def _worker_main(conn: multiprocessing.connection.Connection, options: LambdaOptions) -> None:
    """The execution environment: import once, limit memory, then invoke per event received on ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        handler = load_handler(options.handler, options.path)
        limit = limit_memory(options.memory_mb)
    except ServeError as err:
        conn.send(("init_error", (err.code, err.message)))
        return
    conn.send(("ready", limit))
    name = options.function_name or options.handler
    while True:
        try:
            event, request_id, timeout_s = conn.recv()
        except EOFError:
            return
        context = LambdaContext(name, timeout_s, options.memory_mb, request_id)
        try:
            result = handler(event, context)
            conn.send(("ok", result))
        except MemoryError as err:
            # What the handler allocated is released by now (the frames are gone); the parent
            # replaces this worker anyway: module state may be half-updated.
            conn.send(("oom", traceback.format_exception_only(type(err), err)[-1].strip()))
        except Exception as err:
            tb = traceback.format_exception_only(type(err), err)[-1].strip()
            conn.send(("error", tb))


class HandlerWorker:
    """One worker process; killed and replaced when an invocation overruns its timeout."""

    def __init__(self, options: LambdaOptions) -> None:
        self.options = options
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.lock = asyncio.Lock()
        #: The limit the current worker applied (None before it started).
        self.memory: MemoryLimit | None = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker_main, args=(child, self.options), daemon=True,
                                       name=f"lambda-{self.options.handler}")
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(60):
            self.kill()
            raise ServeError("the handler worker did not start within 60 s", code="HANDLER_INIT_TIMEOUT")
        try:
            kind, detail = parent.recv()
        except (EOFError, OSError) as err:
            how = self._exit_description()
            self.kill()
            raise ServeError(f"the handler worker exited while importing {self.options.handler} ({how})",
                             code="INVALID_HANDLER") from err
        if kind != "ready":
            self.kill()
            code, message = detail
            raise ServeError(str(message), code=str(code))
        self.memory = detail
        log.info("handler worker %d: initialised at %d MiB virtual / %d MiB resident; address space "
                 "limited to %d MiB (--memory-mb %d on top)", self._proc.pid, detail.base_virtual // MIB,
                 detail.base_resident // MIB, detail.limit // MIB, self.options.memory_mb)

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = None
        self._conn = None

    def _exit_description(self) -> str:
        proc = self._proc
        if proc is None:
            return "not running"
        proc.join(1)
        code = proc.exitcode
        if code is None:
            return "its pipe closed"
        if code < 0:
            name = signal.Signals(-code).name
            hint = f"; a native library may have failed an allocation under --memory-mb {self.options.memory_mb}" \
                if -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL) else ""
            return f"killed by {name}{hint}"
        return f"exit status {code}"

    def _call(self, event: Any, request_id: str) -> tuple[str, Any]:
        assert self._conn is not None
        timeout = self.options.timeout_s
        self._conn.send((event, request_id, timeout))
        if not self._conn.poll(timeout):
            return "timeout", None
        kind, value = self._conn.recv()
        return str(kind), value

    async def invoke(self, event: Any, request_id: str) -> Any:
        async with self.lock:
            if self._proc is None:
                await asyncio.get_running_loop().run_in_executor(None, self.start)
            try:
                kind, value = await asyncio.get_running_loop().run_in_executor(None, self._call, event, request_id)
            except (EOFError, OSError, BrokenPipeError) as err:
                how = self._exit_description()
                self.kill()
                raise ServeError(f"the handler process died ({how}); a fresh execution environment takes the "
                                 f"next event (request {request_id})", code=HANDLER_ERROR) from err
            if kind == "timeout":
                self.kill()  # the only way to stop a runaway handler; a fresh worker takes the next event
                raise ServeError(f"the handler did not return within {self.options.timeout_s:g} s "
                                 f"(request {request_id})", code=HANDLER_TIMEOUT)
            if kind == "oom":
                self.kill()  # a fresh execution environment takes the next event
                raise ServeError(f"the handler ran out of memory: it exceeded --memory-mb {self.options.memory_mb} "
                                 f"(address space limited to {self.options.memory_mb} MiB beyond the initialised "
                                 f"handler; {value}); its execution environment was restarted (request {request_id})",
                                 code=HANDLER_OUT_OF_MEMORY)
            if kind == "error":
                raise ServeError(f"the handler raised {value}", code=HANDLER_ERROR)
            return value


def build_event(message: Received) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event, meta): the Lambda event for a pub/sub message, and its replyTo/correlationId."""
    doc = message.json
    if doc is None:
        try:
            doc = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(f"the request is not JSON: {err}", code=INVALID_JSON) from err
    meta: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key in ("replyTo", "correlationId"):
            if isinstance(doc.get(key), str):
                meta[key] = doc[key]
        if "body" in doc:
            event = {k: v for k, v in doc.items() if k not in ("replyTo", "correlationId")}
            event.setdefault("isBase64Encoded", False)
            return event, meta
        doc = {k: v for k, v in doc.items() if k not in ("replyTo", "correlationId")}
        if set(doc) == {"records"}:
            doc = doc["records"]
    return {"body": json.dumps(doc), "isBase64Encoded": False}, meta


class LambdaHost:
    def __init__(self, ipc: IpcClient, options: LambdaOptions) -> None:
        self.ipc = ipc
        self.options = options
        self.workers = [HandlerWorker(options) for _ in range(max(1, options.concurrency))]
        self._next = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            await loop.run_in_executor(None, worker.start)
        await self.ipc.subscribe(self.options.request_topic, self._on_request)
        log.info("hosting %s on %s (timeout %g s, --memory-mb %d as RLIMIT_AS: %s; %d worker(s))",
                 self.options.handler, self.options.request_topic, self.options.timeout_s, self.options.memory_mb,
                 cgroup_memory_status(), len(self.workers))

    def _on_request(self, message: Received) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _worker(self) -> HandlerWorker:
        idle = [w for w in self.workers if not w.lock.locked()]
        if idle:
            return idle[0]
        self._next = (self._next + 1) % len(self.workers)
        return self.workers[self._next]

    async def handle(self, message: Received) -> None:
        t0 = time.perf_counter()
        meta: dict[str, Any] = {}
        request_id = str(uuid.uuid4())
        try:
            event, meta = build_event(message)
            result = await self._worker().invoke(event, request_id)
            status, body = _split_result(result)
            payload = _as_json(body)
            if not isinstance(payload, (dict, list, str, bytes)):
                payload = json.dumps(payload)
            self.ipc.publish_nowait(self.options.result_topic, payload)
            if "replyTo" in meta:
                self.ipc.publish_nowait(meta["replyTo"], {
                    "result": payload, "statusCode": status, "function": self.options.function_name
                    or self.options.handler, "requestId": request_id,
                    "elapsed_us": int((time.perf_counter() - t0) * 1e6), "correlationId": meta["correlationId"]})
        except RoostError as err:
            log.warning("invocation %s failed: %s", request_id, err)
            body = {"error": err.to_dict(), "requestId": request_id}
            if "replyTo" in meta:
                body["correlationId"] = meta.get("correlationId")
                self.ipc.publish_nowait(meta["replyTo"], body)
            else:
                self.ipc.publish_nowait(self.options.result_topic, body)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.options.timeout_s + 5)
        for worker in self.workers:
            worker.kill()


def _split_result(result: Any) -> tuple[int | None, Any]:
    if isinstance(result, dict) and "body" in result:
        status = result.get("statusCode")
        return (status if isinstance(status, int) else None), result["body"]
    return None, result


def _as_json(body: Any) -> Any:
    """The body as a JSON value when it is JSON text (the original returned json.dumps(...))."""
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return body if isinstance(body, str) else body.decode(errors="replace")
    return body


async def run_lambda(options: LambdaOptions) -> None:
    ipc = await IpcClient.connect()
    host = LambdaHost(ipc, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await host.start()
        await ipc.update_state("RUNNING")
        await stop.wait()
    finally:
        await host.close()
        await ipc.close()
