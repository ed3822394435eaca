"""Rows 52-54: SimpleQueue (row 55 is with the other death checks)."""

from __future__ import annotations

import sys

from . import _children
from .context import CheckContext, exc_text
from .model import Outcome, differs, failed, passed
from .registry import check


@check(
    row=52,
    slug="simplequeue-api",
    title="SimpleQueue has only get(), put(), empty() and close() (3.9+); get(timeout=1) is "
    "a TypeError",
    kind="documented",
    source=(
        'Doc SimpleQueue: "It is a simplified Pipe type, very close to a locked Pipe." '
        'Methods close() ("Added in version 3.9"), empty(), get(), put(item). bpo-30966'
    ),
    kinds=("SQ",),
    expect="get/put/empty/close present; qsize/full/get_nowait/put_nowait absent; TypeError",
)
def simplequeue_api(cx: CheckContext) -> Outcome:
    """Row 52."""
    q = cx.make()
    want = ["get", "put", "empty"] + (["close"] if sys.version_info >= (3, 9) else [])
    missing = [m for m in want if not callable(getattr(q, m, None))]
    extra = [m for m in ("qsize", "full", "get_nowait", "put_nowait", "task_done") if hasattr(q, m)]
    if missing:
        return failed(f"the queue lacks {', '.join(m + '()' for m in missing)}")
    if extra and not cx.stdlib:
        return differs(f"the queue also has {', '.join(m + '()' for m in extra)}")
    if extra:
        return failed(f"unexpected {extra}")
    try:
        q.get(timeout=1)
    except TypeError as exc:
        return passed(f"API as documented; get(timeout=1) raised {exc_text(exc)}")
    except Exception as exc:
        if not cx.stdlib:
            return differs(f"get(timeout=1) raised {exc_text(exc)}, not TypeError")
        return failed(f"get(timeout=1) raised {exc_text(exc)}, not TypeError")
    if not cx.stdlib:
        return differs("get(timeout=1) was accepted (a timeout beyond SimpleQueue's API)")
    return failed("get(timeout=1) did not raise TypeError")


@check(
    row=53,
    slug="simplequeue-put-is-synchronous",
    title="SimpleQueue.put() pickles and writes in the caller: accurate empty(), no loss on "
    "os._exit(), but put() blocks on a full pipe",
    kind="detail",
    source="Code SimpleQueue.put l.389-397 (undocumented)",
    kinds=("SQ",),
    expect="empty() False right after put(); child put+os._exit delivers; put(200 KB) with "
    "no reader blocks",
)
def simplequeue_put_sync(cx: CheckContext) -> Outcome:
    """Row 53."""
    q = cx.make()
    q.put("x")
    if q.empty():
        return failed("empty() was True right after put()")
    cx.get(q)
    p = cx.start(_children.put_and_exit, q, ["from-child"], "os_exit")
    p.join(cx.deadline)
    try:
        got = cx.get(q)
    except Exception:
        return failed("the item put before os._exit() did not arrive")
    if got != "from-child":
        return failed(f"got {got!r}")
    payload = b"x" * 200_000
    putter = cx.thread(q.put, payload)
    if putter.join(cx.hold):
        return failed(f"put(200 KB) with no reader {putter.describe()} instead of blocking")
    got = cx.get(q)
    if not putter.join(cx.deadline) or got != payload:
        return failed("put(200 KB) did not complete after the item was read")
    return passed("empty() accurate, no loss on os._exit(), put() blocked on the full pipe")


@check(
    row=54,
    slug="simplequeue-closed-oserror",
    title="empty() on a closed SimpleQueue raises OSError; close() twice is fine",
    kind="documented",
    source=(
        'Doc SimpleQueue.empty: "Always raises an OSError if the SimpleQueue is closed." '
        "CPython TestSimpleQueue.test_empty_exceptions"
    ),
    kinds=("SQ",),
    since=(3, 9),
    expect="OSError('handle is closed') from empty(); a second close() returns",
)
def simplequeue_closed(cx: CheckContext) -> Outcome:
    """Row 54."""
    q = cx.make()
    q.close()
    q.close()
    try:
        q.empty()
    except OSError as exc:
        observed = f"OSError({str(exc)!r})"
    else:
        return failed("empty() on a closed SimpleQueue returned")
    others = []
    for label, fn in (("get()", q.get), ("put(x)", lambda: q.put("x"))):
        try:
            fn()
        except Exception as exc:
            others.append(f"{label}: {exc_text(exc)}")
        else:
            others.append(f"{label}: returned")
    cx.figure(**{"get/put": ", ".join(others)})
    return passed(f"empty() raised {observed}; {', '.join(others)}")
