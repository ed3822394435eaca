"""Rows 36-41: serialization failures and large objects."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import queues as mpqueues
from multiprocessing.context import BaseContext
from typing import Any

from . import _children
from .checks_lifecycle import exit_group
from .context import CheckContext, exc_text
from .model import Mismatch, Outcome, Unsupported, failed, passed
from .registry import check


class _Capture:
    """Mixin: keep the feeder's errors instead of printing them (CPython's SafeQueue)."""

    def _capture_init(self) -> None:
        self.feeder_errors: list[BaseException] = []
        self.feeder_error_seen = threading.Event()

    def _on_queue_feeder_error(self, e: BaseException, obj: Any) -> None:
        self.feeder_errors.append(e)
        self.feeder_error_seen.set()


class CapturingQueue(_Capture, mpqueues.Queue):  # type: ignore[type-arg]
    """A ``multiprocessing.Queue`` that records feeder errors (bpo-30006 hook)."""

    def __init__(self, maxsize: int = 0, *, ctx: BaseContext) -> None:
        super().__init__(maxsize, ctx=ctx)
        self._capture_init()


class CapturingJoinableQueue(_Capture, mpqueues.JoinableQueue):  # type: ignore[type-arg]
    """A ``multiprocessing.JoinableQueue`` that records feeder errors."""

    def __init__(self, maxsize: int = 0, *, ctx: BaseContext) -> None:
        super().__init__(maxsize, ctx=ctx)
        self._capture_init()


def capturing(cx: CheckContext) -> Any:
    """A fresh Q or JQ (as the check's kind) whose feeder errors are recorded.

    For CPython's queues, a subclass with CPython's feeder-error hook (bpo-30006); for
    any other queue, the provider's queue (its errors are not captured: see
    :func:`wait_feeder_error`).
    """
    if not cx.stdlib:
        return cx.make()
    cls = CapturingJoinableQueue if cx.kind == "JQ" else CapturingQueue
    return cx.track(cls(0, ctx=cx.mp))


def wait_feeder_error(cx: CheckContext, q: Any) -> BaseException:
    """The first error q's feeder reported; :class:`Mismatch` if none comes in time.

    Not applicable to a queue without CPython's feeder-error hook.
    """
    if not hasattr(q, "feeder_error_seen"):
        raise Unsupported("the queue has no feeder-error hook (CPython's _on_queue_feeder_error)")
    if not q.feeder_error_seen.wait(cx.deadline):
        raise Mismatch(f"the feeder reported no error within {cx.deadline:g} s")
    return q.feeder_errors[0]  # type: ignore[no-any-return]


@contextlib.contextmanager
def stderr_kept() -> Iterator[io.StringIO]:
    """Keep what Python code prints to ``sys.stderr`` inside the block (a feeder's
    traceback), as evidence rather than noise."""
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        yield buf


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


@dataclass
class AfterUnpicklable:
    """What one put(Unpicklable()) followed by two good puts did (shared by row 36's checks)."""

    raised: str | None
    got: list[Any]
    printed: str


def _after_unpicklable(cx: CheckContext) -> AfterUnpicklable:
    q = capturing(cx) if cx.kind in ("Q", "JQ") else cx.make()
    raised = None
    with stderr_kept() as err:
        try:
            q.put(_children.Unpicklable())
        except Exception as exc:
            raised = exc_text(exc)
        q.put("after-1")
        q.put("after-2")
        got = []
        for _ in range(2):
            try:
                got.append(cx.get(q))
            except queue.Empty:
                break
    return AfterUnpicklable(raised, got, _last_line(err.getvalue()))


@check(
    row=36,
    slug="queue-usable-after-unpicklable-put",
    title="after a put() of an unpicklable object (raising or not), the queue keeps "
    "delivering: later items arrive",
    kind="documented",
    source=(
        'Doc "Pipes and Queues" note 2: "objects enqueued by the same process will always be '
        'in the expected order with respect to each other"; bpo-30414 (the feeder keeps '
        "running after a pickling error, fixed 3.7)"
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    expect="put(Unpicklable()) then put('after-1'), put('after-2'): both arrive",
)
def usable_after_unpicklable(cx: CheckContext) -> Outcome:
    """Row 36 (documented part), through the provider's queue."""
    r = cx.shared("after-unpicklable", lambda: _after_unpicklable(cx))
    first = f"put(Unpicklable()) raised {r.raised}" if r.raised else "put(Unpicklable()) returned"
    cx.figure(put=first, stderr=r.printed or "nothing")
    if sorted(map(str, r.got)) != ["after-1", "after-2"]:  # order is row 20's business
        tail = f" and then nothing within {cx.deadline:g} s" if len(r.got) < 2 else ""
        return failed(
            f"{first}; then put('after-1'), put('after-2'): get() gave {r.got!r}{tail}"
            + (f" (stderr: {r.printed})" if r.printed else "")
        )
    return passed(f"{first}; the next two items arrived")


@check(
    row=36,
    slug="unpicklable-put-does-not-raise",
    title="put() of an unpicklable object returns; the feeder reports the error, drops the "
    "item, releases its slot and keeps running",
    kind="detail",
    source=(
        "Code _feed l.273-290 (_on_queue_feeder_error, bpo-30414, bpo-33078, bpo-30006). "
        "Undocumented; gh-84376 open"
    ),
    kinds=("Q", "JQ"),
    expect="put(Unpicklable()) returns; feeder error TypeError; next put/get work; qsize() 0",
)
def unpicklable_put(cx: CheckContext) -> Outcome:
    """Row 36."""
    q = capturing(cx)
    if not cx.stdlib:
        r = cx.shared("after-unpicklable", lambda: _after_unpicklable(cx))
        if r.raised:
            return failed(f"put(Unpicklable()) raised {r.raised} in the caller")
        if not r.got:
            return failed("put(Unpicklable()) returned; the next item never arrived")
        return passed(
            "put(Unpicklable()) returned; "
            + (f"the error was printed: {r.printed}" if r.printed else "nothing was printed")
            + "; the next item arrived"
        )
    q.put(_children.Unpicklable())  # returns: pickling happens in the feeder thread
    err = wait_feeder_error(cx, q)
    q.put("after")
    got = q.get(timeout=cx.deadline)
    size = q.qsize()
    cx.figure(error=f"{type(err).__name__}: {err}")
    if not isinstance(err, (TypeError, pickle.PicklingError, AttributeError)):
        return failed(f"the feeder reported {type(err).__name__}: {err}")
    if got != "after":
        return failed(f"the next get() returned {got!r}")
    if size != 0:
        return failed(f"qsize() is {size} after the only good item was got")
    return passed(f"put() returned; the feeder reported {type(err).__name__}; queue usable")


@check(
    row=37,
    slug="unpicklable-at-exit-is-silent",
    parallel=True,
    title="an unpicklable item put just before the process exits is dropped silently",
    kind="detail",
    source=(
        "Code _feed: if is_exiting(): info('error in queue thread: %s', e); return. "
        "gh-79423 (bpo-35242, open)"
    ),
    kinds=("Q", "JQ"),
    not_platforms=("win32",),
    expect="child puts 20 items then Unpicklable() and returns: exit 0, 20 items, no stderr",
)
def unpicklable_at_exit(cx: CheckContext) -> Outcome:
    """Row 37 (its child runs in the exit group of rows 25-31)."""
    from .checks_lifecycle import _group_part

    g = exit_group(cx)
    r = _group_part(cx, g, g.bad_last)
    noisy = "Traceback" in r.note or "pickle" in r.note
    cx.figure(**{"stderr bytes": len(r.note)})
    if r.exitcode != 0:
        last = _last_line(r.note)
        return failed(
            f"the child (20 items, then put(Unpicklable()), then return) exited with code "
            f"{r.exitcode}" + (f"; its stderr ended: {last}" if last else "")
        )
    if r.received != 20:
        return failed(f"{r.received} items arrived instead of the 20 good ones")
    if noisy:
        return failed(f"the error was printed: {r.note.strip().splitlines()[-1]!r}")
    return passed("exit code 0, the 20 good items arrived, nothing on stderr")


@check(
    row=38,
    slug="unpicklable-raises-in-caller",
    title="SQ and MQ pickle in put(), so an unpicklable object raises in the caller",
    kind="detail",
    source="Code SimpleQueue.put: _ForkingPickler.dumps(obj) first; MQ: conn.send in _callmethod",
    kinds=("SQ", "MQ"),
    expect="put(Unpicklable()) raises TypeError/PicklingError; the queue stays usable",
)
def unpicklable_raises_in_caller(cx: CheckContext) -> Outcome:
    """Row 38."""
    q = cx.make()
    try:
        q.put(_children.Unpicklable())
    except (TypeError, pickle.PicklingError, AttributeError) as exc:
        raised = exc_text(exc)
    else:
        return failed("put(Unpicklable()) returned")
    q.put("after")
    got = cx.get(q)
    if got != "after":
        return failed(f"the next get() returned {got!r}")
    return passed(f"put() raised {raised}; the queue stayed usable")


@check(
    row=39,
    slug="unpickling-failure-in-consumer",
    title="an item that fails to unpickle raises in get(); the item is gone and the queue "
    "stays usable",
    kind="detail",
    source="Code get: self._sem.release() happens before _ForkingPickler.loads(res) (undocumented)",
    kinds=("Q", "JQ", "SQ"),
    expect="first get() raises the ValueError from unpickling; the next get() returns 'next'",
)
def unpickling_failure(cx: CheckContext) -> Outcome:
    """Row 39."""
    q = cx.make()
    q.put(_children.FailsToUnpickle())
    q.put("next")
    try:
        got = cx.get(q)
    except ValueError as exc:
        raised = str(exc)
    else:
        return failed(f"get() returned {got!r} instead of raising")
    got = cx.get(q)
    if got != "next":
        return failed(f"the next get() returned {got!r}")
    return passed(f"get() raised ValueError({raised!r}); the next item came through")


@check(
    row=40,
    slug="queue-in-queue-fails",
    title="a queue cannot be pickled into another queue: RuntimeError 'shared between "
    "processes through inheritance'",
    kind="detail",
    source=(
        'Code context.assert_spawning in __getstate__. Doc Programming guidelines: "Better '
        'to inherit than pickle/unpickle"'
    ),
    kinds=("Q", "JQ", "SQ"),
    expect="pickle.dumps(q) raises RuntimeError; Q/JQ: the feeder reports it; SQ: put raises",
)
def queue_in_queue(cx: CheckContext) -> Outcome:
    """Row 40."""
    inner = cx.make()
    try:
        pickle.dumps(inner)
    except RuntimeError as exc:
        if "inheritance" not in str(exc):
            return failed(f"pickle.dumps(q) raised {exc_text(exc)}")
    except Exception as exc:
        return failed(f"pickle.dumps(q) raised {exc_text(exc)}, not RuntimeError")
    else:
        return failed("pickle.dumps(q) succeeded")
    if not cx.stdlib:
        return passed("pickle.dumps(q) raised RuntimeError (shared through inheritance)")
    if cx.kind == "SQ":
        outer = cx.make()
        try:
            outer.put(inner)
        except RuntimeError:
            return passed("pickle.dumps and SimpleQueue.put raised RuntimeError (inheritance)")
        return failed("SimpleQueue.put(queue) did not raise")
    cap = capturing(cx)
    cap.put(inner)
    err = wait_feeder_error(cx, cap)
    if not isinstance(err, RuntimeError):
        return failed(f"the feeder reported {type(err).__name__}: {err}")
    return passed("pickle.dumps raised, and the feeder reported RuntimeError (inheritance)")


@check(
    row=41,
    slug="large-item-round-trip",
    title="large items pass through (no size limit below the OS/pickle limits)",
    kind="detail",
    source=(
        'Doc Connection.send: "Very large pickles (approximately 32 MiB+, though it depends '
        'on the OS) may raise a ValueError exception." bpo-17560 (>2 GiB on POSIX)'
    ),
    kinds=("Q", "JQ", "SQ", "MQ"),
    expect="a 4 MiB bytes item comes back equal",
    headline="elapsed",
)
def large_item(cx: CheckContext) -> Outcome:
    """Row 41."""
    q = cx.make()
    payload = os.urandom(1024) * 4096
    t0 = time.perf_counter()
    putter = cx.thread(q.put, payload) if cx.kind == "SQ" else None
    if putter is None:
        q.put(payload)
    got = cx.get(q)
    if putter is not None and not putter.join(cx.deadline):
        return failed("SimpleQueue.put() did not return after the item was read")
    cx.figure(elapsed=time.perf_counter() - t0)
    if got != payload:
        return failed("the 4 MiB item came back different")
    return passed("4 MiB round trip")
