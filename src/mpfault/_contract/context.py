"""What a check function gets: the start method, a queue factory, and safe helpers.

Every process a check starts through :meth:`CheckContext.start` and every queue it
makes through :meth:`CheckContext.make` is cleaned up when the check ends, whether it
passed, failed or raised: children are reaped with bounded waits (join, terminate,
join, kill, join) and queues are closed without waiting for their feeder threads.
"""

from __future__ import annotations

import math
import multiprocessing.connection
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from .._runtime.procfs import stat_state as _proc_state
from .._timing import (
    DEFAULT_LIMIT,
    ExceptionTypes,
    TimingError,
    expect_immediate,
    expect_timeout,
)
from .model import CUSTOM, Figure, Mismatch, Unsupported

__all__ = ["Call", "CheckContext", "QueueFactory", "drop_tracebacks", "reap", "wait_blocked"]

T = TypeVar("T")

#: ``make(maxsize)`` returns a fresh queue of the kind under test.
QueueFactory = Callable[[int], Any]

# Seconds used by the checks.  TIMEOUT is the timeout passed to the calls under test;
# HOLD is how long something that must block is watched (a call that wrongly does not
# block returns at once, so this can be short); DEADLINE bounds waits for something
# that must happen (reached only when it does not).
TIMEOUT = 0.1
HOLD = 0.2
DEADLINE = 10.0
GRACE = 1.0


class Call:
    """A function running in a daemon thread, with its result or exception kept.

    Attributes:
        started: ``time.perf_counter()`` when the thread was started.
        finished: ``time.perf_counter()`` when the function returned or raised.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "mpfault-check") -> None:
        self.name = name
        self._fn = fn
        self._args = args
        self._result: Any = None
        self._exc: BaseException | None = None
        self.finished = math.nan
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.started = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn(*self._args)
        except BaseException as exc:  # kept for the caller, never raised in the thread
            self._exc = exc
        finally:
            self.finished = time.perf_counter()
            del self._fn, self._args  # do not keep the queues alive

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds; return whether the call has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        """Whether the call has finished."""
        return not self._thread.is_alive()

    @property
    def exception(self) -> BaseException | None:
        """The exception the call raised, if it has finished by raising."""
        return self._exc

    def value(self) -> Any:
        """The call's return value; re-raises its exception.  Only once finished."""
        if self._exc is not None:
            raise self._exc
        return self._result

    def describe(self) -> str:
        """What the finished call did, as text (``returned 'a'`` / ``raised Full``)."""
        if not self.done:
            return "is still running"
        if self._exc is not None:
            return f"raised {type(self._exc).__name__}({str(self._exc)!r})"
        return f"returned {self._result!r:.60}"


def reap(procs: Iterable[BaseProcess], grace: float = GRACE) -> None:
    """Make sure every process in *procs* has exited, with bounded waits.

    Each live process gets ``join(grace)``, then ``terminate()`` and ``join(grace)``,
    then ``kill()`` and ``join(grace)``.  Processes never started are ignored.
    """
    procs = [p for p in procs if getattr(p, "_popen", None) is not None]
    end = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    grace = max(grace, GRACE)
    for step in ("terminate", "kill"):
        alive = [p for p in procs if p.exitcode is None]
        if not alive:
            break
        for p in alive:
            try:
                getattr(p, step)()
            except OSError:
                pass
        end = time.monotonic() + grace
        for p in alive:
            p.join(max(0.0, end - time.monotonic()))


def wait_blocked(pid: int, tid: int | None = None, timeout: float = DEADLINE) -> bool:
    """Wait until process *pid* (or its thread *tid*) sleeps in the kernel.

    Used after a child (or thread) has announced that it is about to make a blocking
    call: once it sleeps, the call has been issued.  Reads ``/proc`` on Linux; returns
    ``False`` at once where ``/proc`` is not available (callers then fall back to a
    short observation window).
    """
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    if _proc_state(path) is None:
        return False
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _proc_state(path) == "S":
            return True
    return False


