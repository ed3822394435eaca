"""Deliberately broken queues for testing the contract (``--queue module:factory``).

Each is built on real multiprocessing queues and breaks exactly one documented
behaviour:

* :func:`early_timeout` - ``get(timeout=t)`` gives up after ``t/2`` (row 6);
* :func:`never_full` - ignores ``maxsize``, so ``put`` never blocks nor raises
  ``queue.Full`` (rows 1, 3, 5);
* :func:`reordering` - spreads a producer's items over two pipes and reads the second
  pipe first, so a producer's items can arrive out of order (row 20).

Each factory has the ``factory(ctx, maxsize)`` signature of ``--queue``.
"""

from __future__ import annotations

import multiprocessing.connection
import queue
import time
from multiprocessing.context import BaseContext
from typing import Any


class _Delegating:
    """Forwards the queue API to a real ``multiprocessing.Queue``."""

    def __init__(self, inner: Any) -> None:
        self._q = inner

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        self._q.put(obj, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._q.get(block, timeout)

    def put_nowait(self, obj: Any) -> None:
        self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def empty(self) -> bool:
        return bool(self._q.empty())

    def full(self) -> bool:
        return bool(self._q.full())

    def qsize(self) -> int:
        return int(self._q.qsize())

    def close(self) -> None:
        self._q.close()

    def cancel_join_thread(self) -> None:
        self._q.cancel_join_thread()


class EarlyTimeoutQueue(_Delegating):
    """``get(timeout=t)`` waits only ``t/2`` before raising ``queue.Empty``."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Like Queue.get, but a positive timeout is halved (the bug)."""
        if block and timeout is not None and timeout > 0:
            timeout = timeout / 2
        return self._q.get(block, timeout)


class NeverFullQueue(_Delegating):
    """Ignores ``maxsize``: ``put`` never blocks and never raises ``queue.Full``."""

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put without ever blocking or raising Full (the bug)."""
        self._q.put(obj)

    def full(self) -> bool:
        """Never full."""
        return False


class ReorderingQueue:
    """Two pipes (real queues); each process alternates between them when putting, and
    ``get`` prefers the second.  Capacity is a shared semaphore, as in CPython."""

    def __init__(self, ctx: BaseContext, maxsize: int) -> None:
        from multiprocessing.synchronize import SEM_VALUE_MAX  # type: ignore[attr-defined]

        self._maxsize = maxsize if maxsize > 0 else SEM_VALUE_MAX
        self._slots = ctx.BoundedSemaphore(self._maxsize)
        self._a = ctx.Queue()
        self._b = ctx.Queue()
        self._turn = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_turn"] = 0  # a per-process counter
        return state

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Take a slot, then put on this process's next shard."""
        if not self._slots.acquire(block, timeout):
            raise queue.Full
        shard = self._a if self._turn % 2 == 0 else self._b
        self._turn += 1
        shard.put(obj)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Get from the second shard first (the bug), else the first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for shard in (self._b, self._a):
                try:
                    obj = shard.get_nowait()
                except queue.Empty:
                    continue
                self._slots.release()
                return obj
            if not block:
                raise queue.Empty
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise queue.Empty
            readers = [self._a._reader, self._b._reader]  # type: ignore[attr-defined]
            multiprocessing.connection.wait(readers, remaining)

    def put_nowait(self, obj: Any) -> None:
        """put(obj, False)."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """get(False)."""
        return self.get(False)

    def empty(self) -> bool:
        """Whether both shards look empty."""
        return bool(self._a.empty() and self._b.empty())

    def full(self) -> bool:
        """Whether every slot is taken."""
        return self.qsize() >= self._maxsize

    def qsize(self) -> int:
        """Slots taken."""
        return self._maxsize - int(self._slots.get_value())

    def close(self) -> None:
        """Close both shards."""
        self._a.close()
        self._b.close()

    def cancel_join_thread(self) -> None:
        """Do not wait for the shards' feeders at exit."""
        self._a.cancel_join_thread()
        self._b.cancel_join_thread()


def early_timeout(ctx: BaseContext, maxsize: int) -> EarlyTimeoutQueue:
    """A queue whose ``get(timeout)`` returns (raises Empty) after half the timeout."""
    return EarlyTimeoutQueue(ctx.Queue(maxsize))


def never_full(ctx: BaseContext, maxsize: int) -> NeverFullQueue:
    """A queue that ignores *maxsize* and so never raises ``queue.Full``."""
    return NeverFullQueue(ctx.Queue())


def reordering(ctx: BaseContext, maxsize: int) -> ReorderingQueue:
    """A queue that delivers a producer's items out of order when several are waiting."""
    return ReorderingQueue(ctx, maxsize)
