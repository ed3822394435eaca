"""FaultQueue: the single interception point of every queue operation.

A :class:`FaultQueue` wraps any object with the queue API (multiprocessing
``Queue``, ``JoinableQueue``, ``SimpleQueue``, a Manager queue proxy, a
third-party queue).  It has exactly the operations the wrapped queue has; each
one records a BEGIN and an END event in the calling process's history, and, if
the queue's fault plan says so, delays, fails, drops, duplicates, gates, pauses,
kills or exits around the real call.  With no fault firing it behaves like the
queue it wraps: same methods, same exceptions, same blocking.

It pickles as the wrapped queue does (a ``multiprocessing.Queue`` only while a
process is being started), so it can be passed to children under every start
method.
"""

from __future__ import annotations

import queue as _queue
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import events as _events
from . import state as _st
from .events import OP_CODES, OUT_OK, OUT_RAISED, item_key, short_repr

if TYPE_CHECKING:  # a queue with no faults never loads the fault module
    from .faults import Fault

__all__ = ["Call", "FaultQueue"]

_QUEUE_OPS = (
    "put",
    "put_nowait",
    "get",
    "get_nowait",
    "qsize",
    "empty",
    "full",
    "close",
    "join_thread",
    "cancel_join_thread",
    "task_done",
    "join",
)
#: the operations that take an item (``faults.PUT_OPS``)
PUT_OPS = frozenset({"put", "put_nowait"})
_NOTHING: Any = object()


def _plan_json(plan: tuple[Fault, ...]) -> str:
    """The plan as a JSON list of fault specs (the history's ``plan`` mark)."""
    if not plan:
        return "[]"
    import json

    return json.dumps([str(f) for f in plan])


def _dressed(fn: Any, op: str, raw: Callable[..., Any], queue: str = "") -> Callable[..., Any]:
    """``fn``, standing in for ``raw`` (queue operation ``op``): its name and doc, and
    ``__wrapped__`` so that ``inspect.signature(q.put)`` shows the queue's own (the C
    operation has its own ``__wrapped__``); ``queue.op`` as its qualified name, which
    its repr shows (``<queue operation q1.get>``, in assertion messages)."""
    fn.__name__ = op
    if queue:
        fn.__qualname__ = f"{queue}.{op}"
    fn.__doc__ = getattr(raw, "__doc__", None)
    if not hasattr(fn, "__wrapped__"):
        fn.__wrapped__ = raw
    return fn  # type: ignore[no-any-return]


