"""Code that runs in the child processes the contract checks start.

Every target is a module-level function (spawn and forkserver import this module) and
starts with :func:`_guard`, a daemon thread that ends the child when its parent dies,
so that no child outlives an interrupted contract run.  Results go back to the parent
over a pipe.  This module imports only the standard library.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from multiprocessing.managers import BaseManager
from posix import _exit as _real_exit  # see below
from typing import Any

# _real_exit is os._exit as CPython has it: coverage.py (patch = ["_exit"]) replaces
# os._exit with a function that saves its data first, which gives a queue's feeder time
# to flush, and rows 27 and 30 are about exactly what os._exit() does to a feeder's buffer

__all__ = [
    "GLOBAL_QUEUE",
    "FailsToUnpickle",
    "RemoteQueueClient",
    "RemoteQueueServer",
    "Unpicklable",
    "blocking_get",
    "create_put_return",
    "guarded_gets",
    "guarded_puts",
    "noop",
    "preflight_child",
    "put_and_exit",
    "put_one",
    "sentinel_consumer",
    "use_global_queue",
]

#: A module-level queue used by the row 67 check (globals are not shared under spawn).
GLOBAL_QUEUE: Any = None


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - not a multiprocessing child
        return
    try:
        parent.join()
    except (OSError, ValueError):  # pragma: no cover
        return
    os._exit(70)


def _guard() -> None:
    threading.Thread(target=_watch_parent, name="mpfault-parent-watch", daemon=True).start()


class Unpicklable:
    """An object whose pickling raises ``TypeError`` (rows 36-38, 49)."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle 'Unpicklable' object")

    def __repr__(self) -> str:
        return "Unpicklable()"


def _fail_on_load(message: str) -> Any:
    raise ValueError(message)


class FailsToUnpickle:
    """An object that pickles fine but raises ``ValueError`` when unpickled (row 39)."""

    def __reduce__(self) -> Any:
        return (_fail_on_load, ("unpickling FailsToUnpickle fails",))


def preflight_child(q: Any, report: Any) -> None:
    """Get one item from *q*, put ``("pong", item)`` back; report ``(status, text)``."""
    _guard()
    step = "q.get()"
    try:
        item = q.get()
        step = "q.put(('pong', item))"
        q.put(("pong", item))
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (no message)"
        report.send(("error", f"{step} raised {text}"))
        return
    report.send(("ok", ""))


def noop() -> None:
    """Do nothing (a child whose start is what is being observed)."""


def put_one(q: Any, item: Any) -> None:
    """Put *item* on *q* and return."""
    q.put(item)


