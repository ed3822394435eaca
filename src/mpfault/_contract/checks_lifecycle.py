"""Rows 24-35: the feeder thread, flushing at exit, close() and join_thread()."""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import _children
from .context import CheckContext
from .model import Mismatch, Outcome, failed, passed, skipped
from .registry import check, unobservable

#: More than any pipe buffer (64 KiB on Linux and macOS), so flushing needs a reader.
BIG = 1_000_000

DOC_EXIT_WAITS = (
    'Doc Programming guidelines: "Bear in mind that a process that has put items in a queue '
    "will wait before terminating until all the buffered items are fed by the \u201cfeeder\u201d "
    'thread to the underlying pipe."'
)


@check(
    row=24,
    slug="feeder-thread-started",
    title="the first put() starts a feeder thread; put() returns before the data is in the "
    "pipe",
    kind="documented",
    source=(
        'Doc Queue: "When a process first puts an item on the queue a feeder thread is '
        'started which transfers objects from a buffer into the pipe." Code _start_thread.'
    ),
    kinds=("Q", "JQ"),
    expect="a new thread after the first put(); put(200 KB) with no reader returns at once",
    headline="put(200 KB), no reader s",
)
def feeder_thread_started(cx: CheckContext) -> Outcome:
    """Row 24."""
    q = cx.make()
    before = {t.ident for t in threading.enumerate()}
    payload = b"x" * 200_000
    cx.immediate("put(200 KB), no reader", None, lambda: q.put(payload), attempts=1)
    new = sorted(t.name for t in threading.enumerate() if t.ident not in before)
    got = cx.get(q)
    cx.figure(thread=", ".join(new) or "none")
    if not new:
        return failed("no new thread after the first put()")
    if got != payload:
        return failed("the 200 KB item came back different")
    return passed(f"put() started thread {', '.join(new)} and returned before the pipe was read")


@dataclass
class ExitFlush:
    """What happened to a child that put more than a pipe holds and then returned."""

    returned: bool
    alive_after_hold: bool
    exitcode: int | None
    exit_after_drain: float


def _exit_flush(cx: CheckContext) -> ExitFlush:
    q = cx.make()
    started_r, started_w = cx.pipe()
    done_r, done_w = cx.pipe()
    p = cx.start(_children.put_and_exit, q, [b"x" * BIG], "return", started_w, done_w)
    cx.recv(started_r, what="start signal")
    returned = False
    if cx.kind != "SQ":  # SimpleQueue.put itself blocks: no "done" before the drain
        cx.recv(done_r, what="put() done signal")
        returned = True
    p.join(cx.hold)
    alive = p.exitcode is None
    got = cx.get(q)
    drained = time.perf_counter()
    p.join(cx.deadline)
    if len(got) != BIG:
        raise Mismatch(f"got {len(got)} bytes instead of {BIG}")
    return ExitFlush(returned, alive, p.exitcode, time.perf_counter() - drained)


@check(
    row=25,
    slug="exit-waits-for-flush",
    title="a process that put items does not terminate until its feeder has written them "
    "to the pipe",
    kind="documented",
    source=DOC_EXIT_WAITS + " Code: _jointhread = Finalize(..., exitpriority=-5).",
    kinds=("Q", "JQ"),
    expect="child put 1 MB (> pipe) and returned: still alive after 0.2 s; exits after get()",
    headline="exit after get s",
)
def exit_waits_for_flush(cx: CheckContext) -> Outcome:
    """Row 25."""
    r = cx.shared("exit-flush", lambda: _exit_flush(cx))
    cx.figure(**{"exit after get s": r.exit_after_drain})
    if not r.alive_after_hold:
        return failed(
            f"the child exited (code {r.exitcode}) within {cx.hold:g} s although 1 MB was "
            "still buffered and nobody read"
        )
    if r.exitcode != 0:
        return failed(f"after get() the child's exit code was {r.exitcode} (expected 0)")
    return passed("the child waited for its feeder at exit and exited once the data was read")


@check(
    row=25,
    slug="creator-also-waits-at-exit",
    title="the queue's creator process also waits for its feeder at exit",
    kind="detail",
    source=(
        'Doc join_thread: "By default if a process is not the creator of the queue then on '
        'exit it will attempt to join the queue\'s background thread." The code joins in every '
        "process since bpo-30886 (3.5.4/3.6.2)."
    ),
    kinds=("Q",),
    expect="a child that created a Queue, put 1 MB and returned is still alive after 0.2 s",
)
def creator_also_waits(cx: CheckContext) -> Outcome:
    """Row 25 (creator detail)."""
    done_r, done_w = cx.pipe()
    p = cx.start(_children.create_put_return, cx.method, BIG, done_w)
    cx.recv(done_r, what="put() done signal")
    p.join(cx.hold)
    code = p.exitcode
    cx.stop(p)
    if code is not None:
        return failed(f"the creator exited (code {code}) without its data being read")
    return passed("the creator was still waiting for its feeder at exit")


