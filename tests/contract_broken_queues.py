"""Deliberately broken queues for testing the contract (``--queue module:factory``).

Each is built on real multiprocessing queues and breaks exactly one documented
behaviour:

* :func:`early_timeout` - ``get(timeout=t)`` gives up after ``t/2`` (row 6);
* :func:`slightly_early` - ``get(timeout=t)`` gives up 0.95 ms early: within what the
  docs allow, so row 6 *differs* (not a failure);
* :func:`never_full` - ignores ``maxsize``, so ``put`` never blocks nor raises
  ``queue.Full`` (rows 1, 3, 5, 8, 71);
* :func:`reordering` - spreads a producer's items over two pipes and reads the second
  pipe first, so a producer's items can arrive out of order (row 20);
* :func:`zero_timeout_empty` - ``get(timeout=0)`` raises ``Empty`` even on a non-empty
  queue (row 8);
* :func:`flag_close` - ``close()`` only sets a flag and ``join_thread()`` returns at
  once, so nothing is flushed (row 30);
* :func:`fragile_feeder` - the feeder thread dies on one unpicklable item, so every
  later put vanishes (row 36);
* :func:`finite_default` - ``get()``/``put()`` with no timeout give up after 1 s
  (rows 1 and 2);
* :func:`byte_capacity` - capacity counted in 64-byte units of the pickled item, not
  in items (row 71);
* :func:`context_bound` - usable only from the processes of its own context
  (:func:`bound_context`): without ``--context`` the preflight fails, with it every
  row passes.

Each factory has the ``factory(ctx, maxsize)`` signature of ``--queue``.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import pickle
import queue
import time
from multiprocessing import context as mpcontext
from multiprocessing import queues as mpqueues
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

    def join_thread(self) -> None:
        self._q.join_thread()

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

    def join_thread(self) -> None:
        """Join both shards' feeders."""
        self._a.join_thread()
        self._b.join_thread()

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


class SlightlyEarlyQueue(_Delegating):
    """``get(timeout=t)`` gives up 0.95 ms before *t* (allowed: "at most t seconds")."""

    EARLY = 0.00095

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        # the first wait() and get_nowait() of a process are slower (lazy set-up): pay
        # for them here, not inside the first timed get()
        multiprocessing.connection.wait([inner._reader], 0)
        try:
            inner.get_nowait()
        except queue.Empty:
            pass

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Like Queue.get, but a positive timeout ends 0.95 ms early (a precise wait:
        ``poll()`` alone rounds up to whole milliseconds)."""
        if not block or timeout is None or timeout <= self.EARLY:
            return self._q.get(block, timeout)
        end = time.monotonic() + timeout - self.EARLY
        reader = self._q._reader
        while True:
            try:
                return self._q.get_nowait()
            except queue.Empty:
                pass
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise queue.Empty
            if remaining > 0.002:
                multiprocessing.connection.wait([reader], remaining - 0.002)
            else:  # the last sub-millisecond part of the timeout itself, not a sync
                multiprocessing.connection.wait([reader], 0) or time.sleep(remaining)


class ZeroTimeoutEmptyQueue(_Delegating):
    """``get(timeout=0)`` raises ``queue.Empty`` whatever the queue holds (the bug)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Like Queue.get, but a blocking get with timeout 0 always raises Empty."""
        if block and timeout is not None and timeout <= 0:
            raise queue.Empty
        return self._q.get(block, timeout)


class FlagCloseQueue(_Delegating):
    """``close()`` only sets a flag (later calls are refused as CPython refuses them), and
    ``join_thread()`` returns at once: the buffer is never flushed (the bug)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_q": self._q, "_closed": False}

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Refused once closed."""
        self._check()
        self._q.put(obj, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Refused once closed."""
        self._check()
        return self._q.get(block, timeout)

    def close(self) -> None:
        """Only a flag (the bug)."""
        self._closed = True

    def join_thread(self) -> None:
        """Returns at once (the bug): nothing is flushed."""
        assert self._closed, f"Queue {self!r} not closed"


def _die(e: BaseException, obj: Any) -> None:
    raise SystemExit  # ends the feeder thread quietly


class FragileFeederQueue(mpqueues.Queue):  # type: ignore[type-arg]
    """A real ``multiprocessing.Queue`` whose feeder thread dies on the first item it
    cannot pickle, so every later put stays in the buffer forever (the bug)."""

    _on_queue_feeder_error = staticmethod(_die)


