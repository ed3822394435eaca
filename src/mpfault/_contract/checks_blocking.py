"""Rows 1-10: blocking semantics and timeouts."""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .context import Call, CheckContext, exc_text, wait_blocked
from .model import Mismatch, Outcome, differs, failed, passed
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


def _blocked(cx: CheckContext, calls: list[tuple[str, Callable[[], Any]]]) -> list[Call]:
    """Start each call in its own thread once it is about to be made (a gate), and wait
    until each thread sleeps in the kernel (Linux ``/proc``; elsewhere the hold window
    alone observes them)."""
    out = []
    for label, fn in calls:
        gate = threading.Event()

        def run(fn: Callable[[], Any] = fn, gate: threading.Event = gate) -> Any:
            gate.set()
            return fn()

        call = cx.thread(run)
        call.name = label
        if not gate.wait(cx.deadline):
            raise Mismatch(f"the thread for {label} did not start within {cx.deadline:g} s")
        out.append(call)
    for call in out:
        if call.native_id is not None:
            wait_blocked(os.getpid(), call.native_id, timeout=cx.hold)
    return out


def _default_block(cx: CheckContext) -> dict[str, Outcome]:
    """Rows 1 and 2 together (one hold window): put() on a full queue and get() on an
    empty one, called with no timeout, ``timeout=None`` and ``block=True, timeout=None``,
    must stay blocked for :attr:`~CheckContext.block_hold` seconds (a finite default
    timeout shows up as an early return), then return once a slot / an item comes."""
    out: dict[str, Outcome] = {}
    hold = cx.block_hold
    full = cx.make(1) if cx.kind != "SQ" else None
    empty = cx.make()
    puts: list[Call] = []
    if full is not None:
        full.put("a")
        puts = _blocked(
            cx,
            [
                ("put('b1')", functools.partial(cx.for_thread(full).put, "b1")),
                (
                    "put('b2', True, None)",
                    functools.partial(cx.for_thread(full).put, "b2", True, None),
                ),
                (
                    "put('b3', timeout=None)",
                    functools.partial(cx.for_thread(full).put, "b3", timeout=None),
                ),
            ],
        )
    get_calls: list[tuple[str, Callable[[], Any]]] = [("get()", cx.for_thread(empty).get)]
    if cx.kind != "SQ":
        get_calls += [
            ("get(True, None)", functools.partial(cx.for_thread(empty).get, True, None)),
            ("get(timeout=None)", functools.partial(cx.for_thread(empty).get, timeout=None)),
        ]
    gets = _blocked(cx, get_calls)
    end = time.monotonic() + hold
    for call in (*puts, *gets):
        call.join(max(0.0, end - time.monotonic()))
    for which, calls, where in (
        ("put", puts, "on a full queue (maxsize=1)"),
        ("get", gets, "on an empty queue"),
    ):
        early = [c for c in calls if c.done]
        if early:
            c = early[0]
            hint = ""
            if isinstance(c.exception, (queue.Empty, queue.Full)):
                hint = " (a finite default timeout?)"
            elif c.exception is None:
                hint = " (it did not block at all)"
            out[which] = failed(
                f"{c.name} {where} {c.describe()} after {c.finished - c.started:.4f} s instead "
                f"of blocking for at least {hold:g} s{hint}"
            )
    # Release them: each get() frees one slot; each put() wakes one getter.
    if full is not None and "put" not in out:
        freed = time.perf_counter()
        got = [cx.get(full) for _ in range(4)]
        if not all(c.join(cx.deadline) for c in puts):
            stuck = [c.name for c in puts if not c.done]
            out["put"] = failed(f"{', '.join(stuck)} still blocked {cx.deadline:g} s after get()")
        else:
            for c in puts:
                c.value()
            unblock = max(c.finished for c in puts) - freed
            if got[0] != "a" or sorted(got[1:]) != ["b1", "b2", "b3"]:
                out["put"] = failed(f"get() returned {got!r} instead of 'a' then b1, b2, b3")
            else:
                out["put"] = passed(
                    f"put(), put(x, True, None) and put(x, timeout=None) on the full queue "
                    f"stayed blocked for {hold:g} s and returned once get() freed slots",
                    **{"unblock s": round(unblock, 6)},
                )
    if "get" not in out:
        put_at = time.perf_counter()
        items = [f"x{i}" for i in range(len(gets))]
        for item in items:
            empty.put(item)
        if not all(c.join(cx.deadline) for c in gets):
            stuck = [c.name for c in gets if not c.done]
            out["get"] = failed(f"{', '.join(stuck)} still blocked {cx.deadline:g} s after put()")
        else:
            got = sorted(c.value() for c in gets)
            wake = max(c.finished for c in gets) - put_at
            if got != items:
                out["get"] = failed(f"the blocked get() calls returned {got!r} instead of {items}")
            else:
                names = ", ".join(label for label, _ in get_calls)
                out["get"] = passed(
                    f"{names} on the empty queue stayed blocked for {hold:g} s and returned "
                    "the items once put",
                    **{"wake s": round(wake, 6)},
                )
    return out


