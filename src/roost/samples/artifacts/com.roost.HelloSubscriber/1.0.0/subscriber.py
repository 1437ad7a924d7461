"""Sample component: log every greeting received on local pub/sub (Roost IPC client)."""

import sys
import threading

from roost.ipc.client import SyncIpcClient

topic = sys.argv[1]
with SyncIpcClient() as ipc:
    ipc.subscribe(topic, lambda msg: print(f"received on {msg.topic}: {msg.payload.decode()}", flush=True))
    print(f"subscribed to {topic}", flush=True)
    threading.Event().wait()
