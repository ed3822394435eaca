"""A producer that knows nothing of mpfault: it puts N items into a manager queue.

Usage: producer.py [N]; the queue's address and key come from the environment
(MPFAULT_QUEUE=host:port, MPFAULT_AUTHKEY=hex), as a harness gives them.
"""

import os
import sys
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
n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
for i in range(n):
    queue.put(i)
    print("put", i, flush=True)
queue.put(None)
print("producer: done", flush=True)