@check(
    row=26,
    slug="join-before-get-blocks",
    title="joining a child whose unconsumed puts exceed the pipe waits until they are got",
    kind="documented",
    source=(
        'Doc Programming guidelines, "Joining processes that use queues": q.put(\'X\' * '
        "1000000) ... p.join()  # this deadlocks; \"if a child process has put items on a "
        "queue (and it has not used cancel_join_thread), then that process will not "
        'terminate until all buffered items have been flushed to the pipe."'
    ),
    kinds=("Q", "JQ", "SQ"),
    expect="p.join(0.2) leaves the child alive; after get() p.join() returns, exit code 0",
)
def join_before_get_blocks(cx: CheckContext) -> Outcome:
    """Row 26."""
    r = cx.shared("exit-flush", lambda: _exit_flush(cx))
    if not r.alive_after_hold:
        return failed(f"p.join({cx.hold:g}) returned: the child exited before its data was got")
    if r.exitcode != 0:
        return failed(f"after get() the child's exit code was {r.exitcode}")
    return passed("join() waited while the data was unread and returned after get()")


def _probe_lost(cx: CheckContext, q: Any) -> bool:
    """After the producer has exited: whether its item never reached the pipe."""
    try:
        q.get(timeout=0.05)
    except queue.Empty:
        return True
    return False


@check(
    row=27,
    slug="os-exit-after-put-loses-data",
    title="os._exit() right after put() loses the item (exit handlers and feeder skipped)",
    kind="detail",
    source="Implied by the docs (cancel_join_thread text, feeder note); not stated",
    kinds=("Q", "JQ"),
    expect="child put(x); os._exit(0): exit code 0, nothing arrives",
)
def os_exit_loses(cx: CheckContext) -> Outcome:
    """Row 27."""
    q = cx.make()
    p = cx.start(_children.put_and_exit, q, ["x"], "os_exit")
    p.join(cx.deadline)
    if p.exitcode != 0:
        return failed(f"exit code {p.exitcode}")
    if not _probe_lost(cx, q):
        return failed("the item arrived although the child called os._exit() right after put()")
    return passed("the item was lost")


@check(
    row=28,
    slug="sigkill-after-put-loses-data",
    title="SIGKILL right after put() loses the item",
    kind="detail",
    source="As row 27; doc Process.kill()",
    kinds=("Q", "JQ"),
    not_platforms=("win32",),
    expect="child put(x); SIGKILL itself: exit code -9, nothing arrives",
)
def sigkill_loses(cx: CheckContext) -> Outcome:
    """Row 28."""
    q = cx.make()
    p = cx.start(_children.put_and_exit, q, ["x"], "sigkill")
    p.join(cx.deadline)
    if p.exitcode != -9:
        return failed(f"exit code {p.exitcode} (expected -9)")
    if not _probe_lost(cx, q):
        return failed("the item arrived although the child was SIGKILLed right after put()")
    return passed("the item was lost")


@check(
    row=29,
    slug="cancel-join-thread-exits-without-flush",
    title="after cancel_join_thread() a process exits without waiting for the flush",
    kind="documented",
    source=(
        'Doc cancel_join_thread: "A better name for this method might be '
        'allow_exit_without_flush(). It is likely to cause enqueued data to be lost"'
    ),
    kinds=("Q", "JQ"),
    expect="child put 1 MB, cancel_join_thread(), returned: exits with code 0, nobody reading",
    headline="exit s",
)
def cancel_join_thread_exits(cx: CheckContext) -> Outcome:
    """Row 29."""
    q = cx.make()
    done_r, done_w = cx.pipe()
    p = cx.start(_children.put_and_exit, q, [b"x" * BIG], "cancel", None, done_w)
    cx.recv(done_r, what="put() done signal")
    t0 = time.perf_counter()
    p.join(cx.deadline)
    cx.figure(**{"exit s": time.perf_counter() - t0})
    if p.exitcode is None:
        return failed(f"the child was still alive {cx.deadline:g} s after cancel_join_thread()")
    if p.exitcode != 0:
        return failed(f"exit code {p.exitcode}")
    # The pipe may now hold a truncated frame: the queue is discarded, never read.
    return passed("the child exited without waiting for its 1 MB to be read")


@check(
    row=30,
    slug="close-join-thread-flushes",
    title="close() then join_thread() flushes the buffer to the pipe (data survives os._exit)",
    kind="documented",
    source=(
        'Doc join_thread: "It blocks until the background thread exits, ensuring that all '
        'data in the buffer has been flushed to the pipe."'
    ),
    kinds=("Q", "JQ"),
    expect="child put(x); close(); join_thread(); os._exit(0): x arrives",
)
def close_join_flushes(cx: CheckContext) -> Outcome:
    """Row 30."""
    q = cx.make()
    p = cx.start(_children.put_and_exit, q, ["x"], "close_join_os_exit")
    p.join(cx.deadline)
    if p.exitcode != 0:
        return failed(f"exit code {p.exitcode}")
    try:
        got = q.get(timeout=cx.deadline)
    except queue.Empty:
        return failed("the item did not arrive although close() and join_thread() returned")
    if got != "x":
        return failed(f"got {got!r}")
    return passed("the item arrived")


