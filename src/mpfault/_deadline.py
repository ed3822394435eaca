"""A deadline for blocking calls in the test process's main thread.

The harness bounds its own waits (``result()``, ``join()``, gates); a call it did not
make — ``q.get()`` with no timeout in the test itself, ``pool.map()``, a lock — would
block past the deadline forever.  A :class:`Watchdog` ends such a call: a thread waits
for the deadline, builds the error (a :class:`~mpfault.Hang` with every child's stack,
say) while the main thread is still blocked, then sends a signal to the main thread
(``pthread_kill``) whose handler raises that error there.

Why this works for any blocking call: on Linux a signal interrupts the system call
the main thread sleeps in (``read``, ``select``, ``sem_wait``/``futex`` of a lock
acquire, ``waitpid``); CPython then runs the Python signal handler before retrying the
call (PEP 475), and an exception the handler raises ends the call.  Lock acquires
(``threading.Lock``, ``multiprocessing`` semaphores) are interruptible this way on
POSIX since Python 3.2.

Coexistence: the signal is a real-time one (``SIGRTMIN + 5``) that neither pytest-timeout
(``SIGALRM``) nor pytest uses; the previous handler is restored when the last watchdog
is disarmed.  Arming is only possible from the main thread (Python runs signal handlers
there); elsewhere :meth:`Watchdog.arm` returns False and nothing is bounded.

This module imports nothing from mpfault: the harness passes the error to raise.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["SIGNAL", "Watchdog", "alarm_deferred", "bounded"]

#: the signal the watchdog sends to the main thread
SIGNAL: int = int(signal.SIGRTMIN) + 5  # type: ignore[attr-defined,unused-ignore]

_lock = threading.Lock()
_active: list[Watchdog] = []
_previous: Any = None
_installed = False


def _handler(signum: int, frame: FrameType | None) -> None:
    """Raise the error of a watchdog that fired (in the main thread)."""
    with _lock:
        fired = [w for w in _active if w._error is not None and not w._raised]
        for w in fired:
            w._raised = True
    if fired:
        raise fired[0]._error  # type: ignore[misc]


def _install() -> None:
    global _previous, _installed
    if not _installed:
        _previous = signal.signal(SIGNAL, _handler)
        _installed = True


def _uninstall() -> None:
    global _previous, _installed
    if _installed:
        with contextlib.suppress(ValueError, TypeError):
            if signal.getsignal(SIGNAL) is _handler:
                signal.signal(SIGNAL, _previous if _previous is not None else signal.SIG_DFL)
        _installed = False
        _previous = None


class Watchdog:
    """Raises ``make_error()`` in the main thread when a deadline passes.

    ``make_error`` runs in the watchdog's thread at the deadline, while the main
    thread is still blocked (it may talk to child processes; keep it bounded); None
    from it means "not now" (nothing is raised).  The error is raised once;
    :meth:`disarm` before the deadline and nothing happens.

    ``again``: the code that unwinds from the error (a ``finally`` block, a context
    manager's exit: ``with Pool(...)`` terminates the pool) may block again, for good;
    while the watchdog is armed, every ``every`` seconds after the error was raised,
    ``again()`` (None: nothing) is raised in the main thread too.
    """

    def __init__(
        self,
        make_error: Callable[[], BaseException | None],
        name: str = "mpfault-deadline",
        again: Callable[[], BaseException | None] | None = None,
        every: float = 2.0,
    ) -> None:
        self._make_error = make_error
        self._again = again
        self._every = every
        self._name = name
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._raised = False
        self._sent = False

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` or :meth:`disarm` was called."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop watching, from any thread, without waiting (see :meth:`disarm`)."""
        self._cancel.set()

    @property
    def fired(self) -> bool:
        """Whether the deadline passed and the error was sent to the main thread."""
        return self._sent

    def arm(self, at: float) -> bool:
        """Start watching: at ``time.monotonic() >= at`` the error is raised in the main
        thread.  False (nothing armed) when not called from the main thread."""
        if threading.current_thread() is not threading.main_thread() or self._thread:
            return False
        try:
            with _lock:
                _install()
                _active.append(self)
        except (ValueError, OSError):  # signals unavailable here
            return False
        main = threading.main_thread().ident
        assert main is not None

        def watch() -> None:
            while not self._cancel.wait(max(0.0, at - time.monotonic())):
                if time.monotonic() >= at:
                    break
            make = self._make_error
            while not self._cancel.is_set():
                try:
                    err = make()
                except BaseException as e:  # the error must still end the call
                    err = e
                with _lock:
                    if self._cancel.is_set() or err is None:
                        return
                    self._error = err
                    self._raised = False
                    self._sent = True
                with contextlib.suppress(OSError, ValueError):
                    signal.pthread_kill(main, SIGNAL)
                if self._again is None:
                    return
                make = self._again
                if self._cancel.wait(self._every):
                    return

        self._thread = threading.Thread(target=watch, name=self._name, daemon=True)
        self._thread.start()
        return True

    def disarm(self) -> None:
        """Stop watching; restore the signal handler if no other watchdog is armed.

        A signal already sent and not yet handled is absorbed here (bounded wait),
        never raised later."""
        self._cancel.set()
        t = self._thread
        if t is not None:
            t.join(10.0)
        with _lock:
            pending = self._sent and not self._raised
            self._raised = True  # a late signal finds nothing to raise
        if pending and threading.current_thread() is threading.main_thread():
            # let a signal in flight reach its (now silent) handler before restoring
            # the previous one: Event.wait runs pending Python signal handlers
            waiter = threading.Event()
            for _ in range(5):
                waiter.wait(0.01)
        with _lock:
            if self in _active:
                _active.remove(self)
            if not _active and threading.current_thread() is threading.main_thread():
                _uninstall()
        self._thread = None


@contextlib.contextmanager
def bounded(seconds: float, make_error: Callable[[], BaseException]) -> Iterator[Watchdog]:
    """Bound every blocking call in the block: after ``seconds`` the call the main
    thread is in ends in ``make_error()``.

    >>> with bounded(5, lambda: TimeoutError("pool.map() took over 5 s")):  # doctest: +SKIP
    ...     pool.map(work, items)
    """
    w = Watchdog(make_error)
    w.arm(time.monotonic() + seconds)
    try:
        yield w
    finally:
        w.disarm()


@contextlib.contextmanager
def alarm_deferred() -> Iterator[None]:
    """Hold SIGALRM (pytest-timeout's ``signal`` method) back until the block ends.

    For a bounded cleanup (the harness's teardown: every wait in it has a bound) that
    must not be cut in half: pytest-timeout's ``pytest.fail`` raised in the middle of it
    left children unreaped.  A SIGALRM that comes meanwhile is kept, and its handler
    runs when the block ends, as if the signal had just come.  Only in the main thread
    (where Python runs signal handlers), and only over a Python handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGALRM)
    if not callable(previous):
        yield
        return
    came: list[tuple[int, FrameType | None]] = []

    def keep(signum: int, frame: FrameType | None) -> None:
        came.append((signum, frame))

    signal.signal(signal.SIGALRM, keep)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        if came:
            previous(*came[0])
