"""Rows 24-35: the feeder thread, flushing at exit, close() and join_thread()."""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import _children
from .context import CheckContext, exc_text
from .model import Mismatch, Outcome, Unsupported, differs, failed, passed, skipped
from .registry import check

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
    title="the first put() starts a feeder thread; put() returns before the data is in the pipe",
    kind="documented",
    source=(
        'Doc Queue: "When a process first puts an item on the queue a feeder thread is '
        'started which transfers objects from a buffer into the pipe." Code _start_thread.'
    ),
    kinds=("Q", "JQ"),
    expect="put(200 KB) with no reader returns (no wait for the pipe); a new thread runs",
    headline="put(200 KB), no reader s",
)
def feeder_thread_started(cx: CheckContext) -> Outcome:
    """Row 24."""
    q = cx.make()
    before = set(threading.enumerate())
    payload = b"x" * 200_000  # more than a pipe holds: a synchronous put() would block
    putter = cx.thread(q.put, payload)
    if not putter.join(cx.deadline):
        return failed(f"put(200 KB) with no reader still blocked after {cx.deadline:g} s")
    putter.value()
    cx.figure(**{"put(200 KB), no reader s": putter.finished - putter.started})
    new = sorted(t.name for t in threading.enumerate() if t not in before and t.name != putter.name)
    got = cx.get(q)
    cx.figure(thread=", ".join(new) or "none")
    if not new and not cx.stdlib:
        if got != payload:
            return failed("the 200 KB item came back different")
        return differs(
            "put(200 KB) with no reader returned without starting a thread: the queue "
            "stores the item synchronously (no feeder thread)"
        )
    if not new:
        return failed("no new thread after the first put()")
    if got != payload:
        return failed("the 200 KB item came back different")
    return passed(f"put() started thread {', '.join(new)} and returned before the pipe was read")


@dataclass
class Exited:
    """How one child of the exit group ended and what reached its queue."""

    exitcode: int | None = None
    received: int = 0
    alive_after_hold: bool = False
    seconds: float = 0.0
    eof: bool = False
    polled: bool = False
    note: str = ""


@dataclass
class ExitGroup:
    """The children of rows 25-31 and 44, started together (one queue each).

    Starting them at once overlaps their start-up (which dominates under spawn) and
    their observation windows.
    """

    flush: Exited = field(default_factory=Exited)
    creator: Exited | None = None
    os_exit: Exited | None = None
    sigkill: Exited | None = None
    cancel: Exited | None = None
    close_join: Exited | None = None
    bad_last: Exited | None = None
    normal: Exited = field(default_factory=Exited)
    missing: list[str] = field(default_factory=list)


def _group_part(cx: CheckContext, g: ExitGroup, part: Exited | None) -> Exited:
    """A part of the exit group that needs close()/join_thread()/cancel_join_thread()."""
    if part is None:
        if g.missing:
            cx.require(_Names(g.missing), *g.missing)
        raise Unsupported("not run for this queue kind")
    return part