@check(
    row=1,
    slug="put-blocks-when-full",
    title="put() with block=True, timeout=None blocks until a slot is free",
    kind="documented",
    source=DOC_PUT + " Code queues.py l.84-94: self._sem.acquire(block, timeout).",
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="put(x), put(x, True, None), put(x, timeout=None) on a full Queue(1) still blocked "
    "after 2 s; they return once get() frees slots",
    headline="unblock s",
)
def put_blocks_when_full(cx: CheckContext) -> Outcome:
    """Row 1."""
    return cx.shared("default-block", lambda: _default_block(cx))["put"]


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
    expect="get(), get(True, None), get(timeout=None) on an empty queue still blocked after "
    "2 s; they return the items once put",
    headline="wake s",
)
def get_blocks_until_item(cx: CheckContext) -> Outcome:
    """Row 2 (documented part)."""
    return cx.shared("default-block", lambda: _default_block(cx))["get"]


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
    cx.private(q, "_rlock")
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
    label = f"put(x, timeout={cx.timeout:g}) on a full queue"
    elapsed = cx.timed_out(label, queue.Full, lambda: q.put("x", timeout=cx.timeout))
    early = cx.early(label, elapsed)
    if early:
        return differs(early)
    return passed(f"{label} raised queue.Full after {elapsed:.4f} s")


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
    label = f"get(timeout={cx.timeout:g}) on an empty queue"
    elapsed = cx.timed_out(label, queue.Empty, lambda: q.get(timeout=cx.timeout))
    early = cx.early(label, elapsed)
    if early:
        return differs(early)
    return passed(f"{label} raised queue.Empty after {elapsed:.4f} s")


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
    cx.private(q, "_reader")
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


def _wait_visible(cx: CheckContext, q: Any, what: str) -> None:
    """Wait until ``q.empty()`` is False after a put (row 13: it may lag)."""
    cx.require(q, "empty")
    end = time.monotonic() + cx.deadline
    while q.empty():
        if time.monotonic() > end:
            raise Mismatch(f"empty() still True {cx.deadline:g} s after {what}")
        time.sleep(0)  # yield the GIL to the feeder thread; not a wait


@check(
    row=8,
    slug="zero-timeout-is-nonblocking-attempt",
    title="timeout=0 is a non-blocking attempt: get() returns an item that is there, put() "
    "stores into a free slot; Empty/Full at once otherwise",
    kind="documented",
    source=(
        'Doc Lock.acquire: "Invocations with a negative value for timeout are equivalent to '
        'a timeout of zero."; Doc Queue.get: "Otherwise (block is False), return an item if '
        'one is immediately available"; queue.Queue: a timeout of 0 polls once'
    ),
    kinds=("Q", "JQ", "MQ"),
    expect="non-empty queue: get(timeout=0) and get(False) return the item; empty: Empty "
    "at once; Queue(1): put(x, timeout=0) stores, then Full at once",
)
def zero_timeout_attempt(cx: CheckContext) -> Outcome:
    """Row 8 (documented part: timeout 0)."""
    q = cx.make()
    for label, fn in (
        ("get(timeout=0)", functools.partial(q.get, timeout=0)),
        ("get(True, 0)", functools.partial(q.get, True, 0)),
        ("get(False)", functools.partial(q.get, False)),
    ):
        q.put("item")
        _wait_visible(cx, q, "put('item')")
        try:
            got = fn()
        except queue.Empty as exc:
            try:
                later = q.get(timeout=cx.deadline)
            except queue.Empty:
                later = "nothing"
            return failed(
                f"{label} on a non-empty queue (empty() was False) raised {exc_text(exc)}; "
                f"get(timeout={cx.deadline:g}) then returned {later!r}"
            )
        if got != "item":
            return failed(f"{label} on a non-empty queue returned {got!r} instead of 'item'")
    cx.immediate("get(timeout=0) on an empty queue", queue.Empty, lambda: q.get(timeout=0))
    slot = cx.make(1)
    cx.immediate("put('a', timeout=0) on an empty Queue(1)", None, lambda: slot.put("a", timeout=0))
    cx.immediate(
        "put('b', timeout=0) on a full Queue(1)", queue.Full, lambda: slot.put("b", timeout=0)
    )
    got = cx.get(slot)
    if got != "a":
        return failed(f"after put('a', timeout=0) get() returned {got!r}")
    return passed(
        "get(timeout=0), get(True, 0), get(False) returned the waiting item; Empty/Full at "
        "once when there was none / no slot; put(x, timeout=0) stored into a free slot"
    )


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
    """Row 8 (negative and tiny timeouts)."""
    q = cx.make()
    full = cx.make(1)
    full.put("a")
    if cx.kind == "MQ":
        calls: list[tuple[str, Callable[[], object]]] = [
            ("get(timeout=-1)", lambda: q.get(timeout=-1)),
            ("put(x, timeout=-1) on a full queue", lambda: full.put("x", timeout=-1)),
        ]
        for label, fn in calls:
            try:
                fn()
            except ValueError as exc:
                if "non-negative" not in str(exc):
                    raise Mismatch(f"{label} raised {exc_text(exc)}") from None
            except Exception as exc:
                raise Mismatch(f"{label} raised {exc_text(exc)} instead of ValueError") from None
            else:
                raise Mismatch(f"{label} returned instead of raising ValueError") from None
        return passed("a negative timeout raised ValueError('... non-negative number')")
    for t in (-1.0, 1e-9):
        cx.immediate(
            f"get(timeout={t:g}) on an empty queue",
            queue.Empty,
            functools.partial(q.get, timeout=t),
        )
        cx.immediate(
            f"put(x, timeout={t:g}) on a full queue",
            queue.Full,
            functools.partial(full.put, "x", timeout=t),
        )
    return passed("timeouts -1 and 1e-9 made non-blocking attempts (Empty/Full at once)")


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
    cx.private(q, "_rlock", "_reader")
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
