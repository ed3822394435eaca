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

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import events as _events
from . import state as _st
from .events import OP_CODES

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


class FaultQueue:
    """A fault-injecting, recording wrapper around a queue (see module docstring).

    ``key(item) -> str`` and ``show(item) -> str``, if given, replace the default
    identity key and shown repr of the items put and got (see :mod:`.itemfmt`); the
    queue then records those operations in Python, not through the C fast path.
    """

    def __init__(
        self,
        queue: Any,
        plan: Iterable[Fault] = (),
        name: str = "queue",
        run: _st.RunInfo | None = None,
        key: Callable[[Any], str] | None = None,
        show: Callable[[Any], str] | None = None,
    ) -> None:
        if run is None:
            raise TypeError("FaultQueue needs a RunInfo; make it with mpfault.queue() or wrap()")
        self._q = queue
        self._plan: tuple[Fault, ...] = tuple(plan)
        self._name = name
        self._run = run
        self._gen = -1
        self._st: _st.ProcessState | None = None
        #: the item formatters (``key=``, ``show=``; see :mod:`.itemfmt`), or None
        self._key = key
        self._show = show
        self._formats: Any = None
        if key is not None or show is not None:
            from .itemfmt import Formats

            self._formats = Formats(key, show, name)
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
        return (FaultQueue, (self._q, self._plan, self._name, self._run, self._key, self._show))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_q", "_plan", "_name", "_run", "_formats"):
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
        is_put = op in _ITEM_OPS
        state = self._state
        fmt = self._formats
        if fmt is not None and op not in _formatted_ops():
            fmt = None  # qsize(), empty()...: not an item

        if faults:
            from .faulty import faulted  # only where a fault targets the operation
            from .itemfmt import default_fields

            return _dressed(
                faulted(
                    op,
                    code,
                    raw,
                    faults,
                    self._name,
                    self._slots,
                    self._target(),
                    self._state,
                    fmt or default_fields,
                ),
                op,
                raw,
                name,
            )

        if fmt is not None:  # the items formatted by the queue's own key/show: in Python
            from .itemfmt import recorded

            return _dressed(recorded(op, code, raw, name, is_put, state, fmt), op, raw, name)

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


def _formatted_ops() -> frozenset[str]:
    from .itemfmt import FORMATTED_OPS

    return FORMATTED_OPS


FaultQueue.__module__ = "mpfault"  # its public name (pickles as mpfault.FaultQueue)
