"""Rows 65-72: start methods, contexts, capacity, availability."""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
import warnings
from typing import Any

from . import _children
from .context import CheckContext, core_dumps_disabled, exc_text, this_python
from .model import Outcome, failed, passed, skipped
from .registry import check, unobservable

unobservable(
    row=65,
    slug="queue-queue-contrast",
    title="queue.Queue (threads only) differs: no serialization, ValueError on negative "
    "timeouts, no feeder",
    kind="detail",
    source="queue module docs; queue.py l.145-206, 236-257 (3.13)",
    kinds=("MQ",),
    expect="-",
    reason="queue.Queue is a thread queue, outside the contract's queue kinds (MQ wraps it)",
)


def _expected_default(version: tuple[int, ...], platform: str) -> str:
    if platform in ("darwin", "win32"):
        return "spawn"
    return "forkserver" if version >= (3, 14) else "fork"


@check(
    row=66,
    slug="default-start-method",
    title="the default start method: fork on Linux up to 3.13, forkserver from 3.14, spawn on "
    "macOS and Windows",
    kind="documented",
    source=(
        'Doc: "Changed in version 3.14: On POSIX platforms the default start method was '
        'changed from fork to forkserver"; "Changed in version 3.8: On macOS, the spawn start '
        'method is now the default." get_all_start_methods(): "The first on the list is the '
        'default."'
    ),
    kinds=("-",),
    expect="get_all_start_methods()[0] as listed for this version and platform",
)
def default_start_method(cx: CheckContext) -> Outcome:
    """Row 66."""
    methods = multiprocessing.get_all_start_methods()
    want = _expected_default(this_python(), sys.platform)
    cx.figure(default=methods[0])
    if methods[0] != want:
        return failed(f"the default is {methods[0]!r} (all: {methods}); expected {want!r}")
    return passed(f"default {methods[0]!r}; all {methods}")


@check(
    row=67,
    slug="globals-not-shared",
    title="a module-global queue reaches a child only by fork inheritance, not under spawn "
    "or forkserver",
    kind="documented",
    source=(
        'Doc Programming guidelines, "Explicitly pass resources to child processes": "On POSIX '
        "using the fork start method, a child process can make use of a shared resource "
        'created in a parent process using a global resource."; "Global variables"'
    ),
    kinds=("Q", "JQ", "SQ"),
    expect="fork: the child finds the global queue and its item arrives; spawn/forkserver: "
    "the child finds no queue",
)
def globals_not_shared(cx: CheckContext) -> Outcome:
    """Row 67."""
    q = cx.make()
    r, w = cx.pipe()
    _children.GLOBAL_QUEUE = q
    try:
        cx.start(_children.use_global_queue, w)
    finally:
        _children.GLOBAL_QUEUE = None
    seen = cx.recv(r, what="report")
    if cx.method == "fork":
        if seen != "present":
            return failed("under fork the child did not inherit the global queue")
        got = cx.get(q)
        if got != "via-global":
            return failed(f"got {got!r} from the inherited global queue")
        return passed("fork: the child used the inherited global queue")
    if seen != "absent":
        return failed(f"under {cx.method} the child found a global queue")
    return passed(f"{cx.method}: the child re-imported the module and found no queue")


def _fork_kind(kind: str) -> Any:
    fork = multiprocessing.get_context("fork")
    if kind == "Q":
        return fork.Queue()
    if kind == "JQ":
        return fork.JoinableQueue()
    return fork.SimpleQueue()


