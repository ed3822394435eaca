"""Rows 42-45 and 55: abrupt death of a consumer or producer.

Every check here kills a process that uses the queue, so each makes a fresh queue and
throws it away afterwards (it is wedged by design).
"""

from __future__ import annotations

import queue
import time
from typing import Any

from .._timing import TimingError, expect_timeout
from . import _children
from .checks_lifecycle import exit_group
from .context import CheckContext, signal_process
from .model import Mismatch, Outcome, Unsupported, failed, passed
from .registry import check, unobservable

DOC_KILL = (
    'Doc "Pipes and Queues" warning: "If a process is killed using Process.terminate() or '
    "os.kill() while it is trying to use a Queue, then the data in the queue is likely to "
    "become corrupted. This may cause any other process to get an exception when it tries "
    'to use the queue later on."'
)


def _lock_held(lock: Any) -> bool:
    """Whether a multiprocessing Lock is held by someone (without taking it for long)."""
    try:
        return bool(lock._semlock._get_value() == 0)
    except (AttributeError, NotImplementedError):  # pragma: no cover - macOS
        if lock.acquire(False):
            lock.release()
            return False
        return True


def _wait_lock_held(cx: CheckContext, lock: Any, p: Any) -> bool:
    end = time.monotonic() + cx.deadline
    while time.monotonic() < end and p.is_alive():
        if _lock_held(lock):
            return True
        p.join(0.001)
    return False


def _kill_blocked_consumer(cx: CheckContext, q: Any, p: Any, ready: Any) -> None:
    """Wait until consumer *p* is blocked in get() holding _rlock, then SIGKILL it."""
    cx.private(q, "_rlock")
    cx.recv(ready, what="ready signal")
    if not _wait_lock_held(cx, q._rlock, p):
        raise Mismatch("the consumer never held _rlock while blocked in get()")
    signal_process(p)
    p.join(cx.deadline)
    if p.exitcode != -9:
        raise Mismatch(f"the killed consumer's exit code is {p.exitcode}")


def _after_killed_consumer(cx: CheckContext, q: Any) -> Outcome:
    q.put("stuck")
    if not cx.readable(q):
        return failed("the item never reached the pipe")
    try:
        with expect_timeout(cx.timeout, raises=queue.Empty, tolerance=cx.tolerance) as t:
            q.get(timeout=cx.timeout)
    except TimingError as exc:
        return failed(f"get(timeout={cx.timeout:g}) after the consumer was killed: {exc}")
    try:
        got = q.get_nowait()
    except queue.Empty:
        pass
    else:
        return failed(f"get_nowait() returned {got!r}: the lock was not wedged")
    empty = q.empty()
    try:
        size: Any = q.qsize()
    except NotImplementedError:  # pragma: no cover - macOS
        size = "n/a"
    figures = {"overshoot": round(t.overshoot, 6), "qsize": size}
    if empty:
        return failed("empty() is True although the item is in the pipe", **figures)
    return passed(
        f"Empty from get(timeout) after {t.elapsed:.4f} s and from get_nowait(); "
        f"empty() False, qsize() {size}",
        **figures,
    )


def _after_killed_producer(cx: CheckContext, q: Any, p: Any) -> Outcome:
    if not cx.readable(q):
        return failed("the child's feeder never started writing")
    if not _wait_lock_held(cx, q._wlock, p):
        return failed("_wlock was not held while the feeder wrote")
    signal_process(p)
    p.join(cx.deadline)
    if q._wlock.acquire(False):
        q._wlock.release()
        return failed("_wlock was free after the writer was killed")
    return passed("_wlock stays held by the dead producer's feeder")


def _death_group(cx: CheckContext) -> tuple[Outcome, Outcome]:
    """Rows 42 and 43 for Q/JQ: both children are started together (fresh queues)."""
    consumer_q = cx.make()
    cx.private(consumer_q, "_rlock", "_wlock", "_reader")
    ready_r, ready_w = cx.pipe()
    consumer = cx.start(_children.blocking_get, consumer_q, ready_w)
    # The truncated frame the producer leaves is never read: get() would block forever.
    producer_q = cx.make()
    producer = cx.start(_children.put_and_exit, producer_q, [b"x" * (8 * 1024 * 1024)], "hold")
    try:
        _kill_blocked_consumer(cx, consumer_q, consumer, ready_r)
    except Mismatch as exc:
        row42 = failed(str(exc))
    else:
        row42 = _after_killed_consumer(cx, consumer_q)
    return row42, _after_killed_producer(cx, producer_q, producer)