@dataclass
class NormalExit:
    """A child put items and returned; what arrived and what the pipe says afterwards."""

    received: int
    exitcode: int | None
    eof_poll: bool
    after_exit: str


def _normal_exit(cx: CheckContext) -> NormalExit:
    n = 50
    q = cx.make()
    p = cx.start(_children.put_and_exit, q, [("item", i) for i in range(n)], "return")
    received = 0
    for i in range(n):
        try:
            got = cx.get(q)
        except queue.Empty:
            break
        if got != ("item", i):
            raise Mismatch(f"item {i}: got {got!r}")
        received += 1
    p.join(cx.deadline)
    eof_poll = bool(q._reader.poll(cx.timeout))
    if cx.kind == "SQ":
        after = "n/a"
    else:
        try:
            extra = q.get(timeout=cx.timeout)
        except queue.Empty:
            after = "Empty"
        except EOFError:
            after = "EOFError"
        else:
            after = f"returned {extra!r}"
    return NormalExit(received, p.exitcode, eof_poll, after)


@check(
    row=31,
    slug="normal-exit-flushes",
    title="a normal return from the child flushes everything it put",
    kind="documented",
    source=DOC_EXIT_WAITS,
    kinds=("Q", "JQ"),
    expect="child put 50 items and returned: all 50 arrive in order, exit code 0",
)
def normal_exit_flushes(cx: CheckContext) -> Outcome:
    """Row 31."""
    r = cx.shared("normal-exit", lambda: _normal_exit(cx))
    if r.received != 50:
        return failed(f"{r.received} of 50 items arrived")
    if r.exitcode != 0:
        return failed(f"exit code {r.exitcode}")
    return passed("all 50 items arrived")


@check(
    row=32,
    slug="join-thread-before-close-asserts",
    title="join_thread() before close() raises AssertionError (an assert: gone under -O)",
    kind="detail",
    source='Doc: "This can only be used after close() has been called." Code l.147: assert',
    kinds=("Q", "JQ"),
    expect="AssertionError",
)
def join_thread_before_close(cx: CheckContext) -> Outcome:
    """Row 32."""
    if sys.flags.optimize:
        return skipped("assert statements are disabled (python -O)")
    q = cx.make()
    try:
        q.join_thread()
    except AssertionError:
        return passed("AssertionError")
    return failed("join_thread() returned on an open queue")


@check(
    row=33,
    slug="close-is-idempotent",
    title="close() can be called twice",
    kind="detail",
    source="Code close(): if not self._closed (undocumented)",
    kinds=("Q", "JQ"),
    expect="a second close() does not raise",
)
def close_idempotent(cx: CheckContext) -> Outcome:
    """Row 33."""
    q = cx.make()
    q.put(1)
    q.close()
    q.close()
    return passed("the second close() returned")


@check(
    row=34,
    slug="closed-put-get-raise-valueerror",
    title="put()/get() (and the nowait forms) on a closed queue raise ValueError",
    kind="documented",
    source=(
        'Doc put: "Changed in version 3.8: If the queue is closed, ValueError is raised '
        'instead of AssertionError." get: "... instead of OSError." bpo-22872'
    ),
    kinds=("Q", "JQ"),
    since=(3, 8),
    expect="ValueError('Queue ... is closed') from put, put_nowait, get, get_nowait",
)
def closed_raises_valueerror(cx: CheckContext) -> Outcome:
    """Row 34."""
    q = cx.make()
    q.close()
    for label, fn in (
        ("put(x)", lambda: q.put("x")),
        ("put_nowait(x)", lambda: q.put_nowait("x")),
        ("get()", q.get),
        ("get_nowait()", q.get_nowait),
    ):
        try:
            fn()
        except ValueError as exc:
            if "is closed" not in str(exc):
                return failed(f"{label} raised ValueError({str(exc)!r})")
        except Exception as exc:
            return failed(f"{label} raised {type(exc).__name__}({str(exc)!r})")
        else:
            return failed(f"{label} did not raise")
    return passed("ValueError ... is closed, from all four")


unobservable(
    row=35,
    slug="close-broken-pipe-tracebacks",
    title="3.8 only: close() closed the reader at once, so a flushing feeder printed "
    "BrokenPipeError",
    kind="detail",
    source="bpo-35844; fixed by bpo-47029 (PR #31913) in 3.9",
    kinds=("Q", "JQ"),
    until=(3, 8),
    expect="BrokenPipeError tracebacks on stderr after put(); close(); join_thread()",
    reason="applies to Python 3.8 only, which mpfault does not support",
)