class FiniteDefaultQueue(_Delegating):
    """``get()`` and ``put()`` without a timeout give up after 1 s (the bug)."""

    DEFAULT = 1.0

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """A blocking put with no timeout waits at most 1 s."""
        if block and timeout is None:
            timeout = self.DEFAULT
        self._q.put(obj, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """A blocking get with no timeout waits at most 1 s."""
        if block and timeout is None:
            timeout = self.DEFAULT
        return self._q.get(block, timeout)


class ByteCapacityQueue:
    """``maxsize`` counts 64-byte units of the pickled item, not items (the bug): small
    items cost one slot each, a 4 KiB item 65."""

    UNIT = 64

    def __init__(self, ctx: BaseContext, maxsize: int) -> None:
        from multiprocessing.synchronize import SEM_VALUE_MAX  # type: ignore[attr-defined]

        self._maxsize = maxsize if maxsize > 0 else SEM_VALUE_MAX
        self._units = ctx.Semaphore(self._maxsize)
        self._q = ctx.Queue()

    def _cost(self, obj: Any) -> int:
        return max(1, math.ceil(len(pickle.dumps(obj)) / self.UNIT))

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Take one slot per 64 bytes, then put."""
        deadline = None if timeout is None else time.monotonic() + timeout
        taken = 0
        for _ in range(self._cost(obj)):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._units.acquire(block, remaining):
                for _ in range(taken):
                    self._units.release()
                raise queue.Full
            taken += 1
        self._q.put((taken, obj))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Get, then give back the item's slots."""
        taken, obj = self._q.get(block, timeout)
        for _ in range(taken):
            self._units.release()
        return obj

    def put_nowait(self, obj: Any) -> None:
        """put(obj, False)."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """get(False)."""
        return self.get(False)

    def empty(self) -> bool:
        """Whether the pipe looks empty."""
        return bool(self._q.empty())

    def full(self) -> bool:
        """Whether no slot is free."""
        return int(self._units.get_value()) == 0

    def qsize(self) -> int:
        """Slots taken."""
        return self._maxsize - int(self._units.get_value())

    def close(self) -> None:
        """Close the pipe queue."""
        self._q.close()

    def join_thread(self) -> None:
        """Join the pipe queue's feeder."""
        self._q.join_thread()

    def cancel_join_thread(self) -> None:
        """Do not wait for the feeder at exit."""
        self._q.cancel_join_thread()


class _Bound:
    """Marks the processes of :func:`bound_context`."""


class BoundForkProcess(_Bound, mpcontext.ForkProcess):
    """A fork Process of the bound context."""


class BoundSpawnProcess(_Bound, mpcontext.SpawnProcess):
    """A spawn Process of the bound context."""


class BoundForkServerProcess(_Bound, mpcontext.ForkServerProcess):
    """A forkserver Process of the bound context."""


class BoundForkContext(mpcontext.ForkContext):
    """The fork context whose Process is :class:`BoundForkProcess`."""

    Process = BoundForkProcess  # type: ignore[assignment]


class BoundSpawnContext(mpcontext.SpawnContext):
    """The spawn context whose Process is :class:`BoundSpawnProcess`."""

    Process = BoundSpawnProcess  # type: ignore[assignment]


class BoundForkServerContext(mpcontext.ForkServerContext):
    """The forkserver context whose Process is :class:`BoundForkServerProcess`."""

    Process = BoundForkServerProcess  # type: ignore[assignment]


_BOUND = {
    "fork": BoundForkContext(),
    "spawn": BoundSpawnContext(),
    "forkserver": BoundForkServerContext(),
}


def bound_context(method: str) -> BaseContext:
    """``get_context(method)`` of the bound "package" (for ``--context``)."""
    return _BOUND[method]


class ContextBoundQueue(_Delegating):
    """A queue that works only in the main process and in processes of its own context
    (like a queue of a fork of multiprocessing, whose pickler and Process go together)."""

    def _check(self) -> None:
        me = multiprocessing.current_process()
        if multiprocessing.parent_process() is not None and not isinstance(me, _Bound):
            raise RuntimeError(
                f"ContextBoundQueue used in {type(me).__name__}: start children from "
                "bound_context(method).Process"
            )

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Only from a bound process."""
        self._check()
        self._q.put(obj, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Only from a bound process."""
        self._check()
        return self._q.get(block, timeout)


def slightly_early(ctx: BaseContext, maxsize: int) -> SlightlyEarlyQueue:
    """A queue whose ``get(timeout)`` returns 0.95 ms early (a visible "differs")."""
    return SlightlyEarlyQueue(ctx.Queue(maxsize))


def zero_timeout_empty(ctx: BaseContext, maxsize: int) -> ZeroTimeoutEmptyQueue:
    """A queue whose ``get(timeout=0)`` raises Empty even when it holds an item."""
    return ZeroTimeoutEmptyQueue(ctx.Queue(maxsize))


def flag_close(ctx: BaseContext, maxsize: int) -> FlagCloseQueue:
    """A queue whose ``close()``/``join_thread()`` flush nothing."""
    return FlagCloseQueue(ctx.Queue(maxsize))


def fragile_feeder(ctx: BaseContext, maxsize: int) -> FragileFeederQueue:
    """A queue whose feeder dies on an unpicklable item (later puts vanish)."""
    return FragileFeederQueue(maxsize, ctx=ctx)


def finite_default(ctx: BaseContext, maxsize: int) -> FiniteDefaultQueue:
    """A queue whose blocking get()/put() without a timeout give up after 1 s."""
    return FiniteDefaultQueue(ctx.Queue(maxsize))


def byte_capacity(ctx: BaseContext, maxsize: int) -> ByteCapacityQueue:
    """A queue whose capacity counts 64-byte units, not items."""
    return ByteCapacityQueue(ctx, maxsize)


def context_bound(ctx: BaseContext, maxsize: int) -> ContextBoundQueue:
    """A queue usable only from :func:`bound_context` processes."""
    return ContextBoundQueue(ctx.Queue(maxsize))


from mpfault._contract.provider import QueueProvider  # noqa: E402


class ManagerQueues(QueueProvider):
    """A control, not a broken queue: Manager().Queue() through a provider that starts
    the manager in setup() and shuts it down in teardown()."""

    name = "Manager().Queue() (provider)"
    kind = "MQ"

    def setup(self, method: str) -> None:
        """Start a manager for *method*."""
        super().setup(method)
        self.manager = self.ctx.Manager()
        self.started = getattr(self, "started", 0) + 1

    def create(self, ctx: Any, maxsize: int) -> Any:
        """A proxy of a queue.Queue in the manager."""
        return self.manager.Queue(maxsize)

    def teardown(self) -> None:
        """Shut the manager down."""
        manager = getattr(self, "manager", None)
        if manager is not None:
            manager.shutdown()
            self.manager = None
        super().teardown()
