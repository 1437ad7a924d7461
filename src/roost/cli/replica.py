"""`roost cluster replica`: the streaming replica a cluster service type's component runs on a node
(see ``docs/cluster-streaming.md``). Registered in the ``cluster`` group (:mod:`roost.cli.cluster`).

Heavy libraries (websockets, the model engines) are imported inside the command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from roost import eventloop
from roost.cli.output import handle_errors
from roost.cli.serve import JsonLogOpt, _logging


@handle_errors
def replica(
    kind: Annotated[str, typer.Option("--kind", help="tabular (windows of rows) or image.")],
    model: Annotated[Path, typer.Option("--model", help="XGBoost model file (tabular), or a folder with "
                                                        "model.onnx + labels.json (image).")],
    replica_id: Annotated[str, typer.Option("--replica-id", help="This replica's id (tokens name it).")],
    public_key: Annotated[str, typer.Option("--public-key", help="The hub's session-token public key "
                                                                 "(base64url, 32 bytes).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 0,
    sessions: Annotated[int, typer.Option("--sessions", min=1, max=1000,
                                          help="Concurrent sessions served.")] = 1,
    window: Annotated[int, typer.Option("--window", min=1, max=65535, help="Rows per window.")] = 40,
    max_rows: Annotated[int | None, typer.Option("--max-rows", min=1, max=65535,
                                                 help="Most rows a window may hold (default --window).")] = None,
    idle_timeout: Annotated[float, typer.Option("--idle-timeout", min=0.001, max=86400.0,
                                                help="Close a session after this many seconds without a "
                                                     "window (4000 idle timeout).")] = 300.0,
    engine: Annotated[str, typer.Option("--engine", help="auto | xgboost | compiled | onnx (tabular).")] = "auto",
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=1000, help="Labels per image.")] = 5,
    max_frame_bytes: Annotated[int | None, typer.Option(
        "--max-frame-bytes", min=1024, help="Largest message (default 1 MiB tabular, 16 MiB image).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Compiled-model cache "
                                                                       "(default $ROOST_SERVE_CACHE).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="onnxruntime threads (image).")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
    as_json: JsonLogOpt = False,
) -> None:
    """Serve a model to streaming sessions over a websocket (run as a cluster component)."""
    _without_sklearn()
    from roost.cluster.replica import ReplicaOptions, run_replica

    _logging(log_level, as_json)
    options = ReplicaOptions(
        kind=kind,  # type: ignore[arg-type]  # checked by ReplicaOptions.check
        model=model, replica_id=replica_id, public_key=public_key, host=host, port=port, sessions=sessions,
        window=window, max_rows=max_rows, idle_timeout=idle_timeout, engine=engine, top_k=top_k,
        cache_dir=cache_dir or Path(os.environ.get("ROOST_SERVE_CACHE", ".roost-serve-cache")),
        max_frame_bytes=max_frame_bytes, threads=threads)
    eventloop.run(run_replica(options))


def _without_sklearn() -> None:
    """Keep scikit-learn out of a replica process.

    xgboost imports scikit-learn whenever it is installed, for its sklearn-style estimators, which a
    replica never uses (it loads a Booster). That import is 1.6 s of a 2.2 s model start here, paid on
    every cold admission. Marking it absent makes xgboost take its no-sklearn path; nothing else in a
    replica process imports it.
    """
    import sys

    sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]  # None in sys.modules: the documented way to block an import