@check(
    row=68,
    slug="fork-context-queue-in-other-context",
    title="a queue of the fork context passed to a spawn/forkserver process: RuntimeError at "
    "start() (3.11.5+), a crashing child before",
    kind="detail",
    source=(
        'Doc: "locks created using the fork context cannot be passed to processes started '
        'using the spawn or forkserver start methods." gh-77377 (3.11.5/3.12)'
    ),
    kinds=("Q", "JQ", "SQ"),
    methods=("spawn", "forkserver"),
    not_platforms=("win32",),
    expect="3.11.5+: RuntimeError mentioning the fork context; earlier: the child fails",
)
def fork_queue_other_context(cx: CheckContext) -> Outcome:
    """Row 68."""
    q = cx.track(_fork_kind(cx.kind)) if cx.stdlib else cx.create_in("fork")
    new = this_python() >= (3, 11, 5)
    try:
        with core_dumps_disabled():
            p = cx.start(_children.put_one, q, "x")
    except RuntimeError as exc:
        cx.figure(raised=str(exc)[:80])
        if not new:
            return passed(f"start() raised {exc_text(exc)}")
        if "fork context" not in str(exc):
            return failed(f"start() raised {exc_text(exc)}, without 'fork context'")
        return passed("start() raised RuntimeError (SemLock created in a fork context)")
    p.join(cx.deadline)
    code = p.exitcode
    cx.figure(exitcode=str(code))
    if new:
        return failed(f"start() did not raise; the child exited with {code}")
    if code == 0:
        return failed("the child ran and exited with 0")
    return passed(f"the child failed (exit code {code})")


