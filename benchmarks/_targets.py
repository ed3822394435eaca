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
    ``item``).  Reports (via ``out``) the monotonic time the first put began, then,
    once the parent sets ``done`` (the consumer got everything, so the queue's
    feeder thread has sent everything), the CPU time the process used."""
    _pin(cpu)
    put = q.put
    barrier.wait()
    c0 = time.process_time()
    t0 = time.monotonic_ns()
    if item is None:
        for i in range(n):
            put(i)
    else:
        for _ in range(n):
            put(item)
    out.put(("first_put", t0))
    done.wait()
    out.put(("producer_cpu", time.process_time() - c0))


def consumer(q: Any, n: int, barrier: Any, out: Any, cpu: int | None = None) -> None:
    """Get ``n`` items; report (via ``out``) the monotonic time the last get
    returned and the CPU time used."""
    _pin(cpu)
    get = q.get
    barrier.wait()
    c0 = time.process_time()
    for _ in range(n):
        get()
    t1 = time.monotonic_ns()
    out.put(("last_get", t1))
    out.put(("consumer_cpu", time.process_time() - c0))
