"""The server of a queue that independently started programs share (no mpfault).

Run it:  python shared_server.py [PORT]   (prints the address and the key to give
the producer and the consumer, then serves until Ctrl-C).
"""

import os
import queue
import sys
from multiprocessing.managers import BaseManager

shared = queue.Queue()


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue", callable=lambda: shared)

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    key = os.urandom(16)
    server = QueueManager(address=("127.0.0.1", port), authkey=key).get_server()
    address = f"127.0.0.1:{server.address[1]}"
    print(f"export MPFAULT_QUEUE={address} MPFAULT_AUTHKEY={key.hex()}", flush=True)
    server.serve_forever()
