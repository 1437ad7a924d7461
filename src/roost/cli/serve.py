"""`roost serve` (the inference component) and `roost lambda run` (the Lambda host)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from roost.cli.output import handle_errors

JsonLogOpt = Annotated[bool, typer.Option("--json", help="Log JSON lines {time, level, logger, message} "
                                                         "instead of text.")]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record: ``{"time", "level", "logger", "message"}`` (+ ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _logging(level: str, as_json: bool = False) -> None:
    if as_json:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@handle_errors
def serve(model: Annotated[Path | None, typer.Option("--model", help="XGBoost model (JSON/UBJ) or .onnx.")] = None,
          image_model: Annotated[Path | None, typer.Option("--image-model",
                                                           help="Folder with model.onnx + labels.json.")] = None,
          engine: Annotated[str, typer.Option("--engine", help="auto | xgboost | compiled | onnx")] = "auto",
          request_topic: Annotated[str, typer.Option("--request-topic")] = "local/inference",
          result_topic: Annotated[str, typer.Option("--result-topic")] = "local/result",
          name: Annotated[str | None, typer.Option("--name", help="Model name in replies.")] = None,
          version: Annotated[str, typer.Option("--version", help="Model version in replies.")] = "1.0.0",
          max_batch: Annotated[int, typer.Option("--max-batch", min=1, max=100_000)] = 64,
          max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, max=1000.0)] = 2.0,
          cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Compiled-model cache.")] = None,
          allowed_dir: Annotated[list[Path] | None, typer.Option("--allowed-dir",
                                                                 help="Folder image requests may read.")] = None,
          top_k: Annotated[int, typer.Option("--top-k", min=1, max=1000)] = 5,
          threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
          max_request_bytes: Annotated[int, typer.Option(
              "--max-request-bytes", min=1, help="Largest request (message or event body), bytes.")] = 4 * 1024 * 1024,
          joint_centre: Annotated[str | None, typer.Option(
              "--joint-centre", help="Joint inference: the centre replica's ws://HOST:PORT/v1/stream.")] = None,
          joint_centre_token_file: Annotated[Path | None, typer.Option(
              "--joint-centre-token-file", help="File holding the centre session's token (never on argv).")] = None,
          joint_filter: Annotated[str | None, typer.Option(
              "--joint-filter", help="Joint inference's hard-example filter: threshold | cross-entropy | margin "
                                     "| random (--model is then the edge model).")] = None,
          joint_threshold: Annotated[float | None, typer.Option(
              "--joint-threshold", help="The filter's threshold, 0..1 (default: Sedna's).")] = None,
          log_level: Annotated[str, typer.Option("--log-level")] = "INFO", as_json: JsonLogOpt = False) -> None:
    """Serve a model to local components over pub/sub (run as a component)."""
    from roost.serve.service import ServeOptions, run_service

    _logging(log_level, as_json)
    default_name = os.environ.get("ROOST_COMPONENT_NAME") or (model or image_model or Path("model")).stem
    options = ServeOptions(model=model, image_model=image_model, engine=engine, request_topic=request_topic,
                           result_topic=result_topic, name=name or default_name, version=version,
                           max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0,
                           cache_dir=cache_dir or Path(os.environ.get("ROOST_SERVE_CACHE", ".roost-serve-cache")),
                           allowed_dirs=[p.resolve() for p in allowed_dir or []], top_k=top_k, threads=threads,
                           max_request_bytes=max_request_bytes, joint_centre=joint_centre,
                           joint_centre_token_file=joint_centre_token_file, joint_filter=joint_filter,
                           joint_threshold=joint_threshold)
    asyncio.run(run_service(options))


lambda_app = typer.Typer(help="Host unchanged AWS Lambda handlers as components.", no_args_is_help=True)


LAMBDA_RUN_HELP = (
    "Run handler(event, context) for each request on the request topic.\n\n"
    "The handler runs in a worker process, one invocation at a time: --timeout kills and replaces a worker "
    "that overruns; --memory-mb limits what the invocations allocate (RLIMIT_AS, set once the handler is "
    "imported; a handler over it gets HANDLER_OUT_OF_MEMORY and the worker is replaced).")


@lambda_app.command("run", help=LAMBDA_RUN_HELP)
@handle_errors
def lambda_run(handler: Annotated[str, typer.Option("--handler", help="module.function")],
               path: Annotated[Path | None, typer.Option("--path", help="Folder holding the module.")] = None,
               request_topic: Annotated[str, typer.Option("--request-topic")] = "local/inference",
               result_topic: Annotated[str, typer.Option("--result-topic")] = "local/result",
               timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Per invocation, s.")] = 3.0,
               function_name: Annotated[str | None, typer.Option("--function-name")] = None,
               memory_mb: Annotated[int, typer.Option(
                   "--memory-mb", min=1, max=1024 * 1024,
                   help="MiB the invocations may allocate: the worker's address space (RLIMIT_AS) is limited, "
                        "once the handler is imported, to its virtual size then plus this. Virtual memory counts "
                        "(a new thread's stack and malloc arena too; imports made inside an invocation too); the "
                        "import itself is not limited. Over it: HANDLER_OUT_OF_MEMORY and a fresh worker.")] = 128,
               concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64)] = 1,
               log_level: Annotated[str, typer.Option("--log-level")] = "INFO", as_json: JsonLogOpt = False) -> None:
    """Run handler(event, context) for each request on the request topic (help text: LAMBDA_RUN_HELP)."""
    from roost.serve.lambda_host import LambdaOptions, run_lambda

    _logging(log_level, as_json)
    options = LambdaOptions(handler=handler, path=path.resolve() if path else None, request_topic=request_topic,
                            result_topic=result_topic, timeout_s=timeout, function_name=function_name,
                            memory_mb=memory_mb, concurrency=concurrency)
    asyncio.run(run_lambda(options))