class CheckContext:
    """Everything a check function may use.

    Attributes:
        method: the start method (``fork``, ``spawn``, ``forkserver``).
        mp: the ``multiprocessing`` context of that start method.
        kind: the queue kind under test (``Q``, ``JQ``, ``SQ``, ``MQ``, ``custom``, ``-``).
        tolerance: seconds a timeout may overshoot.
        timeout: the timeout the checks pass to calls under test (0.1 s).
        hold: seconds something that must block is watched (0.2 s).
        deadline: bound on waits for something that must happen (10 s).
        limit: seconds within which a non-blocking call must finish.
        figures: figures recorded so far (also kept when the check fails).
    """

    def __init__(
        self,
        *,
        method: str,
        mp: BaseContext,
        kind: str,
        make: QueueFactory | None,
        tolerance: float,
        shared: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.mp = mp
        self.kind = kind
        self._make = make
        self.tolerance = tolerance
        self.timeout = TIMEOUT
        self.hold = HOLD
        self.deadline = DEADLINE
        self.limit = max(DEFAULT_LIMIT, tolerance / 4)
        self.figures: dict[str, Figure] = {}
        self._shared = shared if shared is not None else {}
        self._procs: list[BaseProcess] = []
        self._queues: list[Any] = []
        self._cleanups: list[Callable[[], None]] = []
        #: the exit codes of the children the check started, once it is closed
        self.exitcodes: list[int | None] = []

    # -- queues ------------------------------------------------------------------
    @property
    def custom(self) -> bool:
        """Whether the queue under test comes from a third-party factory."""
        return self.kind == CUSTOM

    def make(self, maxsize: int = 0) -> Any:
        """Return a fresh queue of the kind under test (*maxsize* 0: unbounded)."""
        if self._make is None:
            raise RuntimeError(f"check for kind {self.kind!r} has no queue factory")
        q = self._make(maxsize)
        self._queues.append(q)
        return q

    def require(self, q: Any, *names: str) -> None:
        """Raise :class:`Unsupported` unless queue *q* has every method in *names*."""
        missing = [n for n in names if not callable(getattr(q, n, None))]
        if missing:
            raise Unsupported(f"the queue has no {', '.join(n + '()' for n in missing)}")

    def track(self, q: T) -> T:
        """Have queue *q* (made by the check itself) closed when the check ends."""
        self._queues.append(q)
        return q

    def for_thread(self, q: Any) -> Any:
        """A handle on *q* for use by another thread.

        Manager proxies are re-created from a pickle (the docs ask not to share one
        proxy between threads); other queues are returned as is.
        """
        from multiprocessing.managers import BaseProxy

        if isinstance(q, BaseProxy):
            import pickle

            return pickle.loads(pickle.dumps(q))
        return q

    def get(self, q: Any, timeout: float | None = None) -> Any:
        """Get an item from *q* within *timeout* (default: the deadline).

        SimpleQueue has no timeout: its pipe is polled first.  Raises ``queue.Empty``
        when nothing arrives in time.
        """
        timeout = self.deadline if timeout is None else timeout
        if self.kind == "SQ":
            if not q._reader.poll(timeout):
                raise queue.Empty
            return q.get()
        return q.get(timeout=timeout)

    def readable(self, q: Any, timeout: float | None = None) -> bool:
        """Wait until the pipe of a stdlib Q/JQ/SQ *q* has data; return whether it has."""
        timeout = self.deadline if timeout is None else timeout
        return bool(multiprocessing.connection.wait([q._reader], timeout))

    # -- processes and threads -------------------------------------------------------
    def start(self, target: Callable[..., Any], *args: Any, ctx: BaseContext | None = None) -> Any:
        """Start a daemon child running *target(*args)*; it is reaped when the check ends.

        *target* must be a module-level function (spawn and forkserver import it).
        """
        mp: Any = ctx or self.mp
        p = mp.Process(target=target, args=args, daemon=True)
        self._procs.append(p)
        p.start()
        return p

    def thread(self, fn: Callable[..., Any], *args: Any) -> Call:
        """Run *fn(*args)* in a daemon thread and return its :class:`Call`."""
        return Call(fn, *args)

    def pipe(self) -> tuple[Any, Any]:
        """A one-way ``(reader, writer)`` pipe from this start method's context."""
        r, w = self.mp.Pipe(duplex=False)
        self._cleanups.append(r.close)
        self._cleanups.append(w.close)
        return r, w

    def recv(self, conn: Any, timeout: float | None = None, what: str = "a report") -> Any:
        """Receive from *conn* within *timeout*; a :class:`Mismatch` if nothing comes."""
        timeout = self.deadline if timeout is None else timeout
        if not conn.poll(timeout):
            raise Mismatch(f"no {what} from the child within {timeout:g} s")
        return conn.recv()

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        """Call *fn* when the check ends (before children are reaped)."""
        self._cleanups.append(fn)

    def stop(self, *procs: BaseProcess) -> None:
        """Stop *procs* now: terminate, join, then kill and join if needed (bounded)."""
        reap(procs, grace=0.0)

    def reap(self, *procs: BaseProcess) -> None:
        """Reap *procs* now (bounded waits), or every child started so far."""
        reap(procs or self._procs)

    # -- shared scenarios and figures -----------------------------------------------
    def shared(self, key: str, fn: Callable[[], T]) -> T:
        """Run *fn* once per queue kind and start method; later checks reuse its result.

        An exception is also remembered and re-raised to every check that asks.
        """
        full = f"{self.kind}:{key}"
        if full not in self._shared:
            try:
                self._shared[full] = (True, fn())
            except Exception as exc:
                drop_tracebacks(exc)  # re-raised later with a fresh traceback
                self._shared[full] = (False, exc)
        ok, value = self._shared[full]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def figure(self, **figures: Figure) -> None:
        """Record measured values; they are reported even if the check then fails."""
        for k, v in figures.items():
            self.figures[k] = round(v, 6) if isinstance(v, float) else v

    # -- timing helpers ----------------------------------------------------------------
    def immediate(
        self, label: str, raises: ExceptionTypes | None, fn: Callable[[], Any], attempts: int = 3
    ) -> float:
        """Check that *fn* raises *raises* (or returns, if ``None``) within the limit.

        A call that only exceeded the time limit is retried (up to *attempts* times) so
        that a scheduling hiccup on a loaded machine is not reported as a violation.
        Returns the elapsed seconds; raises :class:`Mismatch` naming *label*.
        """
        problem = ""
        for _ in range(attempts):
            try:
                with expect_immediate(raises=raises, limit=self.limit) as t:
                    fn()
            except TimingError as exc:
                problem = str(exc)
                if exc.elapsed <= self.limit:
                    break  # wrong outcome, not slowness: no retry
                continue
            self.figure(**{f"{label} s": t.elapsed})
            return t.elapsed
        raise Mismatch(f"{label}: {problem}")

    def timed_out(self, label: str, raises: ExceptionTypes, fn: Callable[[], Any]) -> float:
        """Check that *fn* raises *raises* after :attr:`timeout` (not early, not late).

        Records ``elapsed`` and ``overshoot`` figures; raises :class:`Mismatch`.
        """
        try:
            with expect_timeout(self.timeout, raises=raises, tolerance=self.tolerance) as t:
                fn()
        except TimingError as exc:
            self.figure(elapsed=exc.elapsed, overshoot=exc.elapsed - self.timeout)
            problem = f"{label}: {exc}"
        else:
            self.figure(elapsed=t.elapsed, overshoot=t.overshoot)
            return t.elapsed
        raise Mismatch(problem)

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        """Release everything the check made: cleanups, children, queues."""
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:
                pass
        reap(self._procs)
        for p in self._procs:
            self.exitcodes.append(p.exitcode)
            try:
                p.close()
            except ValueError:  # still running after kill: leave it to the GC
                pass
        for q in self._queues:
            _discard_queue(q)
        self._procs.clear()
        self._queues.clear()
        self._cleanups.clear()


def drop_tracebacks(exc: BaseException) -> None:
    """Clear the tracebacks of *exc* and of its causes and contexts.

    A kept exception's traceback references the frames (and so the queues) of the
    check that raised it, and the frame of the thread that caught it: a reference
    cycle that only the cyclic GC frees, at an arbitrary moment - on 3.13 possibly
    inside a resource-tracker call, which then warns that a semaphore "might leak".
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__]


def _discard_queue(q: Any) -> None:
    """Close *q* without ever waiting for its feeder thread."""
    for name in ("cancel_join_thread", "close"):
        fn = getattr(q, name, None)
        if fn is None or not callable(fn):
            continue
        try:
            fn()
        except Exception:
            pass


@contextmanager
def core_dumps_disabled() -> Iterator[None]:
    """Disable core files of children started inside the block (POSIX; else no-op)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ValueError, OSError):  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
        except (ValueError, OSError):  # pragma: no cover
            pass


def this_python() -> tuple[int, int, int]:
    """The running interpreter's version as ``(major, minor, micro)``."""
    return (sys.version_info[0], sys.version_info[1], sys.version_info[2])