def _block_timeout(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """The ``block`` and ``timeout`` arguments of a put/get call."""
    if op.endswith("_nowait"):
        return False, None
    i = 1 if op == "put" else 0
    block = args[i] if len(args) > i else kwargs.get("block", True)
    timeout = args[i + 1] if len(args) > i + 1 else kwargs.get("timeout")
    return bool(block), timeout


def _put_unflushed(q: Any, obj: Any, block: bool, timeout: Any) -> Callable[[], None] | None:
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


class FaultQueue:
    """A fault-injecting, recording wrapper around a queue (see module docstring)."""

    def __init__(
        self,
        queue: Any,
        plan: Iterable[Fault] = (),
        name: str = "queue",
        run: _st.RunInfo | None = None,
    ) -> None:
        if run is None:
            raise TypeError("FaultQueue needs a RunInfo; make it with mpfault.queue() or wrap()")
        self._q = queue
        self._plan: tuple[Fault, ...] = tuple(plan)
        self._name = name
        self._run = run
        self._gen = -1
        self._st: _st.ProcessState | None = None
        by_op: dict[str, list[tuple[int, int, Fault]]] = {}
        base = 0
        for i, f in enumerate(self._plan):
            for op in f.ops():
                by_op.setdefault(op, []).append((i, base, f))
            base += len(list(f.terms()))
        self._slots = base
        self._by_op = {op: tuple(v) for op, v in by_op.items()}
        for op in _QUEUE_OPS:
            if hasattr(queue, op):
                setattr(self, op, self._make(op))

    # -- pickling ---------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        return (FaultQueue, (self._q, self._plan, self._name, self._run))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_q", "_plan", "_name", "_run"):
            raise AttributeError(name)
        return getattr(self._q, name)

    def __repr__(self) -> str:
        return f"<FaultQueue {self._name!r} faults={len(self._plan)} around {self._q!r}>"

    @property
    def name(self) -> str:
        """The queue's name in the history and in fault reports."""
        return self._name

    @property
    def plan(self) -> tuple[Fault, ...]:
        """The faults this queue injects."""
        return self._plan

    @property
    def wrapped(self) -> Any:
        """The queue being wrapped."""
        return self._q

    # -- the hot path -------------------------------------------------------------------
    def _state(self) -> _st.ProcessState:
        st = self._st
        if st is None or self._gen != _st.fork_generation:
            st = _st.get_state(self._run)
            self._st = st
            self._gen = _st.fork_generation
            st.recorder.mark("plan", self._name, _plan_json(self._plan))
        return st

    def _make(self, op: str) -> Callable[..., Any]:
        raw = getattr(self._q, op)
        code = OP_CODES[op]
        name = self._name
        faults = self._by_op.get(op, ())
        is_put = op in PUT_OPS
        state = self._state

        if faults:

            def faulty(*args: Any, **kwargs: Any) -> Any:
                return self._faulty(op, code, raw, faults, args, kwargs)

            return _dressed(faulty, op, raw, name)

        # No fault for this operation: the fast path.  The recorder of this
        # process builds the wrapper (records inline, the queue's name encoded
        # once) and it stands in for the operation on this instance; it is made on
        # the first call (the state, and the history file, are created lazily), and
        # made again in a forked child (another process: another recorder), where
        # a wrapper of the parent's hands its calls on to the child's.
        holder = _st
        made: list[Any] = [None, None]  # [generation, wrapper]

        def current() -> Callable[..., Any]:
            gen = holder.fork_generation
            fn = made[1]
            if fn is not None and made[0] == gen:
                return fn  # type: ignore[no-any-return]
            st = state()
            fn = st.recorder.wrap(name, code, raw, is_put, holder, gen, current)
            fn = _dressed(fn, op, raw, name)
            made[:] = [gen, fn]
            self.__dict__[op] = fn
            return fn

        fastrec = _events._fastrec
        if fastrec is not None:  # the same, in C
            return _dressed(fastrec.Trampoline(current), op, raw, name)

        if is_put:

            def put(obj: Any, *args: Any, **kwargs: Any) -> Any:
                return current()(obj, *args, **kwargs)

            return _dressed(put, op, raw, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return current()(*args, **kwargs)

        return _dressed(call, op, raw, name)

    # -- faults -----------------------------------------------------------------------
    def _select(
        self,
        st: _st.ProcessState,
        op: str,
        faults: tuple[tuple[int, int, Fault], ...],
        item: Any,
        has_item: bool,
    ) -> list[tuple[int, Fault]]:
        """The fault terms that fire on this call, with their plan index."""
        firing: list[tuple[int, Fault]] = []
        for index, base, fault in faults:
            if not fault.matches(op, st.process, item, has_item):
                continue
            terms = list(fault.terms())
            if not fault.needs_counter:
                term = terms[0]
                if term.prob is None or st.rng(self._name, index).random() < term.prob:
                    firing.append((index, term))
                continue
            counters = st.counters(self._name, self._slots)
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
                    if term.prob is None or st.rng(self._name, index).random() < term.prob:
                        counters.set(base + k, m, fires + 1)
                        firing.append((index, term))
                    break
            finally:
                counters.unlock()
        return firing

    def _faulty(
        self,
        op: str,
        code: int,
        raw: Callable[..., Any],
        faults: tuple[tuple[int, int, Fault], ...],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        from .actions import REGISTRY

        st = self._state()
        rec = st.recorder
        name = self._name
        has_item = op in PUT_OPS
        item = args[0] if has_item and args else kwargs.get("obj")
        firing = self._select(st, op, faults, item, has_item)
        seq = (
            rec.begin(name, code, short_repr(item), item_key(item))
            if has_item
            else rec.begin(name, code)
        )
        call = Call(st, name, op, args, kwargs, has_item)
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
                    flush = _put_unflushed(self._q, item, *call.block_timeout())
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
                rec.end(seq, name, code, OUT_OK, call.fired, short_repr(result), item_key(result))
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
