"""The classic tutorial, second program: a consumer that polls with ``get(block=False)``.

``queue.get(block=False)`` returns an item at once or raises ``queue.Empty``; the
consumer polls in a loop until the sentinel ``None``.  The tutorial sleeps a
little after each ``Empty``; this version spins (a sleep is no synchronisation:
it only makes the loop slower), and gives up after ``deadline`` seconds, so that
it cannot spin forever when the sentinel never comes.

Run it: ``python -m busy_wait`` (from this directory).
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time


def producer(queue, n=10):
    """Put ``0 .. n-1``, then the sentinel ``None``."""
    for i in range(n):
        queue.put(i)
    queue.put(None)
    print("Producer: done", flush=True)


def consumer(queue, deadline=10.0):
    """Poll for items until the sentinel, or until ``deadline`` seconds have passed.

    Returns what it got, in both cases.
    """
    got = []
    polls = 0
    end = time.monotonic() + deadline
    while True:
        try:
            item = queue.get(block=False)  # returns at once, or raises Empty
        except queue_module.Empty:
            polls += 1
            if time.monotonic() >= end:
                print(f"Consumer: gave up after {deadline} s ({polls} empty polls)", flush=True)
                return got
            continue
        if item is None:
            break
        print(f"Consumer: got {item}", flush=True)
        got.append(item)
    print(f"Consumer: done ({polls} empty polls)", flush=True)
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
