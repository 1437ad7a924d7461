"""Sample component: send wine records for inference and log the results (like the original consumer)."""

import json
import os
import threading
import time

from roost.ipc.client import SyncIpcClient
from roost.serve.wine import sample_records

limit = int(os.environ.get("MSG_COUNT_LIMIT", "10"))
interval = float(os.environ.get("INTERVAL_SECONDS", "5"))
done = threading.Event()
results = 0


def on_result(message):
    global results
    print(f"result: {message.payload.decode()}", flush=True)
    results += 1
    if limit and results >= limit:
        done.set()


with SyncIpcClient() as ipc:
    ipc.subscribe(os.environ["RESULT_TOPIC"], on_result)
    body = json.dumps(sample_records())
    sent = 0
    while not done.is_set() and (limit == 0 or sent < limit):
        event = {"body": body, "isBase64Encoded": False}
        print(f"request: {body}", flush=True)
        ipc.publish(os.environ["REQUEST_TOPIC"], event)
        sent += 1
        time.sleep(interval)
    done.wait(10)
