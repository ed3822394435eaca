"""Rows 11-19: size and state inspection (qsize, empty, full, check-then-act races)."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import Any

from . import _children
from .context import CheckContext
from .model import Mismatch, Outcome, Unsupported, failed, passed
from .registry import check

TRIALS = 20
NOT_RELIABLE = 'Doc: "Because of multithreading/multiprocessing semantics, this is not reliable."'


@dataclass
class Visibility:
    """What was seen right after put() on a Queue(1), over several trials."""

    trials: int = 0
    empty_right_after: int = 0
    full_and_empty: int = 0
    nowait_empty: int = 0
    nowait_trials: int = 0
    qsize_one: int = 0
    latencies: list[float] = field(default_factory=list)
    has_full: bool = True
    has_qsize: bool = True


def _visibility(cx: CheckContext) -> Visibility:
    """Put on a fresh Queue(1) and look right away: empty()/full()/qsize(), or get_nowait().

    Each trial uses a fresh queue, so its put() is the first one (the case of CPython's
    note).  Even trials look at empty(), full() and qsize(); odd trials call
    get_nowait().  Then empty() is polled until it turns False (the latency of row 13).
    """
    v = Visibility()
    for i in range(TRIALS):
        q = cx.make(1)
        if i == 0:
            if not hasattr(q, "empty"):
                raise Unsupported("the queue has no empty()")
            v.has_full, v.has_qsize = hasattr(q, "full"), hasattr(q, "qsize")
            has_nowait = hasattr(q, "get_nowait")
        item = ("trial", i)
        q.put(item)
        t0 = time.perf_counter()
        got: Any = None
        if i % 2 and has_nowait:
            v.nowait_trials += 1
            try:
                got = q.get_nowait()
            except queue.Empty:
                v.nowait_empty += 1
        else:
            empty = q.empty()
            full = q.full() if v.has_full else False
            try:
                size = q.qsize() if v.has_qsize else None
            except NotImplementedError:
                size, v.has_qsize = None, False
            v.empty_right_after += empty
            v.full_and_empty += empty and full
            v.qsize_one += size == 1
        v.trials += 1
        if got is None:
            end = t0 + cx.deadline
            while q.empty():
                if time.perf_counter() > end:
                    raise Mismatch(f"empty() still True {cx.deadline:g} s after put()")
            v.latencies.append(time.perf_counter() - t0)
            got = cx.get(q)
        if got != item:
            raise Mismatch(f"got {got!r} instead of {item!r}")
        if cx.kind in ("Q", "JQ", "SQ") and callable(getattr(q, "close", None)):
            q.close()
    return v


@check(
    row=11,
    slug="qsize-counts-buffered-items",
    title="qsize() counts items still in the feeder buffer (maxsize - semaphore value)",
    kind="detail",
    source=(
        'Doc qsize: "Return the approximate size of the queue. ... this number is not '
        'reliable." Code l.124: self._maxsize - self._sem._semlock._get_value()'
    ),
    kinds=("Q", "JQ", "MQ"),
    not_platforms=("darwin",),
    expect="qsize() == 1 immediately after put() (Q/JQ even while empty() is True)",
)
def qsize_counts_buffered(cx: CheckContext) -> Outcome:
    """Row 11."""
    v = cx.shared("visibility", lambda: _visibility(cx))
    looked = v.trials - v.nowait_trials
    cx.figure(**{"qsize()==1": f"{v.qsize_one}/{looked}"})
    cx.figure(**{"empty() too": v.empty_right_after})
    if v.qsize_one != looked:
        return failed(f"qsize() was 1 right after put() in only {v.qsize_one}/{looked} trials")
    return passed(
        f"qsize()==1 right after put() in {looked}/{looked} trials, "
        f"{v.empty_right_after} of them while empty() was still True"
    )


@check(
    row=12,
    slug="qsize-not-implemented-macos",
    title="qsize() raises NotImplementedError on macOS (no sem_getvalue())",
    kind="detail",
    source=(
        'Doc qsize: "Note that this may raise NotImplementedError on platforms like macOS '
        "where sem_getvalue() is not implemented.\" gh-101094 (closed, won't fix)"
    ),
    kinds=("Q", "JQ"),
    platforms=("darwin",),
    expect="NotImplementedError",
)
def qsize_not_implemented(cx: CheckContext) -> Outcome:
    """Row 12."""
    q = cx.make()
    try:
        n = q.qsize()
    except NotImplementedError:
        return passed("qsize() raised NotImplementedError")
    return failed(f"qsize() returned {n}")


@check(
    row=13,
    slug="empty-turns-false-after-put",
    title="after put() on an empty queue, empty() turns False (possibly after a short delay)",
    kind="documented",
    source=(
        'Doc "Pipes and Queues" note 1: "After putting an object on an empty queue there may '
        "be an infinitesimal delay before the queue's empty() method returns False and "
        'get_nowait() can return without raising queue.Empty."'
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    generic=True,
    expect="empty() False within 10 s of put() in every trial, then the item is there",
    headline="max latency",
)
def empty_turns_false(cx: CheckContext) -> Outcome:
    """Row 13 (documented part: visibility comes, with a delay)."""
    v = cx.shared("visibility", lambda: _visibility(cx))
    lat = sorted(v.latencies)
    if lat:
        cx.figure(**{"max latency": lat[-1], "median latency": lat[len(lat) // 2]})
    return passed(
        f"empty() turned False after every put(); slowest {lat[-1] * 1000:.2f} ms"
        if lat
        else "every get_nowait() right after put() returned the item"
    )


@check(
    row=13,
    slug="empty-lags-after-put",
    title="empty() looks only at the pipe, so it is still True right after put()",
    kind="detail",
    source="Code l.126-127: return not self._poll(); the feeder thread writes later",
    kinds=("Q", "JQ"),
    expect="empty() True right after the first put() in at least one of 10 trials",
)
def empty_lags(cx: CheckContext) -> Outcome:
    """Row 13 (the lag detail; gh-142837 would remove it)."""
    v = cx.shared("visibility", lambda: _visibility(cx))
    looked = v.trials - v.nowait_trials
    cx.figure(**{"empty() right after put": f"{v.empty_right_after}/{looked}"})
    if v.empty_right_after == 0:
        return failed(f"empty() was False right after put() in all {looked} trials")
    return passed(f"empty() was True right after put() in {v.empty_right_after}/{looked} trials")


@check(
    row=14,
    slug="get-nowait-right-after-put",
    title="get_nowait() right after put() in the same process usually raises Empty",
    kind="detail",
    source="Same note 1 as row 13; the item is still in the feeder buffer",
    kinds=("Q", "JQ"),
    expect="Empty in at least one of 10 trials",
)
def get_nowait_after_put(cx: CheckContext) -> Outcome:
    """Row 14."""
    v = cx.shared("visibility", lambda: _visibility(cx))
    cx.figure(**{"Empty right after put": f"{v.nowait_empty}/{v.nowait_trials}"})
    if v.nowait_empty == 0:
        return failed(f"get_nowait() returned the item in all {v.nowait_trials} trials")
    return passed(f"get_nowait() raised Empty in {v.nowait_empty}/{v.nowait_trials} trials")


@check(
    row=15,
    slug="full-and-empty-both-true",
    title="full() counts buffered items, empty() looks at the pipe: both can be True",
    kind="detail",
    source='Code l.126-130; doc: full() is "not reliable" (undocumented combination)',
    kinds=("Q", "JQ"),
    expect="full() and empty() both True after Queue(1).put(x) in at least one trial",
)
def full_and_empty(cx: CheckContext) -> Outcome:
    """Row 15."""
    v = cx.shared("visibility", lambda: _visibility(cx))
    looked = v.trials - v.nowait_trials
    cx.figure(**{"both True": f"{v.full_and_empty}/{looked}"})
    if v.full_and_empty == 0:
        return failed(f"full() and empty() were never both True ({looked} trials)")
    return passed(f"full() and empty() were both True in {v.full_and_empty}/{looked} trials")


@check(
    row=16,
    slug="full-check-then-put-race",
    parallel=True,
    title="'if not q.full(): q.put_nowait(x)' can raise Full with several producers; "
    "every put that succeeded is delivered once",
    kind="documented",
    source=(
        NOT_RELIABLE + " (full()). queue docs: \"if full() returns False it doesn't guarantee "
        'that a subsequent call to put() will not block."'
    ),
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="2 producer processes x 100 guarded puts (retried after Full) on Queue(2): only "
    "Full raised; every item delivered once",
)
def full_check_then_put(cx: CheckContext) -> Outcome:
    """Row 16."""
    n = 100
    q = cx.make(2)
    cx.require(q, "full", "put_nowait")
    r, w = cx.pipe()
    producers = [cx.start(_children.guarded_puts, q, tag, n, w) for tag in (0, 1)]
    reports: dict[int, tuple[Any, ...]] = {}
    got: list[Any] = []
    end = time.monotonic() + cx.deadline
    while len(reports) < len(producers) or len(got) < sum(len(x[1]) for x in reports.values()):
        if time.monotonic() > end:
            return failed(
                f"after {cx.deadline:g} s: {len(reports)}/2 producers reported, "
                f"{len(got)} items received"
            )
        try:
            got.append(q.get(timeout=0.05))
        except queue.Empty:
            pass
        while r.poll():
            rep = r.recv()
            reports[rep[0]] = rep
    errors = [f"producer {t}: {rep[4]}" for t, rep in reports.items() if rep[4]]
    full_raised = sum(rep[2] for rep in reports.values())
    cx.figure(
        **{
            "Full raised": full_raised,
            "full() True": sum(rep[3] for rep in reports.values()),
            "delivered": len(got),
        }
    )
    if errors:
        return failed("; ".join(errors))
    try:
        extra = q.get(timeout=cx.timeout)
    except queue.Empty:
        pass
    else:
        return failed(f"received {extra!r} beyond the {len(got)} items reported as put")
    for tag, rep in reports.items():
        if len(rep[1]) != n:
            return failed(f"producer {tag} put only {len(rep[1])} of {n} items in 20 s")
        mine = sorted(i for t, i in got if t == tag)
        if mine != sorted(rep[1]):
            lost = sorted(set(rep[1]) - set(mine))[:5]
            dup = len(mine) - len(set(mine))
            return failed(f"producer {tag}: lost {lost}..., {dup} duplicates")
    return passed(f"Full raised {full_raised} times despite full() False; all puts delivered once")


@check(
    row=17,
    slug="empty-check-then-get-race",
    title="'if not q.empty(): q.get_nowait()' can raise Empty with several consumers; "
    "every item is delivered once",
    kind="documented",
    source=(
        NOT_RELIABLE + " (empty()). queue docs: \"if empty() returns False it doesn't "
        'guarantee that a subsequent call to get() will not block."'
    ),
    kinds=("Q", "JQ", "MQ"),
    generic=True,
    expect="2 consumers (a child, a thread), 300 items: only Empty raised; each item got once",
)
def empty_check_then_get(cx: CheckContext) -> Outcome:
    """Row 17."""
    n = 300
    q = cx.make()
    cx.require(q, "empty", "get_nowait")
    r, w = cx.pipe()
    # One consumer in a child, one in a thread of this process.
    ready_r, ready_w = cx.pipe()
    consumers = [
        cx.start(_children.guarded_gets, q, w, ready_w),
        cx.thread(_children.guarded_gets, cx.for_thread(q), w, ready_w),
    ]
    for _ in consumers:
        cx.recv(ready_r, what="ready signal")
    for i in range(n):
        q.put(i)
    for _ in consumers:
        q.put(None)
    reports = [cx.recv(r, what="consumer report") for _ in consumers]
    errors = [rep[2] for rep in reports if rep[2]]
    got = [x for rep in reports for x in rep[0]]
    empty_raised = sum(rep[1] for rep in reports)
    cx.figure(**{"Empty raised": empty_raised, "split": "/".join(str(len(x[0])) for x in reports)})
    if errors:
        return failed("; ".join(errors))
    if sorted(got) != list(range(n)):
        missing = sorted(set(range(n)) - set(got))[:5]
        return failed(f"{len(got)} items got, missing {missing}, {len(got) - len(set(got))} dupes")
    return passed(f"Empty raised {empty_raised} times despite empty() False; all items got once")


@check(
    row=18,
    slug="empty-on-closed-queue",
    title="empty() on a closed queue: OSError once used (after the feeder closed the "
    "reader); True if never used",
    kind="detail",
    source=(
        'Doc (3.13+) empty(): "May raise an OSError on closed queues. (not guaranteed)"; '
        "gh-120012; CPython test_closed_queue_empty_exceptions"
    ),
    kinds=("Q", "JQ"),
    since=(3, 9),
    expect="used+closed+joined: OSError 'is closed'; unused+closed: True",
)
def empty_on_closed(cx: CheckContext) -> Outcome:
    """Row 18."""
    used = cx.make()
    cx.require(used, "close", "join_thread")
    used.put(1)
    used.get(timeout=cx.deadline)
    used.close()
    used.join_thread()
    try:
        result = used.empty()
    except OSError as exc:
        if "is closed" not in str(exc):
            return failed(f"used closed queue: empty() raised OSError({str(exc)!r})")
    else:
        return failed(f"used closed queue: empty() returned {result!r} instead of raising OSError")
    unused = cx.make()
    unused.close()
    try:
        result = unused.empty()
    except OSError as exc:
        return failed(f"unused closed queue: empty() raised OSError({str(exc)!r})")
    if result is not True:
        return failed(f"unused closed queue: empty() returned {result!r}")
    return passed("used: OSError('handle is closed'); unused: True")


@check(
    row=19,
    slug="qsize-full-on-closed-queue",
    title="qsize() and full() still work on a closed queue (semaphore based)",
    kind="detail",
    source="Code l.122-130: semaphore based (undocumented)",
    kinds=("Q", "JQ"),
    not_platforms=("darwin",),
    expect="after put, get, close, join_thread: qsize() == 0, full() is False",
)
def qsize_full_on_closed(cx: CheckContext) -> Outcome:
    """Row 19."""
    q = cx.make(1)
    cx.require(q, "close", "join_thread", "qsize", "full")
    q.put(1)
    q.get(timeout=cx.deadline)
    q.close()
    q.join_thread()
    size, full = q.qsize(), q.full()
    if (size, full) != (0, False):
        return failed(f"qsize()={size!r}, full()={full!r}")
    return passed("qsize()=0, full()=False on the closed queue")
