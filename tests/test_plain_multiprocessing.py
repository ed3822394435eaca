"""A test module that knows nothing of mpfault: the standard library's own pools and
queues.  ``python -m pytest --mpfault-instrument --mpfault=...`` runs it in chaos mode
(tests/test_instrument_plugin.py does)."""

from __future__ import annotations

import multiprocessing
import queue
from concurrent.futures import ProcessPoolExecutor


def double(x: int) -> int:
    return 2 * x


def produce(q: multiprocessing.Queue, n: int) -> None:  # type: ignore[type-arg]
    for i in range(n):
        q.put(i)
    q.put(None)


def test_pool_map() -> None:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(double, range(20)) == [2 * x for x in range(20)]


def test_executor_map() -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert list(ex.map(double, range(20))) == [2 * x for x in range(20)]


def test_plain_queue() -> None:
    ctx = multiprocessing.get_context("forkserver")
    q = ctx.Queue()
    p = ctx.Process(target=produce, args=(q, 10))
    p.start()
    got = []
    while (x := q.get(timeout=30)) is not None:
        got.append(x)
    p.join(30)
    assert got == list(range(10))
    try:
        q.get(timeout=0.01)
    except queue.Empty:
        pass
