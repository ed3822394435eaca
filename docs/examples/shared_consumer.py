"""An independent consumer: gets from a shared queue until the sentinel None.

It waits at most TIMEOUT seconds per get (env, default 1) and gives up after PATIENCE
empty waits in a row (env, default 5), exiting with status 2; at the end it prints
what it got.  Run it:  python shared_consumer.py   (environment as for the producer)
"""

import json
import os
import queue
import sys

from shared_producer import connect

if __name__ == "__main__":
    timeout = float(os.environ.get("TIMEOUT", "1"))
    patience = int(os.environ.get("PATIENCE", "5"))
    q = connect()
    got, misses = [], 0
    while True:
        try:
            item = q.get(timeout=timeout)  # the server waits; Empty comes back as Empty
        except queue.Empty:
            misses += 1
            print(f"Consumer: nothing for {timeout} s ({misses}/{patience})", flush=True)
            if misses >= patience:
                print(f"Consumer: gave up; got {json.dumps(got)}", flush=True)
                sys.exit(2)
            continue
        misses = 0
        if item is None:
            break
        got.append(item)
    print(f"Consumer: done; got {json.dumps(got)}", flush=True)
