"""Targets of the benchmark children.

They live in a module of their own, with no import of ``mpfault``, so that a raw
``spawn``/``forkserver`` child (which imports the target's module and re-runs the
main script as ``__mp_main__``) pays nothing for the harness it is compared with.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a child ms
if TYPE_CHECKING:
    from typing import Any


def trivial(*queues: Any) -> None:
    """Do nothing (with the queues it is given): the child's cost is its start-up
    (unpickling the arguments included) and shutdown only."""


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def producer(
    q: Any, n: int, item: Any, barrier: Any, out: Any, done: Any, cpu: int | None = None
) -> None:
    """Put ``n`` items (the ints ``0..n-1`` if ``item`` is None, else ``n`` times
    ``item``).  Reports (via ``out``) how long the first put took and the monotonic
    time the second began (the timed region starts there: the first put starts the
    queue's feeder thread, and a harness queue's creates this process's history
    file, once per process), then, once the parent sets ``done`` (the consumer got
    everything, so the feeder thread has sent everything), the CPU time used from
    the second put on."""
    _pin(cpu)
    put = q.put
    barrier.wait()
    t = time.monotonic_ns()
    put(0 if item is None else item)
    c0 = time.process_time()
    t0 = time.monotonic_ns()
    if item is None:
        for i in range(1, n):
            put(i)
    else:
        for _ in range(1, n):
            put(item)
    out.put(("first_put", t0))
    out.put(("first_put_cost", t0 - t))
    done.wait()
    out.put(("producer_cpu", time.process_time() - c0))


def consumer(q: Any, n: int, barrier: Any, out: Any, cpu: int | None = None) -> None:
    """Get ``n`` items; report (via ``out``) the monotonic time the last get
    returned and the CPU time used from the second get on."""
    _pin(cpu)
    get = q.get
    barrier.wait()
    get()
    c0 = time.process_time()
    for _ in range(1, n):
        get()
    t1 = time.monotonic_ns()
    out.put(("last_get", t1))
    out.put(("consumer_cpu", time.process_time() - c0))


def burst_producer(
    queues: Any, order: Any, m: int, item: Any, ready: Any, out: Any, cpu: int | None = None
) -> None:
    """For each burst ``k``: wait until the consumer has got everything of the
    previous burst (a byte on ``ready``), then put ``m`` items into
    ``queues[order[k]]``.  Reports (via ``out``) the list of (monotonic time the
    burst began, CPU seconds the process used from then until the consumer had it
    all)."""
    _pin(cpu)
    puts = [q.put for q in queues]
    items = list(range(m)) if item is None else [item] * m
    res = []
    ready.recv_bytes()
    for k in order:
        put = puts[k]
        c0 = time.process_time()
        t0 = time.monotonic_ns()
        for x in items:
            put(x)
        ready.recv_bytes()  # the consumer got them all: the feeder thread is idle again
        res.append((t0, time.process_time() - c0))
    out.put(("producer", res))


def burst_consumer(
    queues: Any, order: Any, m: int, ready: Any, out: Any, cpu: int | None = None
) -> None:
    """Get the ``m`` items of each burst from ``queues[order[k]]``, then tell the
    producer (a byte on ``ready``).  Reports the list of (monotonic time the
    burst's last get returned, CPU seconds used in the burst)."""
    _pin(cpu)
    gets = [q.get for q in queues]
    res = []
    ready.send_bytes(b"go")
    for k in order:
        get = gets[k]
        c0 = time.process_time()
        for _ in range(m):
            get()
        t1 = time.monotonic_ns()
        res.append((t1, time.process_time() - c0))
        ready.send_bytes(b"go")
    out.put(("consumer", res))
