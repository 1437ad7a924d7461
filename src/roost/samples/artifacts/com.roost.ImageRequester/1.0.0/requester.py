"""Sample component: ask the image classifier about an image and log the label (like the original requester).

Sends ``{"image_dir", "fname"}`` every INTERVAL_SECONDS until MSG_COUNT_LIMIT labels came back
(0: forever); a request that got no answer within RETRY_SECONDS (the classifier may still be
loading) is sent again.
"""

import json
import os
import queue

from roost.ipc.client import Received, SyncIpcClient

limit = int(os.environ.get("MSG_COUNT_LIMIT", "10"))
interval = float(os.environ.get("INTERVAL_SECONDS", "5"))
retry = float(os.environ.get("RETRY_SECONDS", "2"))
image_dir = os.environ["IMAGE_DIR"]
fname = next(f for f in sorted(os.listdir(image_dir)) if f.lower().endswith((".jpg", ".jpeg", ".png")))
labels: "queue.Queue[str]" = queue.Queue()


def on_result(message: Received) -> None:
    labels.put(message.json if isinstance(message.json, str) else message.payload.decode())


with SyncIpcClient() as ipc:
    ipc.subscribe(os.environ["RESULT_TOPIC"], on_result)
    received = 0
    while limit == 0 or received < limit:
        request = {"image_dir": image_dir, "fname": fname}
        print(f"request: {json.dumps(request)}", flush=True)
        ipc.publish(os.environ["REQUEST_TOPIC"], request)
        try:
            label = labels.get(timeout=max(interval, retry))
        except queue.Empty:
            print(f"no result within {max(interval, retry):g} s; the classifier may still be loading", flush=True)
            continue
        print(f"result: {label}", flush=True)
        received += 1
        if limit == 0 or received < limit:
            try:
                labels.get(timeout=interval)
            except queue.Empty:
                pass
