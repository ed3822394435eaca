"""A child process of a harness: waiting for it, its result, its stack, its output,
and stopping whole process trees at teardown.

The child's side of the control channel is :mod:`mpfault._runtime.bootstrap`; the
messages both ends share are :mod:`mpfault._runtime.control`.  This module does not
import pytest.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ._runtime import control, procfs
from ._runtime.errors import LOST_FORKSERVER_STATUS, ChildError

if TYPE_CHECKING:
    from ._runtime.errors import Hang

__all__ = ["Child", "close_channels", "live_control_fds", "signal_name", "stop_children"]

#: control-channel ends held by this process, for every live child of every harness;
#: a forked child closes all of them, so their EOF still means "the test process died"
_LIVE_CONTROL_FDS: set[int] = set()


def live_control_fds() -> list[int]:
    """The control-channel ends this process holds (a forked child closes them)."""
    return sorted(_LIVE_CONTROL_FDS)


def signal_name(sig: int) -> str:
    """The name of signal ``sig`` (``SIGKILL``), or ``signal N``."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _wait_stopped_child(pid: int, timeout: float) -> bool:
    """Block (in a helper thread, so the wait is bounded) until child ``pid`` stops."""
    done = threading.Event()

    def waiter() -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PID, pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        done.set()

    threading.Thread(target=waiter, daemon=True, name="mpfault-wait-stopped").start()
    return done.wait(timeout)


class Child:
    """A process started by :meth:`Harness.spawn`."""

    #: True for a process the code under test started itself (instrumentation adopts it)
    adopted = False

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        name: str,
        out_path: str,
        err_path: str,
        *,
        start_method: str,
        limit: Callable[[float | None], float],
        hang: Callable[[str, float], Hang],
        last_operation: Callable[[int], str | None],
        target_name: str = "",
    ) -> None:
        self._process = process
        self._start_method = start_method
        self._limit = limit
        self._hang = hang
        self._last_operation = last_operation
        self._conn: Connection | None = conn
        self.name = name
        self.out_path = out_path
        self.err_path = err_path
        self._outcome: control.Result | control.Error | None = None
        self._stack: str | None = None
        self._fd = conn.fileno()
        _LIVE_CONTROL_FDS.add(self._fd)
        #: the qualified name of the target function
        self.target_name = target_name

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
    def _handle(self, msg: control.Message) -> None:
        if isinstance(msg, control.Stack):
            self._stack = msg.text
        elif self._outcome is None:
            self._outcome = msg

    def _pump(self, timeout: float | None) -> bool:
        """Read control messages; block up to ``timeout``. False when the channel is closed."""
        conn = self._conn
        if conn is None:
            return False
        try:
            if not conn.poll(timeout):
                return True
            while True:
                self._handle(control.receive(conn))
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
        limit = self._limit(timeout)
        end = time.monotonic() + limit
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                raise self._hang(call, limit)
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
        if isinstance(self._outcome, control.Result):
            return pickle.loads(self._outcome.value)
        out = self._outcome
        qual, msg, text, blob = out.exc_type, out.message, out.traceback, out.exception
        exc: BaseException | None = None
        if blob is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(blob)
        raise self._error(
            f"raised {qual}: {msg}\n\nChild traceback:\n{text.rstrip()}",
            exc_type=qual,
            exc_message=msg,
            child_traceback=text,
            exitcode=self.exitcode,
            exception=exc,
        )

    def _error(self, what: str, **details: Any) -> ChildError:
        """A ChildError: this child (name, pid, start method) ``what``."""
        return ChildError(
            f"child {self.name!r} (pid {self.pid}, {self._start_method}) {what}",
            name=self.name,
            pid=self.pid,
            **details,
        )

    def _death_error(self) -> ChildError:
        code = self.exitcode
        sig: str | None = None
        if code is not None and code < 0:
            sig = signal_name(-code)
            how = f"was killed by {sig}"
        else:
            how = f"exited with code {code}"
            if code == 255 and self._start_method == "forkserver":
                how += f" (or {LOST_FORKSERVER_STATUS})"
        last = self._last_operation(self.pid)
        extra = f"\nIts last queue operation: {last}" if last else ""
        return self._error(f"{how} before returning a result{extra}", exitcode=code, signal=sig)

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
        limit = self._limit(timeout)
        if self.start_method != "forkserver" and self.is_alive():
            # our own child: the kernel tells us when it stops
            if _wait_stopped_child(self.pid, limit):
                return
        else:
            # a fork-server child is not ours to wait for: watch its state
            end = time.monotonic() + limit
            while time.monotonic() < end:
                if procfs.all_stopped(self.pid):
                    return
                os.sched_yield()
        if procfs.state(self.pid) not in ("T", "t"):
            raise self._hang(f"wait_stopped(timeout={timeout}) of {self.name!r}", limit)

    @property
    def start_method(self) -> str:
        """The start method the child was started with."""
        return self._start_method

    def resume(self) -> None:
        """Resume a paused process (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def stack(self, timeout: float = 5.0) -> str:
        """The child's current Python stack, every thread, as text (with source lines)."""
        if not self._process.is_alive():
            return f"(process exited with code {self.exitcode})"
        state = procfs.state(self.pid)
        if state == "T":
            return "(process is stopped by SIGSTOP: no stack can be taken until it resumes)"
        if self._conn is None:
            return "(control channel closed)"
        self._stack = None
        try:
            self._conn.send_bytes(control.STACK_REQUEST)
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


Child.__module__ = "mpfault"


def close_channels(children: list[Child]) -> None:
    """Close the control channels of ``children`` (their results are read by then)."""
    for c in children:
        c._close_conn()


def stop_children(children: list[Child], grace: float) -> list[str]:
    """Stop every child and its descendants: SIGTERM (and SIGCONT, for stopped ones),
    SIGKILL after ``grace`` seconds, reap; every wait bounded.  Returns the children
    that could not be reaped, as problems."""
    procs = [c for c in children if c._process.pid is not None]
    pids = [c.pid for c in procs]
    family = procfs.descendants(pids) | {c.pid for c in procs if c.is_alive()}
    if not family:
        return []
    for c in procs:
        _signal_group(c.pid, signal.SIGTERM)
        _signal_group(c.pid, signal.SIGCONT)
    for pid in family:
        _kill(pid, signal.SIGTERM)
        _kill(pid, signal.SIGCONT)
    _wait_all([c for c in procs if c.is_alive()], grace)
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