def _report(cx: CheckContext, outcome: Outcome) -> Outcome:
    cx.figure(**outcome.figures)
    return outcome


@check(
    row=42,
    slug="killed-consumer-wedges-read-lock",
    parallel=True,
    title="a consumer killed inside get() leaves _rlock held: others' get(timeout) raise "
    "Empty although data waits",
    kind="detail",
    source=DOC_KILL + ' Doc Process.terminate: "... liable to cause other processes to deadlock."',
    kinds=("Q", "JQ"),
    not_platforms=("win32",),
    expect="after SIGKILL: item in the pipe, get(timeout=0.1) Empty, get_nowait() Empty, "
    "empty() False",
    headline="overshoot",
)
def killed_consumer_wedges(cx: CheckContext) -> Outcome:
    """Row 42 (its child runs with row 43's)."""
    return _report(cx, cx.shared("death-group", lambda: _death_group(cx))[0])


@check(
    row=55,
    slug="killed-consumer-wedges-simplequeue",
    title="a consumer killed inside SimpleQueue.get() leaves _rlock held",
    kind="detail",
    source="As row 42",
    kinds=("SQ",),
    not_platforms=("win32",),
    expect="after SIGKILL: _rlock.acquire(False) False; empty() False once an item is put",
)
def killed_consumer_wedges_sq(cx: CheckContext) -> Outcome:
    """Row 55."""
    q = cx.make()
    cx.private(q, "_rlock")
    r, w = cx.pipe()
    _kill_blocked_consumer(cx, q, cx.start(_children.blocking_get, q, w), r)
    q.put("stuck")
    if q._rlock.acquire(False):
        q._rlock.release()
        return failed("_rlock was free after the consumer was killed")
    if q.empty():
        return failed("empty() is True after put()")
    return passed("_rlock stays held by the dead consumer; the item is stuck in the pipe")


@check(
    row=43,
    slug="killed-producer-wedges-write-lock",
    parallel=True,
    title="a producer killed while its feeder writes a large item leaves _wlock held (and a "
    "truncated frame)",
    kind="detail",
    source=(
        'Doc Connection Objects warning: "If a process is killed while it is trying to read '
        "or write to a pipe then the data in the pipe is likely to become corrupted, because "
        'it may become impossible to be sure where the message boundaries lie."'
    ),
    kinds=("Q", "JQ"),
    not_platforms=("win32",),
    expect="child puts 8 MiB nobody reads, is SIGKILLed mid-write: _wlock.acquire(False) False",
)
def killed_producer_wedges(cx: CheckContext) -> Outcome:
    """Row 43 (its child runs with row 42's)."""
    return _report(cx, cx.shared("death-group", lambda: _death_group(cx))[1])


@check(
    row=44,
    slug="no-eof-when-producers-die",
    parallel=True,
    title="a queue never reports that its producers are gone: no EOF, get() just times out",
    kind="detail",
    source=(
        "Code Queue.__getstate__ ships _reader and _writer, so every process holds both "
        "ends. gh-87971 (bpo-43805, open)"
    ),
    kinds=("Q", "JQ", "SQ"),
    expect="after the only producer exited and its items were got: poll() False, "
    "get(timeout) Empty (not EOFError)",
)
def no_eof(cx: CheckContext) -> Outcome:
    """Row 44."""
    r = exit_group(cx).normal
    if r.received != 50 or r.exitcode != 0:
        return failed(f"the producer's run failed: {r.received} items, exit code {r.exitcode}")
    if r.eof:
        return failed("the reader polled readable (EOF) after the producer exited")
    if cx.kind != "SQ" and r.note != "Empty":
        return failed(f"get(timeout) after the producer exited: {r.note}")
    parts = ["the reader's poll() stayed False"] if r.polled else []
    if cx.kind != "SQ":
        parts.append("get(timeout=0.05) raised queue.Empty, not EOFError")
    if not parts:
        raise Unsupported("no _reader (CPython's private attribute) and no get() timeout")
    return passed("after the only producer exited: " + "; ".join(parts))


unobservable(
    row=45,
    slug="no-recovery-from-owner-death",
    title="locks and semaphores are not robust to owner death; there is no recovery API",
    kind="detail",
    source="gh-88304 (bpo-44138, open)",
    kinds=("Q", "JQ", "SQ"),
    expect="a wedged queue must be discarded",
    reason="the absence of an API; the wedging itself is observed by rows 42, 43 and 55",
)
