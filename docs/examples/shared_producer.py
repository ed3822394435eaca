"""An independent producer: puts 0 .. N-1, then the sentinel None, into a shared queue.

It knows the queue by its address and key, from the environment:
MPFAULT_QUEUE=host:port and MPFAULT_AUTHKEY=hex (what shared_server.py prints, and
what mpfault's Harness.program() sets).  Run it:  python shared_producer.py [N]
"""

import os
import sys
from multiprocessing.managers import BaseManager


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue")


def connect():
    """The shared queue (a proxy: every call is a request to the server)."""
    host, port = os.environ["MPFAULT_QUEUE"].rsplit(":", 1)
    key = bytes.fromhex(os.environ["MPFAULT_AUTHKEY"])
    manager = QueueManager(address=(host, int(port)), authkey=key)
    manager.connect()
    return manager.get_queue()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    q = connect()
    for i in range(n):
        q.put(i)  # returns once the server has the item
        print(f"Producer: put {i}", flush=True)
    q.put(None)
    print("Producer: done", flush=True)
