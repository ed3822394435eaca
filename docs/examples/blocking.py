"""The classic tutorial, first program: a consumer that blocks on ``get()``.

A producer puts ``n`` values then the sentinel ``None``; the consumer calls
``queue.get()``, which blocks until an item arrives, and stops at the sentinel.
It never gives up: without a sentinel it waits forever.

Run it: ``python -m blocking`` (from this directory).
"""

from __future__ import annotations

import multiprocessing


def producer(queue, n=10):
    """Put ``0 .. n-1``, then the sentinel ``None``."""
    for i in range(n):
        queue.put(i)
    queue.put(None)
    print("Producer: done", flush=True)


def consumer(queue):
    """Get items until the sentinel; return them."""
    got = []
    while True:
        item = queue.get()  # blocks until an item arrives
        if item is None:
            break
        print(f"Consumer: got {item}", flush=True)
        got.append(item)
    print("Consumer: done", flush=True)
    return got


def main(ctx=None, n=10):
    """Run the program with plain multiprocessing; return the two exit codes."""
    ctx = ctx or multiprocessing.get_context()
    queue = ctx.Queue()
    consumer_process = ctx.Process(target=consumer, args=(queue,))
    consumer_process.start()
    producer_process = ctx.Process(target=producer, args=(queue, n))
    producer_process.start()
    producer_process.join()
    consumer_process.join()
    return producer_process.exitcode, consumer_process.exitcode


if __name__ == "__main__":
    main()
