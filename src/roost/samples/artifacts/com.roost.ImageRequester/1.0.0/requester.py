"""Sample component: ask the image classifier about an image and log the label (like the original requester)."""

import json
import os
import threading
import time

from roost.ipc.client import SyncIpcClient

limit = int(os.environ.get("MSG_COUNT_LIMIT", "10"))
interval = float(os.environ.get("INTERVAL_SECONDS", "5"))
image_dir = os.environ["IMAGE_DIR"]
fname = next(f for f in sorted(os.listdir(image_dir)) if f.lower().endswith((".jpg", ".jpeg", ".png")))
done = threading.Event()
results = 0


def on_result(message):
    global results
    label = message.json if message.json is not None else message.payload.decode()
    print(f"result: {label}", flush=True)
    results += 1
    if limit and results >= limit:
        done.set()


with SyncIpcClient() as ipc:
    ipc.subscribe(os.environ["RESULT_TOPIC"], on_result)
    sent = 0
    while not done.is_set() and (limit == 0 or sent < limit):
        request = {"image_dir": image_dir, "fname": fname}
        print(f"request: {json.dumps(request)}", flush=True)
        ipc.publish(os.environ["REQUEST_TOPIC"], request)
        sent += 1
        time.sleep(interval)
    done.wait(10)
