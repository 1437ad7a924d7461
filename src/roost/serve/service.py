"""The inference component: requests over local pub/sub → model → replies.

``roost serve`` runs this as a Greengrass-style component. For every request on the request topic
(default ``local/inference``) it publishes, exactly as the original Lambda-based system did, the
plain JSON list of predictions (or the top-1 label for an image) on the result topic (default
``local/result``); when the request carries ``replyTo`` and ``correlationId`` (as
:meth:`roost.ipc.client.IpcClient.request` sends) the requester also gets
``{"predictions", "model", "engine", "elapsed_us"}`` (image replies: ``labels`` with the top-k
labels and scores). A bad request never goes silent: ``{"error": {"code", "message"}}`` goes to
the requester's reply topic, or to the result topic when there is none, and the server keeps
serving.

Concurrent single-row requests are coalesced by :class:`~roost.serve.batching.MicroBatcher`.
A new model arrives without a restart through a configuration update of ``modelPath`` (or
``imageModelDir``): it is loaded and checked beside the old one, then swapped in; batches already
running finish on the old model and no request is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roost.errors import RoostError
from roost.ipc.client import ConfigurationUpdate, IpcClient, Received
from roost.serve.batching import MicroBatcher
from roost.serve.engine import LoadedModel, load_tabular
from roost.serve.errors import WRONG_TYPE, RequestError
from roost.serve.image import ImageClassifier, load_image_request
from roost.serve.reporting import InferenceReporter
from roost.serve.request import DEFAULT_MAX_BYTES, META_KEYS, decode_tabular, unwrap_event

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    model: Path | None = None
    image_model: Path | None = None
    engine: str = "auto"
    request_topic: str = "local/inference"
    result_topic: str = "local/result"
    name: str = "model"
    version: str = "0"
    max_batch: int = 64
    max_wait_s: float = 0.002
    cache_dir: Path = field(default_factory=lambda: Path(".roost-serve-cache"))
    allowed_dirs: Sequence[Path] = ()
    top_k: int = 5
    threads: int | None = None
    #: Largest request (message or event body) in bytes; larger ones get PAYLOAD_TOO_LARGE.
    max_request_bytes: int = DEFAULT_MAX_BYTES
    #: Joint inference (docs/joint-inference.md): the centre replica's endpoint, a file holding its
    #: session token (never argv, never logged), and the hard-example filter; ``None``: plain serving.
    joint_centre: str | None = None
    joint_centre_token_file: Path | None = None
    joint_filter: str | None = None
    joint_threshold: float | None = None


class InferenceService:
    """One model (tabular or image) served over the IPC client ``ipc``."""

    def __init__(self, ipc: IpcClient, options: ServeOptions) -> None:
        if (options.model is None) == (options.image_model is None):
            raise RequestError("serve exactly one of --model (tabular) or --image-model (image classifier)",
                               code="INVALID_ARGUMENT")
        self.ipc = ipc
        self.options = options
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.tabular: LoadedModel | None = None
        self.image: ImageClassifier | None = None
        self.batcher: MicroBatcher | None = None
        self.served = 0
        self.failed = 0
        #: PutComponentMetric every second (roost.serve.reporting); None outside a component
        self.reporter: InferenceReporter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._swap_lock = asyncio.Lock()
        #: Joint mode: the edge model answers, hard examples go to the centre (roost.learn.joint).
        self.joint: Any = None
        self._joint_lock = asyncio.Lock()

    @property
    def model_id(self) -> str:
        return f"{self.options.name}@{self.options.version}"

    @property
    def engine(self) -> str:
        if self.tabular is not None:
            return self.tabular.engine
        return "onnxruntime"

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        if (opts.joint_filter, opts.joint_threshold, opts.joint_centre, opts.joint_centre_token_file) != (None,) * 4:
            await self._load_joint()
        elif self.options.model is not None:
            self.tabular = await loop.run_in_executor(self.executor, self._load_tabular, self.options.model)
            self.batcher = MicroBatcher(self.tabular.backend.predict, max_batch=self.options.max_batch,
                                        max_wait_s=self.options.max_wait_s, executor=self.executor,
                                        inline_max_rows=_inline_rows(self.tabular))
            log.info("serving %s (%s, engine %s) on %s", self.model_id, self.options.model, self.tabular.engine,
                     self.options.request_topic)
        else:
            assert self.options.image_model is not None
            self.image = await loop.run_in_executor(self.executor, self._load_image, self.options.image_model)
            log.info("serving image classifier %s (%s) on %s", self.model_id, self.options.image_model,
                     self.options.request_topic)

    async def _load_joint(self) -> None:
        """Joint mode: the filter and centre are checked first, so bad options fail at start-up."""
        from roost.cluster.replica_session import ReplicaTarget
        from roost.learn.hard_examples import make_filter
        from roost.learn.joint import JointInference, XGBoostEdgeModel, direct_centre

        opts = self.options
        if opts.model is None:
            raise RequestError("joint inference needs --model (the edge model)", code="INVALID_ARGUMENT")
        hard_filter = make_filter(opts.joint_filter or "threshold", opts.joint_threshold)
        if not opts.joint_centre or opts.joint_centre_token_file is None:
            raise RequestError("joint inference needs --joint-centre URL and --joint-centre-token-file FILE",
                               code="INVALID_ARGUMENT")
        try:
            token = opts.joint_centre_token_file.read_text().strip()
        except OSError as err:
            raise RequestError(f"cannot read the centre token file {opts.joint_centre_token_file}: "
                               f"{err.strerror}", code="INVALID_ARGUMENT") from err
        if not token:
            raise RequestError(f"the centre token file {opts.joint_centre_token_file} is empty",
                               code="INVALID_ARGUMENT")
        loop = asyncio.get_running_loop()
        edge = await loop.run_in_executor(self.executor, XGBoostEdgeModel, opts.model)
        self.joint = JointInference(edge, direct_centre(ReplicaTarget(opts.joint_centre, token)), hard_filter)
        await self.joint.start()
        log.info("serving %s jointly (edge %s, centre %s, filter %s < %s) on %s", self.model_id, edge.description,
                 opts.joint_centre, hard_filter.name, hard_filter.threshold, opts.request_topic)

    def _load_tabular(self, path: Path) -> LoadedModel:
        return load_tabular(path, self.options.engine, cache_dir=self.options.cache_dir)  # type: ignore[arg-type]

    def _load_image(self, path: Path) -> ImageClassifier:
        return ImageClassifier(path, threads=self.options.threads)

    async def start(self) -> None:
        # direct=True: Roost requesters connected with direct=True get a channel of their own when the
        # agent allows it (roost.ipc.direct); everyone else publishes through the agent as before.
        await self.ipc.subscribe(self.options.request_topic, self._on_request, direct=True)
        await self.ipc.subscribe_to_configuration_update(self._on_config)

    # -- requests ----------------------------------------------------------------------------------
    def _on_request(self, message: Received) -> None:
        self._track(asyncio.get_running_loop().create_task(self.handle(message)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, message: Received) -> None:
        t0 = time.perf_counter()
        # The reply path first: a request whose body cannot be decoded still gets its error reply.
        meta = _reply_meta(message.json)
        try:
            doc, meta = unwrap_event(message.json if message.json is not None else message.payload,
                                     max_bytes=self.options.max_request_bytes)
            if self.joint is not None:
                await self._handle_joint(doc, meta, t0)
            elif self.tabular is not None:
                await self._handle_tabular(doc, meta, t0)
            else:
                await self._handle_image(doc, meta, t0)
            self.served += 1
            if self.reporter is not None:
                self.reporter.observe(time.perf_counter() - t0)
        except RoostError as err:
            self.failed += 1
            if self.reporter is not None:
                self.reporter.error()
            log.info("bad request on %s: %s", message.topic, err)
            self._send_error(meta, err)
        except Exception as err:  # a model failure must not stop the server
            self.failed += 1
            if self.reporter is not None:
                self.reporter.error()
            log.exception("inference failed")
            self._send_error(meta, RoostError(f"inference failed: {type(err).__name__}: {err}",
                                              code="INFERENCE_FAILED"))

    async def _handle_tabular(self, doc: Any, meta: dict[str, Any], t0: float) -> None:
        # One snapshot of model, batcher and name: a swap while this request waits does not change
        # which model answers it (each model has its own batcher) nor what the reply says it was.
        tabular, batcher, model_id = self.tabular, self.batcher, self.model_id
        assert tabular is not None and batcher is not None
        if isinstance(doc, dict) and ("image_dir" in doc or "image" in doc):
            raise RequestError(f"{model_id} is a tabular model; send records, not an image", code=WRONG_TYPE)
        rows = decode_tabular(doc, tabular.feature_names)
        preds = await batcher.submit(rows)
        values = np.asarray(preds).reshape(-1).tolist()  # Python floats of the float32 values
        if log.isEnabledFor(logging.DEBUG):
            log.debug("predicted %d row(s) on %s; batcher: %d batch(es), %d row(s), largest batch %d",
                      len(values), model_id, batcher.batches, batcher.rows, batcher.largest_batch)
        self.ipc.publish_nowait(self.options.result_topic, values)
        if "replyTo" in meta:
            self._reply(meta, {"predictions": values, "model": model_id, "engine": tabular.engine,
                               "elapsed_us": int((time.perf_counter() - t0) * 1e6)})

    async def _handle_joint(self, doc: Any, meta: dict[str, Any], t0: float) -> None:
        joint = self.joint
        if isinstance(doc, dict) and ("image_dir" in doc or "image" in doc):
            raise RequestError(f"{self.model_id} is a tabular model; send records, not an image", code=WRONG_TYPE)
        rows = decode_tabular(doc, joint.edge.features)
        # One batch at a time: the centre session numbers its windows in order.
        async with self._joint_lock:
            batch = await joint.infer(rows)
        values = batch.predictions
        self.ipc.publish_nowait(self.options.result_topic, values)
        if "replyTo" in meta:
            self._reply(meta, {"predictions": values, "answered_by": [a.answered_by for a in batch.answers],
                               "edge_ms": round(batch.edge_ms, 4),
                               "centre_ms": None if batch.centre_ms is None else round(batch.centre_ms, 4),
                               "centre_error": batch.centre_error, "model": self.model_id, "engine": "xgboost",
                               "elapsed_us": int((time.perf_counter() - t0) * 1e6)})

    async def _handle_image(self, doc: Any, meta: dict[str, Any], t0: float) -> None:
        if not isinstance(doc, dict):
            raise RequestError('an image request is an object: {"image_dir": ..., "fname": ...} or '
                               '{"image": "<base64>"}', code=WRONG_TYPE)
        image, model_id = self.image, self.model_id
        assert image is not None
        image_bytes, source = load_image_request(doc, self.options.allowed_dirs)
        top_k = self.options.top_k
        labels = await asyncio.get_running_loop().run_in_executor(
            self.executor, image.classify_bytes, image_bytes, top_k)
        self.ipc.publish_nowait(self.options.result_topic, labels[0][0])
        if "replyTo" in meta:
            self._reply(meta, {"label": labels[0][0], "labels": [{"label": lb, "score": round(s, 6)}
                                                                  for lb, s in labels],
                               "source": source, "model": model_id, "engine": "onnxruntime",
                               "elapsed_us": int((time.perf_counter() - t0) * 1e6)})

    def _reply(self, meta: dict[str, Any], body: dict[str, Any]) -> None:
        # Over the requester's direct channel when it has one, else published to its reply topic.
        self.ipc.reply_nowait(meta, body)

    def _send_error(self, meta: dict[str, Any], err: RoostError) -> None:
        body: dict[str, Any] = {"error": err.to_dict()}
        try:
            if "replyTo" in meta:
                self._reply(meta, body)
            else:
                self.ipc.publish_nowait(self.options.result_topic, body)
        except RoostError:
            log.warning("could not deliver an error reply: %s", err)

    # -- hot swap ----------------------------------------------------------------------------------
    def _on_config(self, update: ConfigurationUpdate) -> None:
        self._track(asyncio.get_running_loop().create_task(self._reload_from_config()))

    async def _reload_from_config(self) -> None:
        try:
            conf = await self.ipc.get_configuration([])
        except RoostError as err:
            log.warning("cannot read the configuration after an update: %s", err)
            return
        if not isinstance(conf, dict):
            return
        key = "modelPath" if self.tabular is not None else "imageModelDir"
        new_path = conf.get(key)
        version = conf.get("modelVersion")
        if isinstance(new_path, str) and new_path:
            await self.swap(Path(new_path), str(version) if version is not None else None)

    async def swap(self, path: Path, version: str | None = None) -> None:
        """Load the model at ``path`` beside the current one, then switch to it atomically."""
        async with self._swap_lock:
            current = self.options.model if self.tabular is not None else self.options.image_model
            if current == path and version in (None, self.options.version):
                return
            loop = asyncio.get_running_loop()
            # Loading runs on its own thread: requests keep being served by the old model meanwhile.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load") as loader:
                try:
                    if self.tabular is not None:
                        new_tab = await loop.run_in_executor(loader, self._load_tabular, path)
                        if new_tab.feature_names != self.tabular.feature_names:
                            raise RequestError(f"new model {path} has features {new_tab.feature_names}, "
                                               f"the current one {self.tabular.feature_names}",
                                               code="MODEL_INCOMPATIBLE")
                    else:
                        new_img = await loop.run_in_executor(loader, self._load_image, path)
                except RoostError as err:
                    log.error("model update to %s refused, still serving %s: %s", path, self.model_id, err)
                    return
            if self.tabular is not None:
                # A new batcher for the new model: requests already queued or running on the old
                # one finish there (and say so in their reply); the old batcher then closes.
                old_batcher = self.batcher
                self.tabular = new_tab
                self.batcher = MicroBatcher(new_tab.backend.predict, max_batch=self.options.max_batch,
                                            max_wait_s=self.options.max_wait_s, executor=self.executor,
                                            inline_max_rows=_inline_rows(new_tab))
                self.options.model = path
                if old_batcher is not None:
                    self._track(asyncio.get_running_loop().create_task(old_batcher.close()))
            else:
                self.image = new_img
                self.options.image_model = path
            if version is not None:
                self.options.version = version
            log.info("model swapped: now serving %s from %s", self.model_id, path)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self.reporter is not None:
            await self.reporter.close()
        if self.batcher is not None:
            await self.batcher.close()
        if self.joint is not None:
            await self.joint.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _reply_meta(doc: Any) -> dict[str, Any]:
    """``replyTo``/``correlationId`` of a request, when it has them as strings."""
    if not isinstance(doc, dict):
        return {}
    return {key: doc[key] for key in META_KEYS if isinstance(doc.get(key), str)}


# A single-row prediction faster than this runs on the event loop when the model thread is idle.
INLINE_BUDGET_US = 50.0


def _inline_rows(model: LoadedModel) -> int:
    """Rows a request may have to be predicted inline (0: always use the model thread)."""
    batch1 = model.timings.get(model.engine, {}).get("batch1_us")
    return 16 if batch1 is not None and batch1 <= INLINE_BUDGET_US else 0


async def run_service(options: ServeOptions) -> None:
    """Connect from the component environment, serve until SIGTERM, then drain in-flight requests."""
    ipc = await IpcClient.connect()
    service = InferenceService(ipc, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.load()
        await service.start()
        service.reporter = InferenceReporter(ipc, options.name)
        service.reporter.start()
        await ipc.update_state("RUNNING")
        log.info("ready")
        await stop.wait()
    finally:
        await service.close()
        await ipc.close()
        log.info("stopped after %d request(s), %d rejected", service.served, service.failed)
