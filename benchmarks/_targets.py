"""Targets of the benchmark children.

They live in a module of their own, with no import of ``mpfault``, so that a raw
``spawn``/``forkserver`` child (which imports the target's module and re-runs the
main script as ``__mp_main__``) pays nothing for the harness it is compared with.
"""

from __future__ import annotations

import time
from typing import Any


def trivial() -> None:
    """Do nothing: the child's cost is its start-up and shutdown only."""


def producer(q: Any, n: int, item: Any, barrier: Any, out: Any) -> None:
    """Put ``n`` items (the ints ``0..n-1`` if ``item`` is None, else ``n`` times
    ``item``); report (via ``out``) the monotonic time the first put began."""
    put = q.put
    barrier.wait()
    t0 = time.monotonic_ns()
    if item is None:
        for i in range(n):
            put(i)
    else:
        for _ in range(n):
            put(item)
    out.put(("first_put", t0))


def consumer(q: Any, n: int, barrier: Any, out: Any) -> None:
    """Get ``n`` items; report (via ``out``) when the last get returned."""
    get = q.get
    barrier.wait()
    for _ in range(n):
        get()
    out.put(("last_get", time.monotonic_ns()))
