"""The faulted path of a queue operation: which fault terms fire on a call, and
what their actions (:mod:`.actions`) do around the real call.

:class:`~.fqueue.FaultQueue` routes an operation here when its plan has a fault for
it (loaded then: a queue with no fault never compiles this module).  Standard
library only.
"""

from __future__ import annotations

import queue as _queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import state as _st
from .actions import PUT_OPS, REGISTRY
from .itemfmt import default_fields
from .layout import OUT_OK, OUT_RAISED

#: the operations that take an item: puts, and a connection's sends (instrumentation)
_ITEM_OPS = PUT_OPS | {"send", "send_bytes"}

if TYPE_CHECKING:
    from .model import Fault

__all__ = ["Call", "faulted", "put_unflushed"]

_NOTHING: Any = object()


def faulted(
    op: str,
    code: int,
    raw: Callable[..., Any],
    faults: tuple[tuple[int, int, Fault], ...],
    name: str,
    slots: int,
    queue: Any,
    state: Callable[[], _st.ProcessState],
    fmt: Callable[[Any, Any], tuple[str, str]] = default_fields,
) -> Callable[..., Any]:
    """Operation ``op`` (op code ``code``; ``raw``: the queue's own) of queue ``name``
    (``slots`` fault terms in its plan; ``queue``: the queue wrapped) with the faults
    ``faults`` (plan index, first counter slot, fault); ``state`` gives the process's
    runtime state; ``fmt(item, recorder)`` the (shown, key) of an item put or got."""

    def faulty(*args: Any, **kwargs: Any) -> Any:
        return _faulty(op, code, raw, faults, args, kwargs, name, slots, queue, state, fmt)

    return faulty


