"""Rows 47-51: JoinableQueue's task_done() and join()."""

from __future__ import annotations

import time

from . import _children
from .checks_pickling import capturing, wait_feeder_error
from .context import CheckContext, exc_text
from .model import Outcome, failed, passed
from .registry import check, unobservable


@check(
    row=47,
    slug="task-done-too-many-times",
    title="task_done() called more times than items were put raises ValueError",
    kind="documented",
    source=(
        'Doc JoinableQueue.task_done: "Raises a ValueError if called more times than there '
        'were items placed in the queue." Code l.341-346'
    ),
    kinds=("JQ", "MQ"),
    expect="ValueError('task_done() called too many times')",
)
def task_done_too_many(cx: CheckContext) -> Outcome:
    """Row 47."""
    q = cx.make()
    cx.require(q, "task_done", "join")
    q.put(1)
    cx.get(q)
    q.task_done()
    try:
        q.task_done()
    except ValueError as exc:
        if "too many times" not in str(exc):
            return failed(f"the extra task_done() raised {exc_text(exc)}")
        return passed(f"the extra task_done() raised {exc_text(exc)}")
    except Exception as exc:
        return failed(f"the extra task_done() raised {exc_text(exc)}, not ValueError")
    return failed("the extra task_done() returned")


@check(
    row=48,
    slug="join-waits-for-task-done",
    title="join() blocks until every put() item had its task_done(); returns at once if none",
    kind="documented",
    source=(
        'Doc JoinableQueue.join: "Block until all items in the queue have been gotten and '
        "processed. The count of unfinished tasks goes up whenever an item is added to the "
        'queue. The count goes down whenever a consumer calls task_done() ..."'
    ),
    kinds=("JQ", "MQ"),
    expect="fresh join() returns at once; with 2 items outstanding it blocks; after 2 "
    "task_done() it returns",
    headline="join wake s",
)
def join_waits(cx: CheckContext) -> Outcome:
    """Row 48."""
    q = cx.make()
    cx.require(q, "task_done", "join")
    cx.immediate("join() with nothing outstanding", None, q.join)
    q.put(1)
    q.put(2)
    joiner = cx.thread(cx.for_thread(q).join)
    if joiner.join(cx.hold):
        return failed(f"join() {joiner.describe()} with 2 tasks outstanding")
    for _ in range(2):
        cx.get(q)
        q.task_done()
    done_at = time.perf_counter()
    if not joiner.join(cx.deadline):
        return failed(f"join() still blocked {cx.deadline:g} s after the last task_done()")
    joiner.value()
    cx.figure(**{"join wake s": joiner.finished - done_at})
    return passed("join() waited for both task_done() calls")


@check(
    row=49,
    slug="unpicklable-item-wedges-join",
    title="an unpicklable item is dropped by the feeder but still counted, so join() hangs",
    kind="detail",
    source="Code _feed error path: queue_sem.release(); onerror(e, obj); _unfinished_tasks "
    "untouched (undocumented)",
    kinds=("JQ",),
    expect="after put(Unpicklable()) join() is blocked after 0.2 s; one extra task_done() "
    "releases it",
)
def unpicklable_wedges_join(cx: CheckContext) -> Outcome:
    """Row 49."""
    q = capturing(cx)
    cx.require(q, "task_done", "join")
    if not cx.stdlib:
        try:
            q.put(_children.Unpicklable())
        except Exception as exc:
            cx.immediate("join() after a put() that raised", None, q.join)
            return failed(
                f"put(Unpicklable()) raised {exc_text(exc)} in the caller, and join() "
                "returned at once: the item was never counted"
            )
        q.put("after")  # once it arrives, the bad item has been dealt with (FIFO)
        got = cx.get(q)
        q.task_done()
        if got != "after":
            return failed(f"after put(Unpicklable()), put('after'): get() returned {got!r}")
    else:
        q.put(_children.Unpicklable())
        wait_feeder_error(cx, q)
    joiner = cx.thread(q.join)
    if joiner.join(cx.hold):
        return failed(f"join() {joiner.describe()} although the dropped item was never done")
    q.task_done()
    if not joiner.join(cx.deadline):
        return failed("join() still blocked after an extra task_done()")
    return passed("join() hung on the dropped item until an extra task_done()")


unobservable(
    row=50,
    slug="join-waits-once",
    title="join() waits once, not in a loop: it is not a strict barrier under concurrent producers",
    kind="detail",
    source="Code l.348-351: if not zero: self._cond.wait()",
    kinds=("JQ",),
    expect="join() may return while tasks are outstanding",
    reason="a race between notify_all and new puts with no deterministic observation",
)

unobservable(
    row=51,
    slug="task-semaphore-overflow",
    title="missing task_done() calls let the unfinished-tasks semaphore overflow",
    kind="documented",
    source=(
        'Doc: "you must call JoinableQueue.task_done() for each task removed from the queue '
        "or else the semaphore used to count the number of unfinished tasks may eventually "
        'overflow, raising an exception."'
    ),
    kinds=("JQ",),
    expect="an exception after SEM_VALUE_MAX outstanding tasks",
    reason="needs SEM_VALUE_MAX (2**31-1 on Linux) outstanding tasks",
)