@check(
    row=69,
    slug="fork-warns-with-feeder-thread",
    title="3.12+: forking while a feeder thread runs warns DeprecationWarning (multi-threaded)",
    kind="documented",
    source=(
        'Doc start methods, fork: "Changed in version 3.12: If Python is able to detect that '
        "your process has multiple threads, the os.fork() function that this start method "
        'calls internally will raise a DeprecationWarning." gh-100228'
    ),
    kinds=("Q", "JQ"),
    since=(3, 12),
    methods=("fork",),
    expect="DeprecationWarning mentioning 'multi-threaded' at Process.start()",
)
def fork_warns(cx: CheckContext) -> Outcome:
    """Row 69."""
    q = cx.make()
    before = set(threading.enumerate())
    q.put("starts the feeder")
    if not cx.stdlib and not (set(threading.enumerate()) - before):
        cx.get(q)
        return skipped("put() started no thread (no feeder thread to warn about)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cx.start(_children.noop)
    cx.get(q)
    hits = [
        w
        for w in caught
        if issubclass(w.category, DeprecationWarning) and "multi-threaded" in str(w.message)
    ]
    if not hits:
        return failed(f"no DeprecationWarning; warnings seen: {[str(w.message) for w in caught]}")
    return passed(f"DeprecationWarning: {str(hits[0].message)[:70]}")


@check(
    row=70,
    slug="forked-child-fresh-buffer",
    title="a forked child's copy of a queue has an empty buffer and its own feeder: nothing "
    "is duplicated",
    kind="detail",
    source="Code l.52-53, 65-82: register_after_fork -> _reset(after_fork=True). CPython test_fork",
    kinds=("Q", "JQ"),
    methods=("fork",),
    expect="parent puts 0-9, forked child puts 10-19: each of 0-19 arrives exactly once",
)
def forked_child_fresh(cx: CheckContext) -> Outcome:
    """Row 70."""
    q = cx.make()
    for i in range(10):
        q.put(i)
    p = cx.start(_children.put_and_exit, q, list(range(10, 20)), "return")
    got = [cx.get(q) for _ in range(20)]
    p.join(cx.deadline)
    try:
        extra: Any = q.get(timeout=0.05)
    except Exception:
        extra = None
    in_order = got == list(range(20))
    cx.figure(**{"in order": str(in_order)})
    if sorted(got) != list(range(20)) or extra is not None:
        return failed(f"got {got} then {extra!r}")
    return passed("each item exactly once" + (", in order" if in_order else ""))


@check(
    row=71,
    slug="capacity-counts-items",
    title="Queue(n) holds n items whatever their size; maxsize 0 and negative mean no limit",
    kind="documented",
    source=(
        'Doc Queue: "Returns a process shared queue ... maxsize"; queue.Queue: "maxsize is an '
        "integer that sets the upperbound limit on the number of items that can be placed in "
        'the queue ... If maxsize is less than or equal to zero, the queue size is infinite."'
    ),
    kinds=("Q", "JQ", "MQ"),
    expect="Queue(3): three 4 KiB put_nowait() succeed, the fourth raises Full; maxsize 0 and "
    "-1 (or the provider's unbounded values): 200 put_nowait() succeed",
)
def capacity_counts_items(cx: CheckContext) -> Outcome:
    """Row 71 (documented part), through the provider."""
    item = b"x" * 4096
    q = cx.make(3)
    cx.require(q, "put_nowait")
    for i in range(3):
        try:
            q.put_nowait(item)
        except Exception as exc:
            return failed(
                f"put_nowait(4 KiB item) number {i + 1} on a Queue(maxsize=3) holding {i} "
                f"items raised {exc_text(exc)}"
            )
    try:
        q.put_nowait(item)
    except queue.Full:
        pass
    except Exception as exc:
        return failed(f"the 4th put_nowait() on a full Queue(maxsize=3) raised {exc_text(exc)}")
    else:
        return failed("the 4th put_nowait(4 KiB item) on a Queue(maxsize=3) holding 3 succeeded")
    unbounded = cx.provider.unbounded if cx.provider is not None else (0, -1)
    for size in unbounded:
        try:
            big = cx.make(size)
        except Exception as exc:
            return failed(f"making a queue with maxsize={size} (no limit) raised {exc_text(exc)}")
        for i in range(200):
            try:
                big.put_nowait(i)
            except Exception as exc:
                return failed(
                    f"put_nowait({i}) on a queue with maxsize={size} (no limit) holding {i} "
                    f"items raised {exc_text(exc)}"
                )
    sizes = ", ".join(map(str, unbounded))
    return passed(
        f"Queue(3) took three 4 KiB items, then Full; maxsize {sizes}: 200 items, no Full"
    )


@check(
    row=71,
    slug="capacity-sem-value-max",
    title="maxsize <= 0 means SEM_VALUE_MAX; a larger maxsize is refused",
    kind="detail",
    source="Code l.36-38: from .synchronize import SEM_VALUE_MAX as maxsize; gh-119534 (macOS)",
    kinds=("Q", "JQ"),
    expect="Linux: q._maxsize == 2147483647, Queue(2**31) raises OverflowError",
)
def capacity(cx: CheckContext) -> Outcome:
    """Row 71."""
    from multiprocessing.synchronize import SEM_VALUE_MAX  # type: ignore[attr-defined]

    q = cx.make()
    cx.private(q, "_maxsize")
    cx.figure(SEM_VALUE_MAX=SEM_VALUE_MAX)
    if q._maxsize != SEM_VALUE_MAX:
        return failed(f"_maxsize is {q._maxsize}, SEM_VALUE_MAX is {SEM_VALUE_MAX}")
    try:
        cx.make(SEM_VALUE_MAX + 1)
    except (OverflowError, OSError, ValueError) as exc:
        return passed(f"_maxsize {SEM_VALUE_MAX}; maxsize {SEM_VALUE_MAX + 1}: {exc_text(exc)}")
    return failed(f"a queue with maxsize {SEM_VALUE_MAX + 1} was created")


unobservable(
    row=72,
    slug="needs-shared-semaphores",
    title="without a working sem_open the queues raise ImportError; unavailable on Android, "
    "iOS, WASI",
    kind="documented",
    source='Doc Queue note: "... attempts to instantiate a Queue will result in an ImportError. '
    'See bpo-3770"',
    kinds=("Q", "JQ", "SQ"),
    expect="ImportError where sem_open is missing",
    reason="observable only on a platform without shared semaphores; here every queue "
    "kind instantiates (the other rows use them)",
)
