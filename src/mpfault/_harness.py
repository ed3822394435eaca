"""The harness: start children for one test, give them queues, and leave nothing behind.

``Harness`` is what the ``mpfault`` fixture returns, and it works without pytest
as a context manager::

    with mpfault.Harness(start_method="spawn") as h:
        q = h.queue()
        c = h.spawn(producer, q)
        c.result(timeout=10)

The lifecycle lives here (run directory, deadline, queues, gates, teardown); the
parts are by role: :mod:`._spawn` starts a child, :mod:`._child` is one,
:mod:`._coordinator` holds the gates.  It does not import pytest.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from . import _deadline, _rundir, _spawn
from ._child import Child, close_channels, signal_name, stop_children
from ._coordinator import Arrival, Coordinator, Gate, PassiveHub
from ._history import History
from ._rundir import TMPDIR_ENV, check_tmpdir, default_tmpdir
from ._runtime import bootstrap, builders, grammar, procfs
from ._runtime import state as _state
from ._runtime.actions import REGISTRY
from ._runtime.errors import FaultSpecError, Hang, MpfaultError
from ._runtime.fqueue import FaultQueue
from ._runtime.model import Fault

if TYPE_CHECKING:
    import pytest

    from ._config import Settings
    from ._program import Program
    from ._serve import Served

__all__ = [
    "QUEUE_KINDS",
    "TMPDIR_ENV",
    "Arrival",
    "Child",
    "Gate",
    "Harness",
    "check_tmpdir",
    "default_start_methods",
    "default_tmpdir",
]

QUEUE_KINDS = ("Queue", "JoinableQueue", "SimpleQueue", "ManagerQueue", "ManagerJoinableQueue")

_CONTROLLER_NAME = "MainProcess"
#: a ``key=`` or ``show=`` callable: an item -> the text recorded for it
Formatter = Callable[[Any], str]
_FOREVER = 7 * 24 * 3600.0


def default_start_methods() -> list[str]:
    """Every start method this platform offers, the default one first."""
    return list(multiprocessing.get_all_start_methods())


class Harness:
    """Processes, queues and faults for one test; cleans up everything on exit.

    Args:
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (default: the
            platform's default).
        faults: faults applied to every queue the harness makes (objects from
            :mod:`mpfault.faults`, or spec strings).
        seed: the seed that makes probabilistic faults reproducible (default: random).
        deadline: seconds; no wait of the harness lasts longer than this, counted
            from the harness's creation (None: no deadline).
        test_id: a name for the history and the seeds (the pytest node id).
        grace: seconds a child gets to exit after SIGTERM at teardown before SIGKILL.
        tmpdir: the directory the harness makes its run directory in (history logs,
            gates, children's output; removed by :meth:`close`); default:
            :func:`default_tmpdir`.
        instrument: instrument, until :meth:`close`, every queue, pipe and process the
            code under test makes (see :meth:`instrument`).
        key: the identity of the items of every queue the harness makes and every
            instrumented one, to match an item got with the item put: a callable
            ``item -> str`` (every queue), or a dict ``{name glob: callable}`` matched
            against queue names (``q1``, ``Queue@app.py:12``; the first matching glob
            wins, a name none matches keeps the default).  A queue's own ``key=``
            (:meth:`queue`, :meth:`wrap`) comes first.  Default: the item's type and
            repr, without memory addresses.
        show: what reports, :meth:`History.lost`, the timeline and fault messages print
            of those items: a callable ``item -> str`` or a dict, as ``key``.  Default:
            a short repr.  Formatters must pickle (module-level functions, not lambdas),
            and one that raises or returns no ``str`` never breaks the code: the item
            gets the default formatting and the history a ``note`` mark saying so.
    """

    def __init__(
        self,
        start_method: str | None = None,
        *,
        faults: Iterable[Fault | str] = (),
        seed: int | None = None,
        deadline: float | None = 60.0,
        test_id: str = "",
        grace: float = 1.0,
        tmpdir: str | None = None,
        instrument: bool = False,
        key: Formatter | Mapping[str, Formatter] | None = None,
        show: Formatter | Mapping[str, Formatter] | None = None,
    ) -> None:
        method = (
            start_method
            or multiprocessing.get_start_method(allow_none=True)
            or (default_start_methods()[0])
        )
        if method not in multiprocessing.get_all_start_methods():
            raise MpfaultError(
                f"unknown start method {method!r} "
                f"(this platform has: {', '.join(multiprocessing.get_all_start_methods())})"
            )
        self.start_method: str = method
        self.ctx: BaseContext = multiprocessing.get_context(method)
        self.seed: int = random.randrange(2**32) if seed is None else int(seed)
        self.deadline = deadline
        self.test_id = test_id
        self.grace = grace
        __tracebackhide__ = True
        self.faults: tuple[Fault, ...] = _Faults(_as_faults(faults, "Harness(faults=...)"))
        for f in self.faults:  # before anything is made that close() would remove
            self._validate(f, "Harness(faults=...)")
        self._key_rules = _rules(key, "Harness(key=...)")
        self._show_rules = _rules(show, "Harness(show=...)")
        base = default_tmpdir() if tmpdir is None else check_tmpdir(tmpdir, "Harness(tmpdir=...)")
        _sweep_stale(base)
        self.run_dir = tempfile.mkdtemp(prefix="mpf-", dir=base)
        _rundir.write_owner(self.run_dir)
        self.run = _state.RunInfo(self.run_dir, self.seed, os.getpid(), test_id)
        self.children: list[Child] = []
        self.queues: list[FaultQueue] = []
        self.outputs: dict[str, tuple[str, str]] = {}
        self._names: set[str] = set()
        self._counter = itertools.count(1)
        self._qcounter = itertools.count(1)
        self._manager: Any = None
        self._coordinator: Coordinator | None = None
        self._gates: dict[str, Gate] = {}
        self._owned: set[int] = set()  # id() of the queues this harness made
        self._started = time.monotonic()
        self._closed = False
        self._report_lock = threading.Lock()
        self._watchdog: _deadline.Watchdog | None = None
        #: the parsed logs of the run directory (a checker reads only what changed)
        self._events_cache: dict[str, Any] = {}
        os.makedirs(os.path.join(self.run_dir, "out"))
        self._instr: Any = None
        if method == "forkserver":
            _spawn.preload_forkserver(self.ctx)
        if instrument:
            self._start_instrument(())

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        start_method: str | None,
        *,
        seed: int,
        test_id: str = "",
        timeout: float | None = None,
    ) -> Harness:
        """A harness for one test from its resolved settings (what the fixture makes).

        ``seed`` is the test's seed; ``timeout`` the test's own timeout (pytest-timeout),
        if any: the deadline then ends a second (or, under 2 s, half of it) before it, so
        that mpfault's :class:`Hang`, with every child's stack, fires first.
        """
        deadline = settings.deadline
        if timeout is not None:
            # a second before it (half of it, for a timeout under 2 s): what follows the
            # Hang (its report, the teardown) has that long before pytest-timeout fires;
            # on a loaded machine 0.4 s (a fifth of a 2 s timeout) was not enough
            cap = round(max(timeout - 1.0, timeout * 0.5), 3)
            deadline = cap if deadline is None else min(deadline, cap)
        return cls(
            start_method or settings.start_methods[0],
            faults=settings.faults,
            seed=seed,
            deadline=deadline,
            test_id=test_id,
            grace=settings.grace,
            tmpdir=settings.tmpdir,
            instrument=settings.instrument,
            key=settings.key,
            show=settings.show,
        )

    @classmethod
    def from_item(cls, item: pytest.Item, start_method: str | None = None) -> Harness:
        """The harness of a pytest test: its settings (resolved once per test), its seed
        (the run's seed, or the marker's, derived with the node id), its deadline."""
        from ._config import TIMEOUT_START_KEY, for_item
        from ._signals import catch_sigterm

        catch_sigterm(item.config)  # SIGTERM cleans up like SIGINT (once per session)
        settings, seed, timeout = for_item(item)
        harness = cls.from_settings(
            settings, start_method, seed=seed, test_id=item.nodeid, timeout=timeout
        )
        started = item.stash.get(TIMEOUT_START_KEY, None)
        if timeout is not None and started is not None:
            # under pytest-timeout the deadline counts from when its timer started (the
            # test's setup), so that it ends before the timeout whatever setup took
            harness._started = min(harness._started, started)
        return harness

    # -- instrumentation ------------------------------------------------------------------
    def _start_instrument(self, faults: Any, key: Any = None, show: Any = None) -> Any:
        from ._adopt import Instrumentation

        if self._instr is not None and self._instr.on:
            raise MpfaultError("instrument(): this harness is instrumenting already")
        by_name = []
        for glob, specs in dict(faults).items():
            plan = _as_faults(specs, f"instrument(faults=...) for {glob!r}")
            for f in plan:
                self._validate(f, f"instrument(faults=...) for {glob!r}")
            by_name.append((glob, plan))
        formatters = (
            _rules(key, "instrument(key=...)") + self._key_rules,
            _rules(show, "instrument(show=...)") + self._show_rules,
        )
        instr = Instrumentation(self, by_name, formatters)
        try:
            instr.start()
        except BaseException:
            self.close()
            raise
        self._instr = instr
        return instr

    @contextlib.contextmanager
    def instrument(
        self,
        faults: Any = (),
        *,
        key: Formatter | Mapping[str, Formatter] | None = None,
        show: Formatter | Mapping[str, Formatter] | None = None,
    ) -> Any:
        """Instrument, inside the ``with`` block, what the code under test makes.

        In the test process and every process descended from it (fork, spawn and
        forkserver): every ``multiprocessing`` ``Queue``, ``JoinableQueue``,
        ``SimpleQueue`` and subclass made meanwhile, and every connection made by
        ``Pipe()``, records its operations in :attr:`history` and takes the
        harness's faults, under a name that says its class and the line that made it
        (``SimpleQueue@multiprocessing/pool.py:196``); ``faults`` maps a glob on those
        names to more faults (``{"*pool.py*": "get@*PoolWorker-*#2:kill(after)"}``).
        Every process started meanwhile is adopted: in :attr:`children` (``adopted``
        true), in every ``Hang``, stopped at teardown.  The objects stay what they
        are (``isinstance``, private attributes, pickling, iteration); on exit the
        classes are restored and later calls behave as without mpfault.

        ``key`` and ``show`` format the items of the instrumented queues and pipes (the
        identity that matches a get with its put; what reports print): each a callable
        ``item -> str`` for every one, or a dict ``{name glob: callable}`` matched
        against their names (``{"Queue@*app.py:*": message}``): the first matching
        glob wins, and a name none matches takes the harness's ``key``/``show``, else
        the default.  They reach every instrumented process, so they must pickle
        (module-level functions); see :meth:`queue`.
        """
        self._check_open()
        instr = self._start_instrument(faults, key, show)
        try:
            yield instr
        finally:
            instr.stop()

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<Harness {self.start_method} seed={self.seed} children={len(self.children)} "
            f"queues={len(self.queues)}>"
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- deadline -------------------------------------------------------------------------
    def _limit(self, timeout: float | None) -> float:
        if self.deadline is None:
            # "forever", within what select() and socket timeouts accept
            return _FOREVER if timeout is None else max(0.0, min(timeout, _FOREVER))
        left = max(0.0, self.deadline - (time.monotonic() - self._started))
        return left if timeout is None else max(0.0, min(timeout, left))

    def _hang(self, call: str, waited: float, *, stack_timeout: float = 5.0) -> Hang:
        deadline_hit = self.deadline is not None and (
            time.monotonic() - self._started >= self.deadline - 1e-3
        )
        if deadline_hit and self._watchdog is not None:
            self._watchdog.cancel()  # this Hang is the deadline's: no second one
        with self._report_lock:
            return self._make_hang(call, waited, deadline_hit, stack_timeout)

    def _make_hang(
        self, call: str, waited: float, deadline_hit: bool, stack_timeout: float
    ) -> Hang:
        live = [c for c in self.children if c.is_alive()]
        per_child = stack_timeout / max(1, len(live)) if stack_timeout < 5.0 else stack_timeout
        stacks = {f"{c.name} (pid {c.pid})": c.stack(timeout=max(0.5, per_child)) for c in live}
        why = (
            f"the test's deadline of {self.deadline}s ran out"
            if deadline_hit
            else f"it timed out after {waited:.3g}s"
        )
        try:
            hist: History | None = self._read_history()
        except Exception:  # a report must not fail on a damaged log
            hist = None
        parts = []
        for name, text in stacks.items():
            note = hist.lock_note(text) if hist is not None else ""
            parts.append(f"--- {name} ---\n{text}" + (f"\n  note: {note}" if note else ""))
        body = "\n\n".join(parts)
        msg = f"{call}: {why}."
        undrained = self._undrained(hist)
        if undrained:
            msg += "\n\nQueues with items put and never got:\n" + "\n".join(undrained)
        notes = hist.notes() if hist is not None else []
        if notes:  # a queue's key/show that failed: what is shown above is the default
            msg += "\n\nNotes:\n" + "\n".join(f"  {n}" for n in notes)
        last = self._last_operations(hist)
        if last:
            msg += "\n\nWhat each child last did:\n" + "\n".join(last)
        if self._instr is not None:
            fates = self._instr.report()
            if fates:
                msg += "\n\nProcesses the code under test started:\n" + "\n".join(fates)
        msg += f"\n\nStacks of the test's live children:\n{body or '(none)'}"
        programs = self._program_stacks(stack_timeout)
        if programs:
            msg += "\n\nPrograms:\n" + "\n\n".join(
                f"--- {name} ---\n{text}" for name, text in programs.items()
            )
            stacks.update(programs)
        return Hang(msg, call=call, stacks=stacks)

    def _program_stacks(self, stack_timeout: float) -> dict[str, str]:
        """Each program's fate, and its stack while it runs (see :meth:`program`)."""
        if "_serve_state" not in self.__dict__:
            return {}
        from . import _serve

        st = _serve.current(self)
        if st is None:
            return {}
        out = {}
        for p in st.programs:
            text = p.describe()
            if p.is_alive():
                text += "\n" + p.stack(timeout=max(0.5, min(stack_timeout, 2.0)))
            out[f"program {p.name} (pid {p.pid})"] = text
        return out

    def _last_operations(self, hist: History | None) -> list[str]:
        out = []
        for c in self.children:
            if c.process.pid is None:
                continue
            code = c.exitcode
            state = (
                "running"
                if code is None
                else f"killed by {signal_name(-code)}"
                if code < 0
                else f"exited with code {code}"
            )
            what = hist.last_operation(c.pid) if hist is not None else None
            out.append(f"  {c.name} (pid {c.pid}, {state}): {what or 'no queue operation'}")
        return out

    # -- the test process's main thread ---------------------------------------------------
    def watch_main_thread(self) -> bool:
        """Bound every blocking call in the main thread (``q.get()`` in the test itself,
        ``pool.map()``) by the deadline: a little after it, a :class:`Hang` with what
        each child last did and their stacks is raised there.  The plugin does this for
        each test's call (not its setup, nor the reports: only the test's own code);
        :meth:`stop_watching` and :meth:`close` end it.  False when it
        cannot (no deadline, not called from the main thread)."""
        if self.deadline is None or self._watchdog is not None:
            return False
        margin = min(0.5, self.deadline * 0.1)  # the harness's own waits raise first
        ref = weakref.WeakMethod(self._main_thread_hang)

        def make_error() -> BaseException | None:
            method = ref()  # a harness nobody holds any more raises nothing
            return None if method is None else method()

        again_ref = weakref.WeakMethod(self._main_thread_hang_again)

        def make_again() -> BaseException | None:
            method = again_ref()
            return None if method is None else method()

        w = _deadline.Watchdog(make_error, name="mpfault-deadline", again=make_again)
        if w.arm(self._started + self.deadline + margin):
            self._watchdog = w
            return True
        return False

    def _main_thread_hang(self) -> BaseException | None:
        with self._report_lock:
            if self._closed or (self._watchdog is not None and self._watchdog.cancelled):
                return None
            return self._make_hang(
                "a blocking call in the test's main thread",
                self.deadline or 0.0,
                True,
                stack_timeout=3.0,
            )

    def _main_thread_hang_again(self) -> BaseException | None:
        with self._report_lock:
            if self._closed or (self._watchdog is not None and self._watchdog.cancelled):
                return None
            return Hang(
                "the test's main thread blocked again while unwinding from the Hang"
                " above (in a finally block or a context manager's exit: a pool's"
                " terminate(), a join()); ended too",
                call="a blocking call in the test's main thread, again",
                stacks={},
            )

    def stop_watching(self) -> None:
        """Stop bounding the main thread's blocking calls by the deadline (the fixture
        does when the test's call is over; :meth:`close` does)."""
        if self._watchdog is not None:
            self._watchdog.disarm()
            self._watchdog = None

    def __getattr__(self, name: str) -> Any:
        # the fixture is named like the package: offer the package's public names
        # (``mpfault.ChildError``, ``mpfault.faults.drop``) on the harness too
        if not name.startswith("_"):
            import mpfault

            if name in mpfault.__all__:
                return getattr(mpfault, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _undrained(self, hist: History | None = None) -> list[str]:
        if hist is None:
            try:
                hist = self._read_history()
            except Exception:  # a report must not fail on a damaged log
                return []
        out = []
        by_queue: dict[str, list[str]] = {}
        for item in hist.lost(wait=False):
            by_queue.setdefault(item.queue, []).append(f"{item.value} (by {item.process})")
        for q, items in by_queue.items():
            shown = ", ".join(items[:5]) + (
                f", ... {len(items) - 5} more" if len(items) > 5 else ""
            )
            out.append(f"  {q!r}: {len(items)} item(s): {shown}")
        return out

    def stacks(self) -> dict[str, str]:
        """The stack of every live child, by name (see :meth:`Child.stack`)."""
        if self._instr is not None:
            self._instr.sync()
        return {f"{c.name} (pid {c.pid})": c.stack() for c in self.children if c.is_alive()}

    # -- children -----------------------------------------------------------------------
    def spawn(
        self, target: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any
    ) -> Child:
        """Start ``target(*args, **kwargs)`` in a new process of the harness's context.

        ``name`` (default: the target's name and a number, e.g. ``producer-1``) is the
        process name that fault selectors (``who=``) match.  Returns a :class:`Child`.
        """
        self._check_open()
        _spawn.check_target(target, self.start_method)
        n = next(self._counter)
        if name is None:
            base = getattr(target, "__name__", "child")
            name = f"{base}-{n}"
            while name in self._names:
                name = f"{base}-{next(self._counter)}"
        elif name in self._names:
            raise MpfaultError(f"spawn(): a child named {name!r} already exists in this test")
        if name == _CONTROLLER_NAME:
            raise MpfaultError(f"spawn(): {name!r} is the test process's own name")
        self._names.add(name)
        out_path = os.path.join(self.run_dir, "out", f"{n}.out")
        err_path = os.path.join(self.run_dir, "out", f"{n}.err")
        child = _spawn.start(
            self.ctx,
            self.start_method,
            target,
            args,
            kwargs,
            name,
            out_path,
            err_path,
            limit=self._limit,
            hang=self._hang,
            last_operation=self._last_operation,
        )
        self.children.append(child)
        return child

    def _last_operation(self, pid: int) -> str | None:
        return self.history.last_operation(pid)

    # -- queues ---------------------------------------------------------------------------
    def queue(
        self,
        maxsize: int = 0,
        kind: str = "Queue",
        faults: Iterable[Fault | Gate | str] = (),
        name: str | None = None,
        *,
        key: Formatter | None = None,
        show: Formatter | None = None,
    ) -> FaultQueue:
        """Make a queue in the test's context, ready to pass to children.

        ``kind`` is one of ``Queue``, ``JoinableQueue``, ``SimpleQueue``,
        ``ManagerQueue``, ``ManagerJoinableQueue``.  Every operation on it is
        recorded in :attr:`history`; ``faults`` (plus the harness's own faults)
        are injected into it.

        ``key(item) -> str`` is the identity that matches an item got with the item
        put (the loss, duplicate and FIFO checkers count by it; default: the item's
        type and repr without memory addresses); ``show(item) -> str`` is what
        reports, :meth:`History.lost`, the timeline and fault messages print of it
        (default: a short repr; at most 200 characters are kept).  Both run in every
        process that puts or gets, so they must pickle: a function defined at module
        level (a lambda is an error at once, under every start method).  One that
        raises or returns no ``str`` never breaks the operation: the item gets the
        default, and the history a ``note`` mark (shown in the report).  A queue with
        either records its puts and gets in Python, as a faulted operation (~8 µs more
        per operation here, against ~0.2 µs with the C recorder).
        Default: the harness's ``key``/``show``.
        """
        __tracebackhide__ = True
        self._check_open()
        name = self._queue_name(name)
        self._formatters(name, key, show, "queue")  # before the queue is made
        if kind == "Queue":
            q: Any = self.ctx.Queue(maxsize)
        elif kind == "JoinableQueue":
            q = self.ctx.JoinableQueue(maxsize)
        elif kind == "SimpleQueue":
            if maxsize:
                raise MpfaultError("queue(): a SimpleQueue has no maxsize")
            q = self.ctx.SimpleQueue()
        elif kind in ("ManagerQueue", "ManagerJoinableQueue"):
            m = self._get_manager()
            q = m.Queue(maxsize) if kind == "ManagerQueue" else m.JoinableQueue(maxsize)
        else:
            raise MpfaultError(
                f"queue(): unknown kind {kind!r} (expected one of: {', '.join(QUEUE_KINDS)})"
            )
        return self.wrap(q, faults=faults, name=name, key=key, show=show, _owned=True)

    def wrap(
        self,
        q: Any,
        faults: Iterable[Fault | Gate | str] = (),
        name: str | None = None,
        *,
        key: Formatter | None = None,
        show: Formatter | None = None,
        _owned: bool = False,
    ) -> FaultQueue:
        """Wrap any object with the queue API so its operations are recorded and faulted.

        ``faults``, ``name``, ``key`` and ``show`` as for :meth:`queue`.
        """
        __tracebackhide__ = True
        self._check_open()
        name = self._queue_name(name)
        key, show = self._formatters(name, key, show, "queue" if _owned else "wrap")
        plan: list[Fault] = list(self.faults)
        for f in _as_faults(faults, f"faults of queue {name!r}"):
            self._validate(f, f"faults of queue {name!r}")
            plan.append(f)
        if self._instr is not None:
            from ._runtime.instrument import exempt

            exempt(q)  # recorded by the wrapper, not twice
        fq = FaultQueue(q, plan, name, self.run, key, show)
        if _owned:
            self._owned.add(id(fq))
        self.queues.append(fq)
        return fq

    def _queue_name(self, name: str | None) -> str:
        """``name``, or the next free ``qN``; an error if a queue has it already."""
        if name is None:
            name = f"q{next(self._qcounter)}"
            while any(x.name == name for x in self.queues):
                name = f"q{next(self._qcounter)}"
        elif any(x.name == name for x in self.queues):
            raise MpfaultError(f"a queue named {name!r} already exists in this test")
        return name

    def _formatters(self, name: str, key: Any, show: Any, api: str) -> tuple[Any, Any]:
        """The ``key`` and ``show`` of queue ``name`` (checked; None: the harness's)."""
        __tracebackhide__ = True
        from ._runtime.itemfmt import check_formatter, pick

        if key is not None:
            key = check_formatter(key, f"{api}(key=...) of queue {name!r}")
        else:
            key = pick(self._key_rules, name)
        if show is not None:
            show = check_formatter(show, f"{api}(show=...) of queue {name!r}")
        else:
            show = pick(self._show_rules, name)
        return key, show

    def _get_manager(self) -> Any:
        if self._manager is None:
            from multiprocessing.managers import SyncManager

            m = SyncManager(ctx=self.ctx)
            m.start(initializer=bootstrap.arm_helper, initargs=(os.getpid(),))
            self._manager = m
        return self._manager

    def _validate(self, f: Fault, where: str) -> None:
        for term in f.terms():
            if (
                REGISTRY[term.action].whole_process
                and f.who is not None
                and fnmatch.fnmatchcase(_CONTROLLER_NAME, f.who)
            ):
                raise MpfaultError(
                    f"{where}: fault '{f}' would {term.action} the test process itself "
                    f"({_CONTROLLER_NAME!r} matches who={f.who!r}); such faults only fire "
                    "in child processes: name them with who="
                )

    # -- served queues and programs (mpfault._serve, mpfault._program) --------------------
    def serve(
        self,
        kind: str = "Queue",
        maxsize: int = 0,
        address: tuple[str, int] = ("127.0.0.1", 0),
        authkey: bytes | None = None,
        *,
        name: str | None = None,
        faults: Iterable[Any] = (),
        allow_remote: bool = False,
        key: Formatter | None = None,
        show: Formatter | None = None,
    ) -> Served:
        """Serve a queue to independently started programs through a manager server;
        return its :class:`mpfault.Served` (``address, authkey = h.serve()``).

        ``faults``: queue faults (applied at the server, selected by the client's name)
        and ``net`` faults (applied in a proxy); ``allow_remote``: listen on an address
        that is not loopback; ``key``/``show``: as for :meth:`queue` (module-level
        functions: they run in the server, which imports them).  See
        :mod:`mpfault._serve`."""
        from . import _serve

        return _serve.serve(
            self._serve_parts(),
            kind,
            maxsize,
            address,
            authkey,
            name=name,
            faults=faults,
            allow_remote=allow_remote,
            key=key,
            show=show,
        )

    def program(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Program:
        """Start an independent program (any command) with the served queues'
        addresses and authkey in its environment; return its :class:`mpfault.Program`.
        See :mod:`mpfault._program`."""
        from . import _program

        return _program.program(self._serve_parts(), argv, name=name, env=env, cwd=cwd)

    def _serve_parts(self) -> Any:
        from . import _serve

        return _serve.Parts(
            self, self._check_open, self._validate, _as_faults, self._names, self._limit, self._hang
        )

    # -- gates ----------------------------------------------------------------------------
    def gate(
        self,
        op: str,
        when: str = "before",
        who: str | None = None,
        nth: Any = None,
        name: str | None = None,
    ) -> Gate:
        """Make a gate: the process that reaches ``op`` (``before`` or ``after`` it) stops
        there until the test calls :meth:`Gate.release`.  Give it in a queue's faults."""
        self._check_open()
        coordinator = self.coordinator
        if name is None:
            name = f"g{len(self._gates) + 1}"
        if name in self._gates:
            raise MpfaultError(f"gate(): a gate named {name!r} already exists in this test")
        fault = builders.gate(name, when=when, op=op, who=who, nth=nth)
        self._validate(fault, f"gate {name!r}")
        g = Gate(coordinator, fault, name, self._limit, self._hang)
        self._gates[name] = g
        return g

    @property
    def coordinator(self) -> Coordinator:
        """What decides when the processes parked at this harness's gates go on (made
        with the first gate): who is parked where, release a gate or one process."""
        self._check_open()
        if self._coordinator is None:
            self._coordinator = PassiveHub(self.run_dir, self._record_release)
        return self._coordinator

    def _record_release(self, detail: str) -> None:
        _state.get_state(self.run).recorder.mark("release", "", detail)

    # -- history ----------------------------------------------------------------------------
    @property
    def history(self) -> History:
        """Every operation on the harness's queues, in every process, so far."""
        return self._read_history(settle=self._settle)

    def _read_history(self, settle: Any = None) -> History:
        started = [c for c in self.children if c.process.pid is not None]
        return History.read(
            os.path.join(self.run_dir, "events"),
            processes={c.pid: c.name for c in started},
            plans={fq.name: [str(f) for f in fq.plan] for fq in self.queues},
            queues=[fq.name for fq in self.queues],
            settle=settle,
            fates={
                c.pid: ("exited" if c.exitcode >= 0 else "killed")
                for c in started
                if c.exitcode is not None
            },
            cache=self._events_cache,
        )

    def _settle(self) -> tuple[History, list[str]]:
        """Wait (up to the deadline) for the running children; the history then, and
        the children still running (paused ones are not waited for)."""

        def paused(c: Child) -> bool:
            # stopped by SIGSTOP (a pause): no wait ends that; an exiting process (a
            # zombie, or gone from /proc) is waited for
            states = procfs.thread_states(c.pid)
            return bool(states) and all(st in ("T", "t") for st in states)

        end = time.monotonic() + self._limit(None)
        while True:
            running = [c for c in self.children if c.is_alive() and not paused(c)]
            left = end - time.monotonic()
            if not running or left <= 0:
                break
            multiprocessing.connection.wait([c.process.sentinel for c in running], left)
        alive = [
            f"{c.name} (pid {c.pid}{', paused' if paused(c) else ''})"
            for c in self.children
            if c.is_alive()
        ]
        return self._read_history(), alive

    def fired(self) -> dict[str, int]:
        """How often each fault fired, by ``"<queue>: <fault spec>"``."""
        return self.history.fired()

    # -- teardown ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise MpfaultError("this harness is closed")

    def collect_outputs(self) -> dict[str, tuple[str, str]]:
        """Every child's (stdout, stderr) so far, by name."""
        return {c.name: c.output() for c in self.children}

    def close(self) -> list[str]:
        """Stop every child and its descendants, release queues, remove the run directory.

        SIGTERM (and SIGCONT, for stopped children), then SIGKILL after ``grace``
        seconds, then reap; every wait is bounded.  Returns a list of problems
        (processes that could not be reaped), empty when all went well.
        """
        if self._closed:
            return []
        self._closed = True
        self.stop_watching()
        # pytest-timeout firing now would cut the cleanup short (children left unreaped):
        # it fires when the cleanup, whose every wait is bounded, is done
        with _deadline.alarm_deferred():
            return self._close()

    def _close(self) -> list[str]:
        problems: list[str] = []
        try:
            if self._instr is not None:
                self._instr.begin_close()
            if "_serve_state" in self.__dict__:  # programs and served queues first
                from . import _serve

                problems += _serve.close(self)
            problems += stop_children(self.children, self.grace)
        finally:
            if self._instr is not None:
                self._instr.end_close()
            self.outputs = self.collect_outputs()
            close_channels(self.children)
            self._release_queues()
            if self._manager is not None:
                with contextlib.suppress(Exception):
                    self._manager.shutdown()
                proc = getattr(self._manager, "_process", None)
                if proc is not None and proc.is_alive():
                    proc.kill()
                    proc.join(2.0)
            if self._coordinator is not None:
                self._coordinator.close()
            _state.forget(self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._events_cache.clear()
        return problems

    def _release_queues(self) -> None:
        for fq in self.queues:
            q = fq.wrapped
            if id(fq) not in self._owned:
                # the user's queue, wrapped: left as it is, unless a dead process holds
                # its write lock (kill(during) on a put): a feeder of this process then
                # never ends, and multiprocessing joins it at exit with no bound
                if _write_lock_held(q):
                    with contextlib.suppress(Exception):
                        q.cancel_join_thread()
                continue
            # a queue the test process put into must not block pytest's exit (row 25)
            for meth in ("cancel_join_thread", "close"):
                f = getattr(q, meth, None)
                if f is not None:
                    with contextlib.suppress(Exception):
                        f()


def _write_lock_held(q: Any) -> bool:
    """Whether a ``multiprocessing.Queue``'s write lock is held now (the children are
    gone by then: by one that died holding it)."""
    lock = getattr(q, "_wlock", None)
    if lock is None or not hasattr(q, "cancel_join_thread"):
        return False
    try:
        if lock.acquire(False):
            lock.release()
            return False
    except Exception:
        return False
    return True


def _rules(value: Any, where: str) -> Any:
    """The (glob, callable) rules of a ``key=``/``show=`` for many queues (checked)."""
    __tracebackhide__ = True
    from ._runtime.itemfmt import check_rules

    try:
        return check_rules(value, where)
    except MpfaultError as e:
        raise e.with_traceback(None) from None


def _as_faults(items: Iterable[Fault | Gate | str], where: str) -> list[Fault]:
    __tracebackhide__ = True
    try:
        return _to_faults(items, where)
    except FaultSpecError as e:
        # one line at the user's call: not the parser's frames
        raise e.with_traceback(None) from None


def _to_faults(items: Iterable[Fault | Gate | str], where: str) -> list[Fault]:
    out: list[Fault] = []
    if isinstance(items, (str, Fault, Gate)):
        items = [items]
    for x in items:
        if isinstance(x, Gate):
            out.append(x.fault)
        elif isinstance(x, Fault):
            out.append(x)
        elif isinstance(x, str):
            out.extend(grammar.parse(x, source=where))
        else:
            raise MpfaultError(
                f"{where}: {x!r} is not a fault (use mpfault.faults or a spec string)"
            )
    return out


Harness.__module__ = "mpfault"


class _Faults(tuple):  # type: ignore[type-arg]
    """A harness's ambient faults (a tuple of :class:`Fault`) that also offers the names
    of :mod:`mpfault.faults`: inside a test, ``mpfault.faults.drop(...)`` works on the
    fixture as on the package."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from . import faults as module

        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(
                f"'tuple' object (the harness's faults) and module "
                f"'mpfault.faults' have no attribute {name!r}"
            ) from None


_swept: set[str] = set()


def _sweep_stale(base: str | None) -> None:
    """Once per process and directory: remove the run directories of dead test processes
    (a pytest killed by SIGKILL could not remove its own)."""
    where = base or tempfile.gettempdir()
    if where in _swept:
        return
    _swept.add(where)
    with contextlib.suppress(OSError):
        _rundir.remove_stale(where)