def put_and_exit(
    q: Any,
    items: list[Any],
    how: str,
    started: Any = None,
    done: Any = None,
    err: Any = None,
    bad_last: bool = False,
) -> None:
    """Put *items* on *q*, then end the process in the way *how* names.

    Args:
        q: the queue.
        items: what to put, in order.
        how: ``return`` (normal exit), ``os_exit`` (``os._exit(0)``), ``sigkill``
            (SIGKILL to itself), ``cancel`` (``cancel_join_thread()`` then return),
            ``close_join_os_exit`` (``close(); join_thread(); os._exit(0)``) or
            ``hold`` (wait until killed).
        started: a pipe end to send ``"started"`` on before the first put.
        done: a pipe end to send ``"done"`` on after the last put returned.
        err: a path to redirect this process's stderr to (fd 2).
        bad_last: put an :class:`Unpicklable` after *items* (it cannot be sent as an
            argument: spawn pickles the arguments).
    """
    _guard()
    if err is not None:
        fd = os.open(err, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        os.close(fd)
    if started is not None:
        started.send("started")
    for item in items:
        q.put(item)
    if bad_last:
        q.put(Unpicklable())
    if how == "cancel":
        q.cancel_join_thread()
    if done is not None:
        done.send("done")
    if how == "os_exit":
        _real_exit(0)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "close_join_os_exit":
        q.close()
        q.join_thread()
        _real_exit(0)
    elif how == "hold":
        threading.Event().wait(120)


def create_put_return(method: str, size: int, done: Any) -> None:
    """Create a Queue in this process, put *size* bytes on it nobody reads, return."""
    _guard()
    q = multiprocessing.get_context(method).Queue()
    q.put(b"x" * size)
    done.send("done")


def guarded_puts(q: Any, tag: int, n: int, report: Any, patience: float = 20.0) -> None:
    """Put ``(tag, 0)`` ... ``(tag, n-1)`` with ``if not q.full(): q.put_nowait(x)``.

    An item whose put_nowait() raised Full is tried again, so all *n* are put unless
    *patience* seconds run out.  Sends ``(tag, ok_seqs, full_raised, full_seen, error)``.
    """
    _guard()
    ok: list[int] = []
    full_raised = full_seen = 0
    error = None
    end = time.monotonic() + patience
    try:
        while len(ok) < n and time.monotonic() < end:
            if q.full():
                full_seen += 1
                # Yield the GIL so that this process's feeder thread can write the
                # items already put (a spin holding the GIL starves it); not a wait.
                time.sleep(0)
                continue
            try:
                q.put_nowait((tag, len(ok)))
            except queue.Full:
                full_raised += 1
            else:
                ok.append(len(ok))
    except Exception as exc:
        error = f"put_nowait() raised {type(exc).__name__}({str(exc)!r})"
    report.send((tag, ok, full_raised, full_seen, error))


def guarded_gets(q: Any, report: Any, ready: Any = None) -> None:
    """Loop ``if not q.empty(): q.get_nowait()`` until ``None``; report what was got.

    Sends ``"ready"`` on *ready* first (if given), then ``(got, empty_raised, error)``
    on *report*.
    """
    _guard()
    if ready is not None:
        ready.send("ready")
    got: list[Any] = []
    empty_raised = 0
    error = None
    try:
        while True:
            if q.empty():
                continue
            try:
                item = q.get_nowait()
            except queue.Empty:
                empty_raised += 1
                continue
            if item is None:
                break
            got.append(item)
    except Exception as exc:
        error = f"get_nowait()/empty() raised {type(exc).__name__}({str(exc)!r})"
    report.send((got, empty_raised, error))


def blocking_get(q: Any, ready: Any, prime: bool = False) -> None:
    """Announce on *ready*, then block in ``q.get()`` (until killed or an item comes).

    With *prime*, call ``q.qsize()`` first so that a manager proxy has connected
    before the announcement (the blocking call is then the next system call).
    """
    _guard()
    if prime:
        q.qsize()
    ready.send("ready")
    q.get()


def sentinel_consumer(q: Any, report: Any, name: str) -> None:
    """``for item in iter(q.get, None)``: count the items, then send ``(name, count)``."""
    _guard()
    n = 0
    for _ in iter(q.get, None):
        n += 1
    report.send((name, n))


def use_global_queue(report: Any) -> None:
    """Report whether :data:`GLOBAL_QUEUE` exists here; if it does, put on it."""
    _guard()
    if GLOBAL_QUEUE is None:
        report.send("absent")
        return
    GLOBAL_QUEUE.put("via-global")
    report.send("present")


_REMOTE_QUEUE: queue.Queue[Any] | None = None


def remote_queue() -> queue.Queue[Any]:
    """The queue a :class:`RemoteQueueServer` serves (created on first use)."""
    global _REMOTE_QUEUE
    if _REMOTE_QUEUE is None:
        _REMOTE_QUEUE = queue.Queue()
    return _REMOTE_QUEUE


class RemoteQueueServer(BaseManager):
    """The server side of the "Using a remote manager" example (row 61)."""


class RemoteQueueClient(BaseManager):
    """A client that only knows the name ``get_queue`` (row 61)."""


RemoteQueueServer.register("get_queue", callable=remote_queue)
RemoteQueueClient.register("get_queue")