class _Names:
    """Stands for a queue lacking *names* (for :meth:`CheckContext.require`)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names


def _lost(q: Any) -> bool:
    """After the producer has exited: whether its one item never reached the pipe."""
    try:
        q.get(timeout=0.05)
    except queue.Empty:
        return True
    return False


def _exit_group(cx: CheckContext) -> ExitGroup:
    feeder = cx.kind in ("Q", "JQ")
    n = 50
    g = ExitGroup()
    # Start every child first.
    flush_q = cx.make()
    started_r, started_w = cx.pipe()
    done_r, done_w = cx.pipe()
    flush_p = cx.start(_children.put_and_exit, flush_q, [b"x" * BIG], "return", started_w, done_w)
    normal_q = cx.make()
    normal_p = cx.start(_children.put_and_exit, normal_q, [("item", i) for i in range(n)], "return")
    quick: dict[str, tuple[Any, Any]] = {}
    g.missing = [
        n
        for n in ("close", "join_thread", "cancel_join_thread")
        if not callable(getattr(flush_q, n, None))
    ]
    if feeder and not g.missing:
        for how in ("os_exit", "sigkill", "close_join_os_exit"):
            q = cx.make()
            quick[how] = (q, cx.start(_children.put_and_exit, q, ["x"], how))
        cancel_q = cx.make()
        cancel_r, cancel_w = cx.pipe()
        cancel_p = cx.start(
            _children.put_and_exit, cancel_q, [b"x" * BIG], "cancel", None, cancel_w
        )
        # Row 37: 20 items then an unpicklable one, stderr to a file.
        fd, err_path = tempfile.mkstemp(prefix="mpfault-contract-", suffix=".err")
        os.close(fd)
        cx.on_cleanup(lambda: os.unlink(err_path))
        bad_q = cx.make()
        bad_items = [("item", i) for i in range(20)]
        bad_p = cx.start(
            _children.put_and_exit, bad_q, bad_items, "return", None, None, err_path, True
        )
    creator = cx.kind == "Q" and cx.stdlib  # the child makes a stdlib Queue itself
    if creator:
        creator_r, creator_w = cx.pipe()
        creator_p = cx.start(_children.create_put_return, cx.method, BIG, creator_w)

    # Rows 25/26: the flushing child, first part.
    cx.recv(started_r, what="start signal")
    flush_returned = None
    if feeder:  # SimpleQueue.put itself blocks: no "done" before the drain
        cx.recv(done_r, what="put() done signal")
        flush_returned = time.monotonic()
    if creator:
        cx.recv(creator_r, what="put() done signal")
        creator_returned = time.monotonic()

    # Rows 31/44: normal return.
    wanted = {("item", i) for i in range(n)}
    for _ in range(n):  # order is row 20's business: count what arrived
        try:
            got = cx.get(normal_q)
        except queue.Empty:
            break
        if got not in wanted:
            raise Mismatch(f"normal exit: {got!r} arrived, which the child never put")
        wanted.discard(got)
        g.normal.received += 1
    normal_p.join(cx.deadline)
    g.normal.exitcode = normal_p.exitcode
    reader = getattr(normal_q, "_reader", None)
    g.normal.eof = bool(reader.poll(0.05)) if reader is not None else False  # EOF: readable
    g.normal.polled = reader is not None
    if cx.kind != "SQ":
        try:
            extra = normal_q.get(timeout=0.05)
        except queue.Empty:
            g.normal.note = "Empty"
        except EOFError:
            g.normal.note = "EOFError"
        else:
            g.normal.note = f"returned {extra!r}"

    if quick:
        # Rows 27, 28, 30: one item, then os._exit / SIGKILL / close+join_thread+os._exit.
        results = {}
        for how, (q, p) in quick.items():
            p.join(cx.deadline)
            results[how] = Exited(exitcode=p.exitcode, received=0 if _lost(q) else 1)
        g.os_exit = results["os_exit"]
        g.sigkill = results["sigkill"]
        g.close_join = results["close_join_os_exit"]
        # Row 29: cancel_join_thread() lets it exit with 1 MB unflushed.
        cx.recv(cancel_r, what="put() done signal")
        t0 = time.perf_counter()
        cancel_p.join(cx.deadline)
        g.cancel = Exited(exitcode=cancel_p.exitcode, seconds=time.perf_counter() - t0)
        # (the cancelled queue may hold a truncated frame: it is never read)
        # Row 37: the good items arrive; the unpicklable one is dropped silently.
        received = 0
        good = set(bad_items)
        for _ in bad_items:
            try:
                got = bad_q.get(timeout=cx.deadline)
            except queue.Empty:
                break
            if got not in good:
                raise Mismatch(f"row 37 child: got {got!r}, which it never put")
            good.discard(got)
            received += 1
        bad_p.join(cx.deadline)
        if received == len(bad_items) and not _lost(bad_q):
            received += 1  # something beyond the good items arrived
        with open(err_path, encoding="utf-8", errors="replace") as f:
            err = f.read()
        g.bad_last = Exited(exitcode=bad_p.exitcode, received=received, note=err)

    # Rows 25/26: still alive at least `hold` after returning (or while blocked in put).
    since = cx.hold if flush_returned is None else time.monotonic() - flush_returned
    flush_p.join(max(0.0, cx.hold - since) if flush_returned is not None else cx.hold)
    g.flush.alive_after_hold = flush_p.exitcode is None
    got = cx.get(flush_q)
    drained = time.perf_counter()
    flush_p.join(cx.deadline)
    g.flush.exitcode = flush_p.exitcode
    g.flush.seconds = time.perf_counter() - drained
    g.flush.received = len(got)
    if len(got) != BIG:
        raise Mismatch(f"the 1 MB item arrived with {len(got)} bytes")
    if creator:
        creator_p.join(max(0.0, cx.hold - (time.monotonic() - creator_returned)))
        g.creator = Exited(exitcode=creator_p.exitcode, alive_after_hold=creator_p.exitcode is None)
        cx.stop(creator_p)
    return g


def exit_group(cx: CheckContext) -> ExitGroup:
    """The :class:`ExitGroup` of this queue kind and start method (run once)."""
    return cx.shared("exit-group", lambda: _exit_group(cx))


@check(
    row=25,
    slug="exit-waits-for-flush",
    parallel=True,
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
    r = exit_group(cx).flush
    cx.figure(**{"exit after get s": r.seconds})
    if not r.alive_after_hold and not cx.stdlib and r.received == BIG and r.exitcode == 0:
        return differs(
            f"the child exited within {cx.hold:g} s of put(1 MB) and returning, before anyone "
            "read, and the 1 MB still arrived intact: nothing buffered to wait for"
        )
    if not r.alive_after_hold:
        return failed(
            f"the child exited within {cx.hold:g} s of returning although 1 MB was still "
            "buffered and nobody read"
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
        "exit it will attempt to join the queue's background thread.\" The code joins in every "
        "process since bpo-30886 (3.5.4/3.6.2)."
    ),
    kinds=("Q",),
    expect="a child that created a Queue, put 1 MB and returned is still alive after 0.2 s",
)
def creator_also_waits(cx: CheckContext) -> Outcome:
    """Row 25 (creator detail)."""
    if not cx.stdlib:
        return skipped("needs a queue made inside the child (the provider is not sent there)")
    r = exit_group(cx).creator
    assert r is not None
    if not r.alive_after_hold:
        return failed(f"the creator exited (code {r.exitcode}) without its data being read")
    return passed("the creator was still waiting for its feeder at exit")


@check(
    row=26,
    slug="join-before-get-blocks",
    parallel=True,
    title="joining a child whose unconsumed puts exceed the pipe waits until they are got",
    kind="documented",
    source=(
        "Doc Programming guidelines, \"Joining processes that use queues\": q.put('X' * "
        '1000000) ... p.join()  # this deadlocks; "if a child process has put items on a '
        "queue (and it has not used cancel_join_thread), then that process will not "
        'terminate until all buffered items have been flushed to the pipe."'
    ),
    kinds=("Q", "JQ", "SQ"),
    expect="p.join(0.2) leaves the child alive; after get() p.join() returns, exit code 0",
)
def join_before_get_blocks(cx: CheckContext) -> Outcome:
    """Row 26."""
    r = exit_group(cx).flush
    if not r.alive_after_hold and not cx.stdlib and r.received == BIG and r.exitcode == 0:
        return differs(
            f"p.join({cx.hold:g}) returned before the 1 MB was got, and the item still "
            "arrived intact: joining first does not deadlock with this queue"
        )
    if not r.alive_after_hold:
        return failed(f"p.join({cx.hold:g}) returned: the child exited before its data was got")
    if r.exitcode != 0:
        return failed(f"after get() the child's exit code was {r.exitcode}")
    return passed("join() waited while the data was unread and returned after get()")


@check(
    row=27,
    slug="os-exit-after-put-loses-data",
    parallel=True,
    title="os._exit() right after put() loses the item (exit handlers and feeder skipped)",
    kind="detail",
    source="Implied by the docs (cancel_join_thread text, feeder note); not stated",
    kinds=("Q", "JQ"),
    expect="child put(x); os._exit(0): exit code 0, nothing arrives",
)
def os_exit_loses(cx: CheckContext) -> Outcome:
    """Row 27."""
    g = exit_group(cx)
    r = _group_part(cx, g, g.os_exit)
    if r.exitcode != 0:
        return failed(f"exit code {r.exitcode}")
    if r.received:
        return failed("the item arrived although the child called os._exit() right after put()")
    return passed("the item was lost")


@check(
    row=28,
    slug="sigkill-after-put-loses-data",
    parallel=True,
    title="SIGKILL right after put() loses the item",
    kind="detail",
    source="As row 27; doc Process.kill()",
    kinds=("Q", "JQ"),
    not_platforms=("win32",),
    expect="child put(x); SIGKILL itself: exit code -9, nothing arrives",
)
def sigkill_loses(cx: CheckContext) -> Outcome:
    """Row 28."""
    g = exit_group(cx)
    r = _group_part(cx, g, g.sigkill)
    if r.exitcode != -9:
        return failed(f"exit code {r.exitcode} (expected -9)")
    if r.received:
        return failed("the item arrived although the child was SIGKILLed right after put()")
    return passed("the item was lost")


@check(
    row=29,
    slug="cancel-join-thread-exits-without-flush",
    parallel=True,
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
    g = exit_group(cx)
    r = _group_part(cx, g, g.cancel)
    cx.figure(**{"exit s": r.seconds})
    if r.exitcode is None:
        return failed(f"the child was still alive {cx.deadline:g} s after cancel_join_thread()")
    if r.exitcode != 0:
        return failed(f"exit code {r.exitcode}")
    return passed("the child exited without waiting for its 1 MB to be read")


@check(
    row=30,
    slug="close-join-thread-flushes",
    parallel=True,
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
    g = exit_group(cx)
    r = _group_part(cx, g, g.close_join)
    if r.exitcode != 0:
        return failed(f"exit code {r.exitcode}")
    if not r.received:
        return failed("the item did not arrive although close() and join_thread() returned")
    return passed("the item arrived")


@check(
    row=31,
    slug="normal-exit-flushes",
    parallel=True,
    title="a normal return from the child flushes everything it put",
    kind="documented",
    source=DOC_EXIT_WAITS,
    kinds=("Q", "JQ"),
    expect="child put 50 items and returned: all 50 arrive in order, exit code 0",
)
def normal_exit_flushes(cx: CheckContext) -> Outcome:
    """Row 31."""
    r = exit_group(cx).normal
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
    cx.require(q, "join_thread")
    try:
        q.join_thread()
    except AssertionError:
        return passed("join_thread() on an open queue raised AssertionError")
    except Exception as exc:
        return failed(f"join_thread() on an open queue raised {exc_text(exc)}, not AssertionError")
    return failed("join_thread() on an open queue returned")


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
    cx.require(q, "close")
    q.put(1)
    q.close()
    try:
        q.close()
    except Exception as exc:
        return failed(f"a second close() raised {exc_text(exc)}")
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
    cx.require(q, "close", "put_nowait", "get_nowait")
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
                return failed(f"{label} on a closed queue raised {exc_text(exc)}")
        except Exception as exc:
            return failed(f"{label} on a closed queue raised {exc_text(exc)}, not ValueError")
        else:
            return failed(f"{label} on a closed queue did not raise")
    return passed(
        "put, put_nowait, get, get_nowait on the closed queue raised ValueError(... is closed)"
    )


@check(
    row=35,
    slug="close-broken-pipe-tracebacks",
    title="put(); close(); join_thread() flushes without BrokenPipeError (3.8's close() "
    "closed the reader at once, so the flushing feeder printed BrokenPipeError)",
    kind="detail",
    source="bpo-35844; fixed by bpo-47029 (PR #31913) in 3.9: the feeder closes the reader",
    kinds=("Q", "JQ"),
    expect="20 x (put 1 KB, close(), join_thread()): no BrokenPipeError printed",
)
def close_broken_pipe(cx: CheckContext) -> Outcome:
    """Row 35 (CPython 3.9+ behaviour; a queue whose close() closes the reader differs)."""
    from .checks_pickling import _last_line, stderr_kept

    trials, noisy = 20, 0
    last = ""
    for _ in range(trials):
        q = cx.make()
        cx.require(q, "close", "join_thread")
        with stderr_kept() as err:
            q.put(b"x" * 1000)  # fits the pipe: join_thread() needs no reader
            q.close()
            q.join_thread()
        if "BrokenPipeError" in err.getvalue():
            noisy += 1
            last = _last_line(err.getvalue())
    cx.figure(**{"BrokenPipeError": f"{noisy}/{trials}"})
    if noisy:
        return failed(
            f"put(1 KB); close(); join_thread() printed BrokenPipeError in {noisy}/{trials} "
            f"trials ({last}): close() closes the reader before the feeder has flushed"
        )
    return passed(f"no BrokenPipeError in {trials} trials of put(); close(); join_thread()")
