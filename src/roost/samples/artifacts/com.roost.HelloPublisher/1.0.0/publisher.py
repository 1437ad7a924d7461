"""Sample component: publish a greeting on local pub/sub every few seconds (Roost IPC client)."""

import json
import os
import sys
import time

from roost.ipc.client import SyncIpcClient

message, interval, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
topic = os.environ["HELLO_TOPIC"]
with SyncIpcClient() as ipc:
    seq = 0
    while count == 0 or seq < count:
        seq += 1
        payload = {"seq": seq, "message": message, "from": os.environ["AWS_IOT_THING_NAME"]}
        ipc.publish(topic, payload)
        print(f"published: {json.dumps(payload)}", flush=True)
        time.sleep(interval)
