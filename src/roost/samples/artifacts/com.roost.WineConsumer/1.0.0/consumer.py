"""Sample component: send wine records for inference and log the results (like the original consumer).

Sends a Lambda-style event (the records of the JSON file named by the first argument: the upstream
consumer's two sample records) every INTERVAL_SECONDS until MSG_COUNT_LIMIT results came back
(0: run forever). It needs only the roost.ipc client (or awsiotsdk), like any component. Pub/sub
keeps no messages for absent subscribers, so a request sent before the model server subscribed
gets no answer: after RETRY_SECONDS without a result the request is sent again.
"""

import json
import os
import queue
import sys

from roost.ipc.client import Received, SyncIpcClient

limit = int(os.environ.get("MSG_COUNT_LIMIT", "10"))
interval = float(os.environ.get("INTERVAL_SECONDS", "5"))
retry = float(os.environ.get("RETRY_SECONDS", "2"))
results: "queue.Queue[str]" = queue.Queue()


def on_result(message: Received) -> None:
    results.put(message.payload.decode())


with SyncIpcClient() as ipc:
    ipc.subscribe(os.environ["RESULT_TOPIC"], on_result)
    with open(sys.argv[1], encoding="utf-8") as fh:
        body = json.dumps(json.load(fh))
    received = 0
    while limit == 0 or received < limit:
        print(f"request: {body}", flush=True)
        ipc.publish(os.environ["REQUEST_TOPIC"], {"body": body, "isBase64Encoded": False})
        try:
            result = results.get(timeout=max(interval, retry))
        except queue.Empty:
            print(f"no result within {max(interval, retry):g} s; the model may still be loading", flush=True)
            continue
        print(f"result: {result}", flush=True)
        received += 1
        if limit == 0 or received < limit:
            try:  # wait out the interval (late results of retried requests are dropped)
                results.get(timeout=interval)
            except queue.Empty:
                pass
