"""The harness: start children for one test, give them queues, and leave nothing behind.

``Harness`` is what the ``mpfault`` fixture returns, and it works without pytest
as a context manager::

    with mpfault.Harness(start_method="spawn") as h:
        q = h.queue()
        c = h.spawn(producer, q)
        c.result(timeout=10)

It does not import pytest.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from ._errors import LOST_FORKSERVER_STATUS, ChildError, Hang, MpfaultError, SpawnError
from ._history import History
from ._runtime import bootstrap
from ._runtime import state as _state
from ._runtime.faults import Fault
from ._runtime.faults import gate as _gate_fault
from ._runtime.faults import parse as _parse_faults
from ._runtime.fqueue import FaultQueue

__all__ = [
    "QUEUE_KINDS",
    "TMPDIR_ENV",
    "Child",
    "Gate",
    "Harness",
    "check_tmpdir",
    "default_start_methods",
    "default_tmpdir",
]

QUEUE_KINDS = ("Queue", "JoinableQueue", "SimpleQueue", "ManagerQueue", "ManagerJoinableQueue")

#: control-channel ends held by this process, for every live child of every harness;
#: a forked child closes all of them, so their EOF still means "the test process died"
_LIVE_CONTROL_FDS: set[int] = set()
_MODULE_CACHE: dict[str, tuple[str, str] | None] = {}
#: whether os.fork() warns in a multi-threaded process (3.12+)
_FORK_WARNS = sys.version_info >= (3, 12)
_CONTROLLER_NAME = "MainProcess"
_FOREVER = 7 * 24 * 3600.0


def default_start_methods() -> list[str]:
    """Every start method this platform offers, the default one first."""
    return list(multiprocessing.get_all_start_methods())


#: the environment variable that says where harnesses keep their run files
TMPDIR_ENV = "MPFAULT_TMPDIR"


def check_tmpdir(path: str, where: str) -> str:
    """``path``, made absolute, if it is a writable directory; else an ``MpfaultError``
    naming ``where`` the path came from."""
    if not os.path.isdir(path):
        raise MpfaultError(f"run files directory {path!r} from {where} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise MpfaultError(f"run files directory {path!r} from {where} is not writable")
    return os.path.abspath(path)


def default_tmpdir() -> str | None:
    """Where a harness keeps its run files (history logs, gates, children's output)
    when it is not told: ``$MPFAULT_TMPDIR``, else None (the system's temporary
    directory, ``tempfile.gettempdir()``: ``TMPDIR``, ``/tmp``...)."""
    env = os.environ.get(TMPDIR_ENV)
    if env:
        return check_tmpdir(env, f"env {TMPDIR_ENV}")
    return None


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _stat_state(path: str) -> bytes | None:
    """The one-letter state field of a /proc ``stat`` file (R, S, T, Z, ...), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split(b" ", 1)[0]


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (R, S, T, Z, ...), or None."""
    state = _stat_state(f"/proc/{pid}/stat")
    return None if state is None else state.decode()


def _all_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (or the process is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return all(
        _stat_state(f"/proc/{pid}/task/{tid}/stat") in (b"T", b"t", b"Z", None) for tid in tids
    )


def _wait_stopped_child(pid: int, timeout: float) -> bool:
    """Block (in a helper thread, so the wait is bounded) until child ``pid`` stops."""
    import threading

    done = threading.Event()

    def waiter() -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        done.set()

    threading.Thread(target=waiter, daemon=True, name="mpfault-wait-stopped").start()
    return done.wait(timeout)


def _descendants(roots: Iterable[int]) -> set[int]:
    """Every live descendant of ``roots`` (walks /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split(b" ")
        children.setdefault(int(rest[1]), []).append(int(e))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        p = todo.pop()
        for c in children.get(p, ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _module_entry(name: str) -> tuple[str, str] | None:
    """(name, file) if module ``name`` may not be importable by name in a fresh child."""
    if name in _MODULE_CACHE:
        return _MODULE_CACHE[name]
    entry: tuple[str, str] | None = None
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None)
    if mod is not None and path and name not in ("__main__", "__mp_main__"):
        try:
            spec = importlib.util.find_spec(name)
            same = bool(spec and spec.origin and os.path.samefile(spec.origin, path))
        except (ImportError, ValueError, OSError):
            same = False
        if not same:
            entry = (name, path)
    _MODULE_CACHE[name] = entry
    return entry


def _modules_for(target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    names: list[str] = []
    for obj in (target, *args, *kwargs.values()):
        mod = getattr(obj, "__module__", None)
        if not isinstance(mod, str):
            mod = type(obj).__module__
        if mod and mod not in names and mod != "builtins":
            names.append(mod)
    out = []
    for n in names:
        e = _module_entry(n)
        if e is not None:
            out.append(e)
    return out


def _check_target(target: Callable[..., Any], method: str) -> None:
    if not callable(target):
        raise SpawnError(f"spawn(): the target {target!r} is not callable")
    if method == "fork":
        return
    qual = getattr(target, "__qualname__", "") or ""
    where = f"under the {method!r} start method the target is pickled by reference"
    if "<lambda>" in qual:
        raise SpawnError(
            f"spawn(): the target is a lambda, which cannot reach a child ({where}); "
            "define it as a function at module level"
        )
    if "<locals>" in qual:
        raise SpawnError(
            f"spawn(): the target {qual!r} is defined inside a function ({where}); "
            "move it to module level (in the test module or a helper module)"
        )


@dataclass(frozen=True)
class Arrival:
    """A process that reached a gate."""

    gate: str
    process: str
    pid: int


class _GateHub:
    """The test-side end of gates: a datagram socket children announce arrivals on."""

    def __init__(self, run_dir: str) -> None:
        self.dir = os.path.join(run_dir, _state.GATES_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(self.dir, _state.COORD_SOCK))
        self.arrivals: dict[str, list[tuple[Arrival, str]]] = {}
        self.released: set[str] = set()

    def drain(self, timeout: float | None) -> bool:
        """Read arrivals; block up to ``timeout`` for the first one. True if any was read."""
        got = False
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, TimeoutError):
                return got
            got = True
            msg = json.loads(data)
            arr = Arrival(msg["gate"], msg["process"], int(msg["pid"]))
            self.arrivals.setdefault(arr.gate, []).append((arr, msg["reply"]))
            if arr.gate in self.released:
                self._go(msg["reply"])
            self.sock.settimeout(0)

    def _go(self, reply: str) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(b"go", reply)

    def release(self, gate: str) -> None:
        with open(os.path.join(self.dir, f"{gate}.released"), "w"):
            pass
        self.released.add(gate)
        self.drain(0)
        for _arr, reply in self.arrivals.get(gate, []):
            self._go(reply)

    def close(self) -> None:
        self.sock.close()


class Gate:
    """A point where a process stops until the test releases it.

    Made by :meth:`Harness.gate`, given in a queue's ``faults``.  The first
    process to reach it (and every later one) waits there until
    :meth:`release`; from then on the gate stays open.
    """

    def __init__(self, hub: _GateHub, harness: Harness, fault: Fault, name: str) -> None:
        self._hub = hub
        self._harness = harness
        self.fault = fault
        self.name = name

    def __repr__(self) -> str:
        return f"<Gate {self.name} {self.fault}>"

    @property
    def reached(self) -> list[Arrival]:
        """The processes that have reached the gate so far."""
        self._hub.drain(0)
        return [a for a, _ in self._hub.arrivals.get(self.name, [])]

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self.name in self._hub.released

    def wait_reached(self, timeout: float | None = None, count: int = 1) -> Arrival:
        """Wait until ``count`` processes have reached the gate; return the last arrival.

        Raises :class:`Hang` (with every child's stack) if that does not happen
        within ``timeout`` seconds (or the test's deadline).
        """
        __tracebackhide__ = True
        limit = self._harness._limit(timeout)
        end = time.monotonic() + limit
        while True:
            arrivals = self._hub.arrivals.get(self.name, [])
            if len(arrivals) >= count:
                return arrivals[count - 1][0]
            left = end - time.monotonic()
            if left <= 0:
                call = f"gate {self.name!r} ({self.fault}).wait_reached(timeout={timeout})"
                raise self._harness._hang(call, limit)
            self._hub.drain(left)

    def release(self) -> None:
        """Let every waiting process go on, and every later one pass."""
        self._hub.release(self.name)


class Child:
    """A process started by :meth:`Harness.spawn`."""

    #: True for a process the code under test started itself (instrumentation adopts it)
    adopted = False

    def __init__(
        self,
        harness: Harness,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        name: str,
        out_path: str,
        err_path: str,
    ) -> None:
        self._harness = harness
        self._process = process
        self._conn: Connection | None = conn
        self.name = name
        self.out_path = out_path
        self.err_path = err_path
        self._outcome: tuple[Any, ...] | None = None
        self._stack: str | None = None
        self._fd = conn.fileno()
        #: the qualified name of the target function
        self.target_name = ""

    def __repr__(self) -> str:
        return f"<Child {self.name!r} pid={self.pid} exitcode={self.exitcode}>"

    @property
    def pid(self) -> int:
        """The child's process id."""
        pid = self._process.pid
        assert pid is not None
        return pid

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._process.exitcode

    @property
    def process(self) -> multiprocessing.process.BaseProcess:
        """The underlying ``multiprocessing`` process object."""
        return self._process

    def is_alive(self) -> bool:
        """Whether the process is still running (or stopped)."""
        return self._process.is_alive()

    # -- control channel ----------------------------------------------------------------
    def _handle(self, msg: Any) -> None:
        tag = msg[0]
        if tag == bootstrap.MSG_STACK:
            self._stack = msg[1]
        elif tag in (bootstrap.MSG_RESULT, bootstrap.MSG_ERROR) and self._outcome is None:
            self._outcome = tuple(msg)

    def _pump(self, timeout: float | None) -> bool:
        """Read control messages; block up to ``timeout``. False when the channel is closed."""
        conn = self._conn
        if conn is None:
            return False
        try:
            if not conn.poll(timeout):
                return True
            while True:
                self._handle(conn.recv())
                if not conn.poll(0):
                    return True
        except (EOFError, OSError):
            self._close_conn()
            return False

    def _close_conn(self) -> None:
        if self._conn is not None:
            _LIVE_CONTROL_FDS.discard(self._fd)
            self._conn.close()
            self._conn = None

    def _wait(self, timeout: float | None, until: Callable[[], bool], call: str) -> None:
        __tracebackhide__ = True
        limit = self._harness._limit(timeout)
        end = time.monotonic() + limit
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                raise self._harness._hang(call, limit)
            waitables: list[Any] = [self._process.sentinel]
            if self._conn is not None:
                waitables.append(self._conn)
            ready = multiprocessing.connection.wait(waitables, left)
            if self._conn is not None and self._conn in ready:
                self._pump(0)
            if self._process.sentinel in ready:
                # exiting (its fds close just before it can be reaped): reap it; whatever
                # it sent before is still readable; the caller decides
                self._process.join(max(left, 0.001))
                self._pump(0)
                return

    # -- public API ---------------------------------------------------------------------
    def join(self, timeout: float | None = None) -> int | None:
        """Wait until the child exits and return its exit code.

        Raises :class:`Hang` with every live child's stack if it is still running
        after ``timeout`` seconds (default: the test's deadline).
        """
        __tracebackhide__ = True
        self._wait(
            timeout,
            lambda: not self._process.is_alive(),
            f"join(timeout={timeout}) of child {self.name!r}",
        )
        self._process.join(0)
        return self._process.exitcode

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the target to return and give back its return value.

        Raises :class:`ChildError` if the target raised (with the child's
        traceback) or the process died without a result (saying which signal or
        exit code), and :class:`Hang` if nothing happened within ``timeout``
        seconds (default: the test's deadline).
        """
        __tracebackhide__ = True
        self._wait(
            timeout,
            lambda: self._outcome is not None,
            f"result(timeout={timeout}) of child {self.name!r}",
        )
        if self._outcome is None:
            self._process.join(1.0)
            raise self._death_error()
        if self._outcome[0] == bootstrap.MSG_RESULT:
            return pickle.loads(self._outcome[1])
        _, qual, msg, text, blob = self._outcome
        exc: BaseException | None = None
        if blob is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(blob)
        raise ChildError(
            f"child {self.name!r} (pid {self.pid}, {self._harness.start_method}) raised "
            f"{qual}: {msg}\n\nChild traceback:\n{text.rstrip()}",
            name=self.name,
            pid=self.pid,
            exc_type=qual,
            exc_message=msg,
            child_traceback=text,
            exitcode=self.exitcode,
            exception=exc,
        )

    def _death_error(self) -> ChildError:
        code = self.exitcode
        sig: str | None = None
        if code is not None and code < 0:
            sig = _signame(-code)
            how = f"was killed by {sig}"
        else:
            how = f"exited with code {code}"
            if code == 255 and self._harness.start_method == "forkserver":
                how += f" (or {LOST_FORKSERVER_STATUS})"
        last = self._harness.history.last_operation(self.pid)
        extra = f"\nIts last queue operation: {last}" if last else ""
        return ChildError(
            f"child {self.name!r} (pid {self.pid}, {self._harness.start_method}) {how} "
            f"before returning a result{extra}",
            name=self.name,
            pid=self.pid,
            exitcode=code,
            signal=sig,
        )

    def kill(self) -> None:
        """Send SIGKILL."""
        self._process.kill()

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._process.terminate()

    def pause(self) -> None:
        """Stop the whole process (every thread, its queue feeder too) with SIGSTOP.

        Returns once the process is stopped.
        """
        os.kill(self.pid, signal.SIGSTOP)
        self.wait_stopped(5.0)

    def wait_stopped(self, timeout: float | None = None) -> None:
        """Wait until the process is stopped (by :meth:`pause` or a ``pause`` fault).

        Raises :class:`Hang` if it is not stopped within ``timeout`` seconds.
        """
        __tracebackhide__ = True
        limit = self._harness._limit(timeout)
        if self.start_method != "forkserver" and self.is_alive():
            # our own child: the kernel tells us when it stops
            if _wait_stopped_child(self.pid, limit):
                return
        else:
            # a fork-server child is not ours to wait for: watch its state
            end = time.monotonic() + limit
            while time.monotonic() < end:
                if _all_stopped(self.pid):
                    return
                os.sched_yield()
        if _proc_state(self.pid) not in ("T", "t"):
            raise self._harness._hang(f"wait_stopped(timeout={timeout}) of {self.name!r}", limit)

    @property
    def start_method(self) -> str:
        """The start method the child was started with."""
        return self._harness.start_method

    def resume(self) -> None:
        """Resume a paused process (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stack(self, timeout: float = 5.0) -> str:
        """The child's current Python stack, every thread, as text (with source lines)."""
        if not self._process.is_alive():
            return f"(process exited with code {self.exitcode})"
        state = _proc_state(self.pid)
        if state == "T":
            return "(process is stopped by SIGSTOP: no stack can be taken until it resumes)"
        if self._conn is None:
            return "(control channel closed)"
        self._stack = None
        try:
            self._conn.send_bytes(bootstrap.REQ_STACK)
        except OSError:
            return "(control channel closed)"
        end = time.monotonic() + timeout
        while self._stack is None:
            left = end - time.monotonic()
            if left <= 0:
                return f"(no answer within {timeout}s: the process may hold the GIL in C code)"
            if not self._pump(left) and self._stack is None:
                return "(control channel closed: the process is exiting)"
        return self._stack

    def output(self) -> tuple[str, str]:
        """What the child wrote to stdout and stderr so far."""
        return _read(self.out_path), _read(self.err_path)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


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
        self.faults: tuple[Fault, ...] = tuple(_as_faults(faults, "Harness(faults=...)"))
        for f in self.faults:  # before anything is made that close() would remove
            self._validate(f, "Harness(faults=...)")
        base = default_tmpdir() if tmpdir is None else check_tmpdir(tmpdir, "Harness(tmpdir=...)")
        self.run_dir = tempfile.mkdtemp(prefix="mpf-", dir=base)
        self.run = _state.RunInfo(self.run_dir, self.seed, os.getpid(), test_id)
        self.children: list[Child] = []
        self.queues: list[FaultQueue] = []
        self.outputs: dict[str, tuple[str, str]] = {}
        self._names: set[str] = set()
        self._counter = itertools.count(1)
        self._qcounter = itertools.count(1)
        self._manager: Any = None
        self._hub: _GateHub | None = None
        self._gates: dict[str, Gate] = {}
        self._started = time.monotonic()
        self._closed = False
        os.makedirs(os.path.join(self.run_dir, "out"))
        self._instr: Any = None
        if method == "forkserver":
            _preload_forkserver(self.ctx)
        if instrument:
            self._start_instrument(())

    # -- instrumentation ------------------------------------------------------------------
    def _start_instrument(self, faults: Any) -> Any:
        from ._adopt import Instrumentation

        if self._instr is not None and self._instr.on:
            raise MpfaultError("instrument(): this harness is instrumenting already")
        by_name = []
        for glob, specs in dict(faults).items():
            plan = _as_faults(specs, f"instrument(faults=...) for {glob!r}")
            for f in plan:
                self._validate(f, f"instrument(faults=...) for {glob!r}")
            by_name.append((glob, plan))
        instr = Instrumentation(self, by_name)
        try:
            instr.start()
        except BaseException:
            self.close()
            raise
        self._instr = instr
        return instr

    @contextlib.contextmanager
    def instrument(self, faults: Any = ()) -> Any:
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
        """
        self._check_open()
        instr = self._start_instrument(faults)
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

    # -- deadline -------------------------------------------------------------------------
    def _limit(self, timeout: float | None) -> float:
        if self.deadline is None:
            # "forever", within what select() and socket timeouts accept
            return _FOREVER if timeout is None else max(0.0, min(timeout, _FOREVER))
        left = max(0.0, self.deadline - (time.monotonic() - self._started))
        return left if timeout is None else max(0.0, min(timeout, left))

    def _hang(self, call: str, waited: float) -> Hang:
        stacks = self.stacks()
        deadline_hit = self.deadline is not None and (
            time.monotonic() - self._started >= self.deadline - 1e-3
        )
        why = (
            f"the test's deadline of {self.deadline}s ran out"
            if deadline_hit
            else f"it timed out after {waited:.3g}s"
        )
        body = "\n\n".join(f"--- {name} ---\n{text}" for name, text in stacks.items())
        msg = f"{call}: {why}."
        undrained = self._undrained()
        if undrained:
            msg += "\n\nQueues with items put and never got:\n" + "\n".join(undrained)
        if self._instr is not None:
            fates = self._instr.report()
            if fates:
                msg += "\n\nProcesses the code under test started:\n" + "\n".join(fates)
        msg += f"\n\nStacks of the test's live children:\n{body or '(none)'}"
        return Hang(msg, call=call, stacks=stacks)

    def _undrained(self) -> list[str]:
        try:
            hist = self.history
        except Exception:  # a report must not fail on a damaged log
            return []
        out = []
        by_queue: dict[str, list[str]] = {}
        for item in hist.lost():
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
        _check_target(target, self.start_method)
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
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        fork = self.start_method == "fork"
        spec = bootstrap.ChildSpec(
            name=name,
            out_path=out_path,
            err_path=err_path,
            control=child_end,
            payload=bootstrap.Payload((target, args, kwargs)),
            modules=[] if fork else _modules_for(target, args, kwargs),
            close_fds=sorted(_LIVE_CONTROL_FDS) if fork else [],
            parent_end=parent_end if fork else None,
            parent_pid=os.getpid(),
        )
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=bootstrap.run, args=(spec,), name=name, daemon=False
        )
        try:
            # 3.12+ warns when forking a multi-threaded process (queue feeder threads);
            # the test chose the fork start method on purpose.  (Older versions do not.)
            with warnings.catch_warnings() if _FORK_WARNS else contextlib.nullcontext():
                if _FORK_WARNS:
                    warnings.filterwarnings("ignore", message=".*multi-threaded.*use of fork")
                with _skip_pytest_main(self.start_method):
                    process.start()
        except Exception as exc:
            parent_end.close()
            child_end.close()
            raise SpawnError(
                f"spawn(): could not start {name!r} under the {self.start_method!r} start "
                f"method: {type(exc).__name__}: {exc}. Under spawn and forkserver the target "
                "and every argument are pickled: use module-level functions and classes, and "
                "pass queues made by this harness."
            ) from exc
        child_end.close()
        # The child's first step creates its output files, which takes a file system
        # a while (~0.2 ms each here): create them now, while the child starts.
        for path in (out_path, err_path):
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        child = Child(self, process, parent_end, name, out_path, err_path)
        child.target_name = getattr(target, "__qualname__", None) or repr(target)
        _LIVE_CONTROL_FDS.add(child._fd)
        self.children.append(child)
        return child

    # -- queues ---------------------------------------------------------------------------
    def queue(
        self,
        maxsize: int = 0,
        kind: str = "Queue",
        faults: Iterable[Fault | Gate | str] = (),
        name: str | None = None,
    ) -> FaultQueue:
        """Make a queue in the test's context, ready to pass to children.

        ``kind`` is one of ``Queue``, ``JoinableQueue``, ``SimpleQueue``,
        ``ManagerQueue``, ``ManagerJoinableQueue``.  Every operation on it is
        recorded in :attr:`history`; ``faults`` (plus the harness's own faults)
        are injected into it.
        """
        self._check_open()
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
        return self.wrap(q, faults=faults, name=name, _owned=True)

    def wrap(
        self,
        q: Any,
        faults: Iterable[Fault | Gate | str] = (),
        name: str | None = None,
        *,
        _owned: bool = False,
    ) -> FaultQueue:
        """Wrap any object with the queue API so its operations are recorded and faulted."""
        self._check_open()
        if name is None:
            name = f"q{next(self._qcounter)}"
            while any(x.name == name for x in self.queues):
                name = f"q{next(self._qcounter)}"
        elif any(x.name == name for x in self.queues):
            raise MpfaultError(f"a queue named {name!r} already exists in this test")
        plan: list[Fault] = list(self.faults)
        for f in _as_faults(faults, f"faults of queue {name!r}"):
            self._validate(f, f"faults of queue {name!r}")
            plan.append(f)
        if self._instr is not None:
            from ._runtime.instrument import exempt

            exempt(q)  # recorded by the wrapper, not twice
        fq = FaultQueue(q, plan, name, self.run)
        fq._owned = _owned  # type: ignore[attr-defined]
        self.queues.append(fq)
        return fq

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
                term.action in ("kill", "exit", "pause", "gate")
                and f.who is not None
                and fnmatch.fnmatchcase(_CONTROLLER_NAME, f.who)
            ):
                raise MpfaultError(
                    f"{where}: fault '{f}' would {term.action} the test process itself "
                    f"({_CONTROLLER_NAME!r} matches who={f.who!r}); such faults only fire "
                    "in child processes: name them with who="
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
        if self._hub is None:
            self._hub = _GateHub(self.run_dir)
        if name is None:
            name = f"g{len(self._gates) + 1}"
        if name in self._gates:
            raise MpfaultError(f"gate(): a gate named {name!r} already exists in this test")
        fault = _gate_fault(name, when=when, op=op, who=who, nth=nth)
        self._validate(fault, f"gate {name!r}")
        g = Gate(self._hub, self, fault, name)
        self._gates[name] = g
        return g

    # -- history ----------------------------------------------------------------------------
    @property
    def history(self) -> History:
        """Every operation on the harness's queues, in every process, so far."""
        return History.read(
            os.path.join(self.run_dir, "events"),
            processes={c.pid: c.name for c in self.children if c._process.pid is not None},
        )

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
        problems: list[str] = []
        try:
            if self._instr is not None:
                self._instr.begin_close()
            problems = self._stop_children()
        finally:
            if self._instr is not None:
                self._instr.end_close()
            self.outputs = self.collect_outputs()
            for c in self.children:
                c._close_conn()
            self._release_queues()
            if self._manager is not None:
                with contextlib.suppress(Exception):
                    self._manager.shutdown()
                proc = getattr(self._manager, "_process", None)
                if proc is not None and proc.is_alive():
                    proc.kill()
                    proc.join(2.0)
            if self._hub is not None:
                self._hub.close()
            _state.forget(self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return problems

    def _stop_children(self) -> list[str]:
        procs = [c for c in self.children if c._process.pid is not None]
        pids = [c.pid for c in procs]
        family = _descendants(pids) | {c.pid for c in procs if c.is_alive()}
        if not family:
            return []
        for c in procs:
            _signal_group(c.pid, signal.SIGTERM)
            _signal_group(c.pid, signal.SIGCONT)
        for pid in family:
            _kill(pid, signal.SIGTERM)
            _kill(pid, signal.SIGCONT)
        _wait_all([c for c in procs if c.is_alive()], self.grace)
        for c in procs:
            _signal_group(c.pid, signal.SIGKILL)
        for pid in family:
            _kill(pid, signal.SIGKILL)
        _wait_all([c for c in procs if c.is_alive()], 5.0)
        problems = []
        for c in procs:
            c._process.join(0)
            if c.is_alive():
                problems.append(f"child {c.name!r} (pid {c.pid}) could not be reaped")
        return problems

    def _release_queues(self) -> None:
        for fq in self.queues:
            q = fq.wrapped
            # a queue the test process put into must not block pytest's exit (row 25)
            for meth in ("cancel_join_thread", "close"):
                f = getattr(q, meth, None)
                if f is not None and getattr(fq, "_owned", False):
                    with contextlib.suppress(Exception):
                        f()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, sig)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def _wait_all(children: list[Child], timeout: float) -> None:
    end = time.monotonic() + timeout
    pending = [c for c in children if c.is_alive()]
    while pending:
        left = end - time.monotonic()
        if left <= 0:
            return
        multiprocessing.connection.wait([c._process.sentinel for c in pending], left)
        pending = [c for c in pending if c.is_alive()]


@contextlib.contextmanager
def _skip_pytest_main(method: str) -> Any:
    """Do not make spawn/forkserver children re-import pytest's console script.

    Children normally re-run the parent's ``__main__`` module; when that is the
    ``pytest`` script it only imports pytest (~0.2 s per child) and defines nothing
    a child could need.  (``python -m pytest`` is skipped by multiprocessing itself.)
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    if (
        method == "fork"
        or getattr(main, "__spec__", None) is not None
        or os.path.basename(path) not in ("pytest", "py.test")
    ):
        yield
        return
    from multiprocessing import spawn as _spawn

    original = _spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        return data

    _spawn.get_preparation_data = preparation_data
    try:
        yield
    finally:
        _spawn.get_preparation_data = original


_PRELOADED = False


def _preload_forkserver(ctx: BaseContext) -> None:
    """Have the fork server import the child runtime once, so children start fast.

    The queue wrapper too (with the fault plans and the event log): a child given a
    harness queue would import them otherwise, every one of them.
    """
    global _PRELOADED
    if not _PRELOADED:
        _PRELOADED = True
        with contextlib.suppress(Exception):
            ctx.set_forkserver_preload(["mpfault._runtime.bootstrap", "mpfault._runtime.fqueue"])


def _as_faults(items: Iterable[Fault | Gate | str], where: str) -> list[Fault]:
    out: list[Fault] = []
    if isinstance(items, (str, Fault, Gate)):
        items = [items]
    for x in items:
        if isinstance(x, Gate):
            out.append(x.fault)
        elif isinstance(x, Fault):
            out.append(x)
        elif isinstance(x, str):
            out.extend(_parse_faults(x, source=where))
        else:
            raise MpfaultError(
                f"{where}: {x!r} is not a fault (use mpfault.faults or a spec string)"
            )
    return out
