"""A consumer that knows nothing of mpfault: it gets until the sentinel None.

It waits GET_TIMEOUT seconds (env, default 10) per get and prints "Empty" each time
one runs out; at the end it prints the items got as JSON.
"""

import json
import os
import queue as stdqueue
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue")
host, port = os.environ["MPFAULT_QUEUE"].rsplit(":", 1)
manager = QueueManager(
    address=(host, int(port)), authkey=bytes.fromhex(os.environ["MPFAULT_AUTHKEY"])
)
manager.connect()
queue = manager.get_queue()
timeout = float(os.environ.get("GET_TIMEOUT", "10"))
got = []
while True:
    try:
        item = queue.get(timeout=timeout)
    except stdqueue.Empty:
        print("Empty", flush=True)
        continue
    if item is None:
        break
    got.append(item)
print("got", json.dumps(got), flush=True)