def _block_timeout(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """The ``block`` and ``timeout`` arguments of a put/get call."""
    if op.endswith("_nowait"):
        return False, None
    i = 1 if op == "put" else 0
    block = args[i] if len(args) > i else kwargs.get("block", True)
    timeout = args[i + 1] if len(args) > i + 1 else kwargs.get("timeout")
    return bool(block), timeout


def put_unflushed(q: Any, obj: Any, block: bool, timeout: Any) -> Callable[[], None] | None:
    """Put ``obj`` as ``multiprocessing.Queue.put`` does as far as other processes can
    see (the semaphores), but keep the item out of the buffer the feeder thread sends
    from: the state right after ``put()`` returned and before the feeder ran, which a
    kill then makes a real loss, whatever the feeder is doing at that moment.

    Returns the rest of the put (buffer the item, wake the feeder) for a process that
    survives its fault (a signal caught, ignored or stopping it); None, doing
    nothing, if ``q`` is not a ``multiprocessing`` Queue.
    """
    from multiprocessing.queues import JoinableQueue, Queue

    if not isinstance(q, Queue):
        return None
    if q._closed:  # type: ignore[attr-defined]
        raise ValueError(f"Queue {q!r} is closed")
    if not q._sem.acquire(block, timeout):  # type: ignore[attr-defined]
        raise _queue.Full
    if isinstance(q, JoinableQueue):
        with q._cond:  # type: ignore[attr-defined]
            q._unfinished_tasks.release()  # type: ignore[attr-defined]

    def flush() -> None:
        with q._notempty:  # type: ignore[attr-defined]
            if q._thread is None:  # type: ignore[attr-defined]
                q._start_thread()  # type: ignore[attr-defined]
            q._buffer.append(obj)  # type: ignore[attr-defined]
            q._notempty.notify()  # type: ignore[attr-defined]

    return flush


def _select(
    st: _st.ProcessState,
    name: str,
    slots: int,
    op: str,
    faults: tuple[tuple[int, int, Fault], ...],
    item: Any,
    has_item: bool,
    completed: bool = False,
) -> list[tuple[int, Fault]]:
    """The fault terms that fire on this call, with their plan index (``completed``:
    those of ``got`` faults, once the get returned; else the others, before it)."""
    firing: list[tuple[int, Fault]] = []
    for index, base, fault in faults:
        if fault.completed is not completed:
            continue
        if not fault.matches(op, st.process, item, has_item):
            continue
        terms = list(fault.terms())
        if not fault.needs_counter:
            term = terms[0]
            if term.prob is None or st.rng(name, index).random() < term.prob:
                firing.append((index, term))
            continue
        counters = st.counters(name, slots)
        counters.lock()
        try:
            matches, fires0 = counters.get(base)
            matches += 1
            counters.set(base, matches, fires0)
            if fault.nth is not None and not fault.nth_contains(matches):
                continue
            for k, term in enumerate(terms):
                m, fires = counters.get(base + k)
                if k == 0:
                    m = matches
                if term.times is not None and fires >= term.times:
                    continue  # exhausted: the chain moves on to the next term
                if term.prob is None or st.rng(name, index).random() < term.prob:
                    counters.set(base + k, m, fires + 1)
                    firing.append((index, term))
                break
        finally:
            counters.unlock()
    return firing


def _faulty(
    op: str,
    code: int,
    raw: Callable[..., Any],
    faults: tuple[tuple[int, int, Fault], ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    slots: int,
    queue: Any,
    state: Callable[[], _st.ProcessState],
    fmt: Callable[[Any, Any], tuple[str, str]] = default_fields,
) -> Any:
    st = state()
    rec = st.recorder
    has_item = op in _ITEM_OPS
    item = args[0] if has_item and args else kwargs.get("obj")
    firing = _select(st, name, slots, op, faults, item, has_item)
    seq = rec.begin(name, code, *fmt(item, rec)) if has_item else rec.begin(name, code)
    call = Call(st, name, op, args, kwargs, has_item, queue)
    after: list[tuple[int, Fault]] = []
    flush: Callable[[], None] | None = None
    try:
        for index, term in firing:
            action = REGISTRY[term.action]
            if action.whole_process and st.is_controller:
                continue  # never in the test process itself
            if action.when is not None and term.args[action.when] == "after":
                after.append((index, term))
                continue
            action.fire(call, index, term)
        dying = any(REGISTRY[t.action].ends_process for _, t in after)
        if call.result is _NOTHING:
            if call.drop_get:
                raw(*args, **kwargs)
            if dying and has_item and call.calls == 1:
                # a put right before the process dies: the item stays where the
                # feeder thread cannot reach it, so the kill loses it for sure
                flush = put_unflushed(queue, item, *call.block_timeout())
            if flush is not None:
                call.result = None
            else:
                for _ in range(call.calls):
                    call.result = raw(*args, **kwargs)
            if call.calls == 0:
                call.result = None
    except BaseException as e:
        rec.end(seq, name, code, OUT_RAISED, call.fired, "", type(e).__name__)
        for index, term in after:
            REGISTRY[term.action].fire(call, index, term)
        raise
    result = call.result
    try:
        if has_item:
            rec.end(seq, name, code, OUT_OK, call.fired)
        else:
            rec.end(seq, name, code, OUT_OK, call.fired, *fmt(result, rec))
        if any(f.completed for _, _, f in faults):
            after.extend(_select(st, name, slots, op, faults, None, False, completed=True))
        for index, term in after:
            REGISTRY[term.action].fire(call, index, term)
    finally:
        if flush is not None:  # still alive (a signal caught, ignored or stopping it)
            flush()
    return result


class Call:
    """One faulted queue operation in progress: what the fault actions read and steer
    (an action's ``fire`` gets it; see :mod:`.actions`)."""

    __slots__ = (
        "args",
        "calls",
        "drop_get",
        "fired",
        "has_item",
        "kwargs",
        "name",
        "op",
        "queue",
        "rec",
        "result",
        "st",
    )

    def __init__(
        self,
        st: _st.ProcessState,
        name: str,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        has_item: bool,
        queue: Any = None,
    ) -> None:
        #: the process's runtime state, and its recorder
        self.st = st
        self.rec = st.recorder
        #: the queue's name, the operation, its arguments
        self.name = name
        self.op = op
        self.args = args
        self.kwargs = kwargs
        #: whether the operation puts an item (``args[0]``)
        self.has_item = has_item
        #: the object the operation acts on (the queue, or an instrumented connection)
        self.queue = queue
        #: the plan index of the last fault noted (-1: none)
        self.fired = -1
        #: what the operation returns instead of calling the queue (_NOTHING: call it)
        self.result: Any = _NOTHING
        #: how often the queue is called (0: a dropped put, 2: a duplicated one)
        self.calls = 1
        #: call the queue, then discard the item got
        self.drop_get = False

    def note(self, index: int, term: Fault, detail: str) -> None:
        """Record that fault term ``term`` (plan index ``index``) fired: ``detail``."""
        self.fired = index
        self.rec.mark("fault", self.name, f"{self.op}: {detail} [{term}]", index)

    def block_timeout(self) -> tuple[bool, Any]:
        """The ``block`` and ``timeout`` arguments of this put or get."""
        return _block_timeout(self.op, self.args, self.kwargs)
