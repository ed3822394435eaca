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

import os
import queue as _queue
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import events as _events
from . import state as _st
from .events import OP_CODES, OUT_OK, OUT_RAISED, item_key, short_repr

if TYPE_CHECKING:  # a queue with no faults never loads the fault module
    from .faults import Fault

__all__ = ["FaultQueue"]

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
#: ... and a connection's sends (instrumentation)
_ITEM_OPS = PUT_OPS | {"send", "send_bytes"}
_NOTHING: Any = object()
_PROCESS_ACTIONS = frozenset({"kill", "exit", "pause", "gate"})


def _plan_json(plan: tuple[Fault, ...]) -> str:
    """The plan as a JSON list of fault specs (the history's ``plan`` mark)."""
    if not plan:
        return "[]"
    import json

    return json.dumps([str(f) for f in plan])


def _dressed(fn: Any, op: str, raw: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, standing in for ``raw`` (queue operation ``op``): its name and doc, and
    ``__wrapped__`` so that ``inspect.signature(q.put)`` shows the queue's own (the C
    operation has its own ``__wrapped__``)."""
    fn.__name__ = op
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

    def _target(self) -> Any:
        """The queue the operations act on (an instrumented queue's shadow says its own)."""
        return self._q

    # -- the hot path -------------------------------------------------------------------
    def _state(self) -> _st.ProcessState:
        st = self._st
        if st is None or self._gen != _st._generation:
            st = _st.get_state(self._run)
            self._st = st
            self._gen = _st._generation
            st.recorder.mark("plan", self._name, _plan_json(self._plan))
        return st

    def _make(self, op: str) -> Callable[..., Any]:
        raw = getattr(self._q, op)
        code = OP_CODES[op]
        name = self._name
        faults = self._by_op.get(op, ())
        is_put = op in _ITEM_OPS
        state = self._state

        if faults:

            def faulty(*args: Any, **kwargs: Any) -> Any:
                return self._faulty(op, code, raw, faults, args, kwargs)

            return _dressed(faulty, op, raw)

        # No fault for this operation: the fast path.  The recorder of this
        # process builds the wrapper (records inline, the queue's name encoded
        # once) and it stands in for the operation on this instance; it is made on
        # the first call (the state, and the history file, are created lazily), and
        # made again in a forked child (another process: another recorder), where
        # a wrapper of the parent's hands its calls on to the child's.
        holder = _st
        made: list[Any] = [None, None]  # [generation, wrapper]

        def current() -> Callable[..., Any]:
            gen = holder._generation
            fn = made[1]
            if fn is not None and made[0] == gen:
                return fn  # type: ignore[no-any-return]
            st = state()
            fn = st.recorder.wrap(name, code, raw, is_put, holder, gen, current)
            fn = _dressed(fn, op, raw)
            fn.__qualname__ = "FaultQueue._make.<locals>." + ("put" if is_put else "call")
            made[:] = [gen, fn]
            self.__dict__[op] = fn
            return fn

        fastrec = _events._fastrec
        if fastrec is not None:  # the same, in C
            return _dressed(fastrec.Trampoline(current), op, raw)

        if is_put:

            def put(obj: Any, *args: Any, **kwargs: Any) -> Any:
                return current()(obj, *args, **kwargs)

            return _dressed(put, op, raw)

        def call(*args: Any, **kwargs: Any) -> Any:
            return current()(*args, **kwargs)

        return _dressed(call, op, raw)

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
        st = self._state()
        rec = st.recorder
        name = self._name
        has_item = op in _ITEM_OPS
        item = args[0] if has_item and args else kwargs.get("obj")
        firing = self._select(st, op, faults, item, has_item)
        seq = (
            rec.begin(name, code, short_repr(item), item_key(item))
            if has_item
            else rec.begin(name, code)
        )
        fired = -1
        after: list[tuple[int, Fault]] = []
        flush: Callable[[], None] | None = None
        result: Any = _NOTHING
        calls = 1
        drop_get = False

        def note(index: int, term: Fault, detail: str) -> None:
            nonlocal fired
            fired = index
            rec.mark("fault", name, f"{op}: {detail} [{term}]", index)

        try:
            for index, term in firing:
                action = term.action
                if action in _PROCESS_ACTIONS and st.is_controller:
                    continue  # never in the test process itself
                when = "before"
                if action == "kill":
                    when = term.args[0]
                elif action in ("exit", "gate"):
                    when = term.args[1]
                if when == "after":
                    after.append((index, term))
                    continue
                if action == "delay":
                    seconds, jitter = term.args
                    if jitter:
                        seconds += st.rng(name, index).uniform(0.0, jitter)
                    note(index, term, f"delay {seconds * 1000:.3g} ms")
                    time.sleep(seconds)
                elif action == "pause":
                    note(index, term, f"pause {term.args[0] * 1000:.3g} ms")
                    rec.mark("pause", name, str(term.args[0]), index)
                    st.pause_self(term.args[0])
                    rec.mark("resume", name, "", index)
                elif action == "gate":
                    self._gate(st, index, term)
                elif action in ("kill", "exit"):
                    self._die(st, index, term, op)
                elif action == "raise":
                    exc = term.make_exception()
                    note(index, term, f"raise {type(exc).__name__}")
                    raise exc
                elif action == "full" or action == "empty":
                    block, timeout = _block_timeout(op, args, kwargs)
                    note(index, term, f"forced {action}")
                    if block and timeout is not None and timeout > 0:
                        time.sleep(timeout)  # "as if" the queue stayed full/empty
                    raise _queue.Full() if action == "full" else _queue.Empty()
                elif action == "return":
                    note(index, term, f"return {term.args[0]!r}")
                    result = term.args[0]
                elif action == "drop":
                    note(index, term, "drop")
                    if has_item:
                        calls = 0
                    else:
                        drop_get = True
                elif action == "duplicate":
                    note(index, term, "duplicate")
                    calls = 2
                # "off": nothing
            dying = any(t.action != "gate" for _, t in after)
            if result is _NOTHING:
                if drop_get:
                    raw(*args, **kwargs)
                if dying and has_item and calls == 1:
                    # a put right before the process dies: the item stays where the
                    # feeder thread cannot reach it, so the kill loses it for sure
                    flush = _put_unflushed(self._target(), item, *_block_timeout(op, args, kwargs))
                if flush is not None:
                    result = None
                else:
                    for _ in range(calls):
                        result = raw(*args, **kwargs)
                if calls == 0:
                    result = None
        except BaseException as e:
            rec.end(seq, name, code, OUT_RAISED, fired, "", type(e).__name__)
            for index, term in after:
                self._after(st, index, term, op)
            raise
        try:
            if has_item:
                rec.end(seq, name, code, OUT_OK, fired)
            else:
                rec.end(seq, name, code, OUT_OK, fired, short_repr(result), item_key(result))
            for index, term in after:
                self._after(st, index, term, op)
        finally:
            if flush is not None:  # still alive (a signal caught, ignored or stopping it)
                flush()
        return result

    def _after(self, st: _st.ProcessState, index: int, term: Fault, op: str) -> None:
        if term.action == "gate":
            self._gate(st, index, term)
        else:
            self._die(st, index, term, op)

    def _gate(self, st: _st.ProcessState, index: int, term: Fault) -> None:
        gate = term.args[0]
        st.recorder.mark("fault", self._name, f"gate {gate} ({term.args[1]}) [{term}]", index)
        st.recorder.mark("gate-wait", self._name, gate, index)
        st.wait_gate(gate)
        st.recorder.mark("gate-pass", self._name, gate, index)

    def _die(self, st: _st.ProcessState, index: int, term: Fault, op: str) -> None:
        rec = st.recorder
        if term.action == "kill":
            when, sig = term.args
            try:
                signame = signal.Signals(sig).name
            except ValueError:
                signame = f"signal {sig}"
            rec.mark("fault", self._name, f"{op}: kill {signame} ({when}) [{term}]", index)
            rec.mark("kill", self._name, signame, index)
            os.kill(os.getpid(), sig)
        else:
            code, when = term.args
            rec.mark("fault", self._name, f"{op}: exit {code} ({when}) [{term}]", index)
            rec.mark("exit", self._name, str(code), index)
            os._exit(code)
