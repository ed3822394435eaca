"""Rows 1-10: blocking semantics and timeouts."""

from __future__ import annotations

import functools
import queue
import time
from collections.abc import Callable

from .context import CheckContext
from .model import Mismatch, Outcome, failed, passed
from .registry import check, unobservable

DOC_PUT = (
    'Doc Queue.put: "If the optional argument block is True (the default) and timeout is '
    'None (the default), block if necessary until a free slot is available."'
)
DOC_NONBLOCK_PUT = (
    'Doc Queue.put: "Otherwise (block is False), put an item on the queue if a free slot is '
    "immediately available, else raise the queue.Full exception (timeout is ignored in that "
    'case)."; put_nowait: "Equivalent to put(obj, False)."'
)
DOC_NONBLOCK_GET = (
    'Doc Queue.get: "Otherwise (block is False), return an item if one is immediately '
    'available, else raise the queue.Empty exception (timeout is ignored in that case)."; '
    'get_nowait: "Equivalent to get(False)."'
)
DOC_TIMEOUT_PUT = (
    'Doc Queue.put: "If timeout is a positive number, it blocks at most timeout seconds and '
    'raises the queue.Full exception if no free slot was available within that time."'
)
DOC_TIMEOUT_GET = (
    'Doc Queue.get: "If timeout is a positive number, it blocks at most timeout seconds and '
    'raises the queue.Empty exception if no item was available within that time."'
)


@check(
    row=1,
    slug="put-blocks-when-full",
    title="put() with block=True, timeout=None blocks until a slot is free",
    kind="documented",
    source=DOC_PUT + " Code queues.py l.84-94: self._sem.acquire(block, timeout).",
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="put() on a full Queue(1) still blocked after 0.2 s; returns once get() frees a slot",
    headline="unblock s",
)
def put_blocks_when_full(cx: CheckContext) -> Outcome:
    """Row 1."""
    q = cx.make(1)
    q.put("a")
    blocked = cx.thread(cx.for_thread(q).put, "b")
    if blocked.join(cx.hold):
        return failed(
            f"put('b') on a full queue (maxsize=1) {blocked.describe()} after "
            f"{blocked.finished - blocked.started:.4f} s instead of blocking"
        )
    freed = time.perf_counter()
    first = cx.get(q)
    if not blocked.join(cx.deadline):
        return failed(f"put('b') still blocked {cx.deadline:g} s after get() freed a slot")
    blocked.value()
    cx.figure(**{"unblock s": blocked.finished - freed})
    second = cx.get(q)
    if (first, second) != ("a", "b"):
        return failed(f"got {first!r}, {second!r} instead of 'a', 'b'")
    return passed("put() blocked on the full queue and returned once get() freed a slot")


