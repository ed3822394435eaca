"""The classic tutorial, third program: a consumer that waits with ``get(timeout=...)``.

``queue.get(timeout=t)`` blocks for at most ``t`` seconds, then raises
``queue.Empty``.  The tutorial's consumer just tries again; this one gives up
after ``patience`` timeouts in a row, so that it ends even when the sentinel
never comes.

Run it: ``python -m timeout`` (from this directory).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module


def producer(queue, n=10):
    """Put ``0 .. n-1``, then the sentinel ``None``."""
    for i in range(n):
        queue.put(i)
    queue.put(None)
    print("Producer: done", flush=True)


def consumer(queue, timeout=0.5, patience=3):
    """Get items until the sentinel, or until ``patience`` gets in a row time out.

    Returns what it got, in both cases.
    """
    got = []
    misses = 0
    while True:
        try:
            item = queue.get(timeout=timeout)  # blocks for at most `timeout` seconds
        except queue_module.Empty:
            misses += 1
            print(f"Consumer: gave up waiting ({misses}/{patience})", flush=True)
            if misses >= patience:
                return got
            continue
        misses = 0
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