@check(
    row=2,
    slug="get-blocks-until-item",
    title="get() with block=True, timeout=None blocks until an item arrives",
    kind="documented",
    source=(
        'Doc Queue.get: "If the optional args block is True (the default) and timeout is '
        'None (the default), block if necessary until an item is available."'
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    generic=True,
    expect="get() on an empty queue still blocked after 0.2 s; returns the item once put",
    headline="wake s",
)
def get_blocks_until_item(cx: CheckContext) -> Outcome:
    """Row 2 (documented part)."""
    q = cx.make()
    getter = cx.thread(cx.for_thread(q).get)
    if getter.join(cx.hold):
        return failed(f"get() on an empty queue {getter.describe()} instead of blocking")
    put_at = time.perf_counter()
    q.put("x")
    if not getter.join(cx.deadline):
        return failed(f"get() still blocked {cx.deadline:g} s after put('x')")
    cx.figure(**{"wake s": getter.finished - put_at})
    got = getter.value()
    if got != "x":
        return failed(f"get() returned {got!r} instead of 'x'")
    return passed("get() blocked on the empty queue and returned the item once it was put")


@check(
    row=2,
    slug="get-holds-read-lock",
    title="a blocked get() holds the queue's read lock _rlock for the whole wait",
    kind="detail",
    source="Code queues.py l.99-102: with self._rlock: res = self._recv_bytes() (undocumented)",
    kinds=("Q", "JQ", "SQ"),
    expect="while a thread is blocked in get(), _rlock.acquire(False) is False",
)
def get_holds_read_lock(cx: CheckContext) -> Outcome:
    """Row 2 (the _rlock detail)."""
    q = cx.make()
    getter = cx.thread(q.get)
    end = time.monotonic() + cx.deadline
    held = False
    while time.monotonic() < end and not getter.done:
        if q._rlock.acquire(False):
            q._rlock.release()
            getter.join(0.001)
            continue
        held = True
        break
    q.put("release")
    if not getter.join(cx.deadline):
        return failed("get() did not return after put()")
    if not held:
        return failed("_rlock could be acquired while another thread was blocked in get()")
    return passed("_rlock.acquire(False) returned False while get() was blocked")


@check(
    row=3,
    slug="put-nonblocking-raises-full",
    title="put(x, False), put(x, False, t) and put_nowait(x) raise Full at once when full",
    kind="documented",
    source=DOC_NONBLOCK_PUT,
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="queue.Full within the immediate limit (0.05 s, or tolerance/4 if larger)",
    headline="put_nowait(x) s",
)
def put_nonblocking_raises_full(cx: CheckContext) -> Outcome:
    """Row 3."""
    q = cx.make(1)
    cx.require(q, "put_nowait")
    q.put("a")
    cx.immediate("put(x, False)", queue.Full, lambda: q.put("x", False))
    cx.immediate("put(x, False, 2.0)", queue.Full, lambda: q.put("x", False, 2.0))
    cx.immediate("put_nowait(x)", queue.Full, lambda: q.put_nowait("x"))
    return passed("each non-blocking put raised queue.Full immediately")


@check(
    row=4,
    slug="get-nonblocking-raises-empty",
    title="get(False), get(False, t) and get_nowait() raise Empty at once when empty",
    kind="documented",
    source=DOC_NONBLOCK_GET,
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="queue.Empty within the immediate limit (0.05 s, or tolerance/4 if larger)",
    headline="get_nowait() s",
)
def get_nonblocking_raises_empty(cx: CheckContext) -> Outcome:
    """Row 4."""
    q = cx.make()
    cx.require(q, "get_nowait")
    cx.immediate("get(False)", queue.Empty, lambda: q.get(False))
    cx.immediate("get(False, 2.0)", queue.Empty, lambda: q.get(False, 2.0))
    cx.immediate("get_nowait()", queue.Empty, q.get_nowait)
    return passed("each non-blocking get raised queue.Empty immediately")


@check(
    row=5,
    slug="put-timeout-raises-full",
    title="put(timeout=t) on a full queue raises Full after t (never early in practice)",
    kind="documented",
    source=DOC_TIMEOUT_PUT,
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="queue.Full after 0.1 s: not before 0.099 s, at most 0.1 s + tolerance",
    headline="overshoot",
)
def put_timeout_raises_full(cx: CheckContext) -> Outcome:
    """Row 5."""
    q = cx.make(1)
    q.put("a")
    elapsed = cx.timed_out(
        f"put(x, timeout={cx.timeout:g}) on a full queue",
        queue.Full,
        lambda: q.put("x", timeout=cx.timeout),
    )
    return passed(f"queue.Full after {elapsed:.4f} s")


@check(
    row=6,
    slug="get-timeout-raises-empty",
    title="get(timeout=t) on an empty queue raises Empty after t (never early in practice)",
    kind="documented",
    source=DOC_TIMEOUT_GET
    + " Code: deadline = time.monotonic() + timeout, lock acquire, then self._poll(...).",
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="queue.Empty after 0.1 s: not before 0.099 s, at most 0.1 s + tolerance",
    headline="overshoot",
)
def get_timeout_raises_empty(cx: CheckContext) -> Outcome:
    """Row 6."""
    q = cx.make()
    elapsed = cx.timed_out(
        f"get(timeout={cx.timeout:g}) on an empty queue",
        queue.Empty,
        lambda: q.get(timeout=cx.timeout),
    )
    return passed(f"queue.Empty after {elapsed:.4f} s")


@check(
    row=7,
    slug="get-timeout-does-not-bound-receive",
    title="the get() timeout covers the lock and poll(), not the receive of a large item",
    kind="detail",
    source=(
        "Code Queue.get l.104-115: after self._poll(timeout) succeeds, "
        "res = self._recv_bytes() is unbounded (undocumented)"
    ),
    kinds=("Q", "JQ"),
    expect="get(timeout=0.001) on a readable pipe returns an 8 MiB item, taking longer",
    headline="elapsed",
)
def get_timeout_does_not_bound_receive(cx: CheckContext) -> Outcome:
    """Row 7."""
    q = cx.make()
    size = 8 * 1024 * 1024
    q.put(b"x" * size)
    if not cx.readable(q):
        return failed("the 8 MiB item never reached the pipe")
    start = time.perf_counter()
    try:
        got = q.get(timeout=0.001)
    except queue.Empty:
        return failed("get(timeout=0.001) raised Empty although the pipe was readable")
    elapsed = time.perf_counter() - start
    cx.figure(elapsed=elapsed)
    if len(got) != size:
        return failed(f"got {len(got)} bytes instead of {size}")
    if elapsed <= 0.001:
        return failed(f"the receive took {elapsed:.4f} s, within the 0.001 s timeout")
    return passed(f"get(timeout=0.001) returned the 8 MiB item after {elapsed:.4f} s")


@check(
    row=8,
    slug="zero-negative-timeouts",
    title="timeout <= 0: a plain non-blocking attempt for Q/JQ, ValueError if < 0 for MQ",
    kind="detail",
    source=(
        'Doc Lock.acquire: "Invocations with a negative value for timeout are equivalent to '
        'a timeout of zero."; semaphore.c: if (timeout < 0.0) timeout = 0.0; queue.py raises '
        "ValueError(\"'timeout' must be a non-negative number\") for MQ"
    ),
    kinds=("Q", "JQ", "MQ"),
    expect="Q/JQ: Empty/Full at once for 0, -1, 1e-9; MQ: Empty for 0, ValueError for -1",
)
def zero_negative_timeouts(cx: CheckContext) -> Outcome:
    """Row 8."""
    q = cx.make()
    full = cx.make(1)
    full.put("a")
    if cx.kind == "MQ":
        cx.immediate("get(timeout=0)", queue.Empty, lambda: q.get(timeout=0))
        cx.immediate(
            "put(x, timeout=0) on a full queue", queue.Full, lambda: full.put("x", True, 0)
        )
        calls: list[tuple[str, Callable[[], object]]] = [
            ("get(timeout=-1)", lambda: q.get(timeout=-1)),
            ("put(x, timeout=-1)", lambda: full.put("x", timeout=-1)),
        ]
        for label, fn in calls:
            try:
                fn()
            except ValueError as exc:
                if "non-negative" not in str(exc):
                    raise Mismatch(f"{label} raised ValueError({str(exc)!r})") from None
            except Exception as exc:
                raise Mismatch(
                    f"{label} raised {type(exc).__name__} instead of ValueError"
                ) from None
            else:
                raise Mismatch(f"{label} returned instead of raising ValueError")
        return passed("timeout=0 is non-blocking; a negative timeout raises ValueError")
    for t in (0.0, -1.0, 1e-9):
        cx.immediate(f"get(timeout={t:g})", queue.Empty, functools.partial(q.get, timeout=t))
        cx.immediate(
            f"put(x, timeout={t:g}) on a full queue",
            queue.Full,
            functools.partial(full.put, "x", timeout=t),
        )
    return passed("timeouts 0, -1 and 1e-9 made non-blocking attempts (Empty/Full at once)")


unobservable(
    row=9,
    slug="timeout-clocks",
    title="put(timeout) uses a CLOCK_REALTIME deadline (sem_timedwait), get's poll monotonic",
    kind="detail",
    source="semaphore.c semlock_acquire (sem_timedwait + gettimeofday); macOS sleep loop",
    kinds=("Q", "JQ"),
    expect="a wall-clock jump during put(timeout) changes its length",
    reason="needs a jump of the system wall clock (privileged, affects the whole machine)",
)


@check(
    row=10,
    slug="lock-contention-raises-empty",
    title="with the read lock held elsewhere, get_nowait()/get(timeout) raise Empty "
    "although items are waiting",
    kind="detail",
    source=(
        "Code: if not self._rlock.acquire(block, timeout): raise Empty. gh-87302 (bpo-43136, "
        'open): "get(block=False) can raise queue.Empty on non-empty queue"'
    ),
    kinds=("Q", "JQ"),
    expect="item in the pipe, _rlock held: get_nowait() Empty at once, get(0.1) Empty at 0.1 s",
    headline="overshoot",
)
def lock_contention_raises_empty(cx: CheckContext) -> Outcome:
    """Row 10."""
    q = cx.make()
    q._rlock.acquire()
    try:
        q.put("waiting")
        if not cx.readable(q):
            return failed("the item never reached the pipe")
        cx.immediate("get_nowait() with _rlock held", queue.Empty, q.get_nowait)
        cx.timed_out(
            f"get(timeout={cx.timeout:g}) with _rlock held",
            queue.Empty,
            lambda: q.get(timeout=cx.timeout),
        )
    finally:
        q._rlock.release()
    got = q.get(timeout=cx.deadline)
    if got != "waiting":
        return failed(f"after releasing the lock get() returned {got!r}")
    return passed("both raised Empty while the item waited in the pipe; it was there afterwards")
