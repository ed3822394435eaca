"""``kill(during)``: enter a queue operation as far as it blocks or takes a lock, then die.

A process killed *during* an operation is one that was blocked inside it: a worker
idle in ``get()`` holding the queue's read lock, a producer whose feeder thread holds
the write lock while it sends, a writer that dies half-way through a message.  A lock
of ``multiprocessing`` is a bare POSIX semaphore: nobody releases it for a dead
process, so every other process that needs it blocks for good (the ``Pool`` wedge).

:func:`enter` brings the calling process into that state deterministically, exactly
as the real operation would (same locks, same order, the call's own ``block`` and
``timeout``), and says what it holds; the kill follows at once.  Standard library
only (this module runs in child processes).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .faulty import Call

__all__ = ["HOLDING", "enter"]

#: the phrases :func:`enter` says, by the lock held (the history reads them back)
HOLDING: Final = {
    "read": "holding the read lock",
    "write": "holding the write lock",
    "cond": "holding the lock of task_done()/join()",
}
_GETS: Final = frozenset({"get", "get_nowait"})
_PUTS: Final = frozenset({"put", "put_nowait"})
_SENDS: Final = frozenset({"send", "send_bytes"})
_WAITS: Final = frozenset({"recv", "recv_bytes", "poll", "join"})


def enter(call: Call) -> str:
    """Go into ``call``'s operation as far as it blocks, holding what it would hold;
    return what that is, in words (``"holding the read lock"``)."""
    from multiprocessing.connection import Connection
    from multiprocessing.queues import JoinableQueue, Queue, SimpleQueue

    q: Any = call.queue
    op = call.op
    if not call.st.own_process:
        return "its call in flight at the server"
    if isinstance(q, Connection):
        if op in _SENDS:
            return _torn_send(q, call)
        return "blocked in the pipe" if op in _WAITS else "on entry"
    if isinstance(q, Queue):
        if op in _GETS:
            block, timeout = call.block_timeout()
            return _take(q._rlock, block, timeout, "read")  # type: ignore[attr-defined]
        if op in _PUTS:
            return _queue_put(q, call)
        if op == "task_done" and isinstance(q, JoinableQueue):
            return _take(q._cond, True, None, "cond")  # type: ignore[attr-defined]
        return "blocked inside it" if op in _WAITS else "on entry"
    if isinstance(q, SimpleQueue):
        if op == "get":
            return _take(q._rlock, True, None, "read")  # type: ignore[attr-defined]
        if op == "put":
            lock = q._wlock  # type: ignore[attr-defined]
            return "on entry" if lock is None else _take(lock, True, None, "write")
        return "on entry"
    return f"on entry ({type(q).__name__} has no lock mpfault knows)"


def _take(lock: Any, block: bool, timeout: Any, which: str) -> str:
    if timeout is not None and timeout < 0:
        timeout = 0
    got = lock.acquire(block, timeout) if block else lock.acquire(False)
    if got:
        return HOLDING[which]
    return f"waiting for the {which} lock (taken by another process)"


def _queue_put(q: Any, call: Call) -> str:
    """A Queue's put, killed while its feeder holds the write lock: the item is taken
    in (its room, and for a JoinableQueue its unfinished task) and never sent."""
    import queue

    from .faulty import put_unflushed

    try:  # the put as far as other processes see it; its flush never runs
        put_unflushed(q, None, *call.block_timeout())
    except ValueError:
        return "on entry (the queue is closed)"
    except queue.Full:
        return "waiting for room in the full queue"
    lock = q._wlock
    if lock is None:  # pragma: no cover - Windows
        return "with the item taken in and never sent"
    lock.acquire()  # as the feeder thread does: blocks while another sender holds it
    return HOLDING["write"] + ", the item taken in and never sent"


def _torn_send(conn: Any, call: Call) -> str:
    """Write the message's length and half of it, as a writer killed in mid-send."""
    from multiprocessing.reduction import ForkingPickler

    args, kwargs = call.args, call.kwargs
    if call.op == "send":
        obj = args[0] if args else kwargs.get("obj")
        buf = bytes(ForkingPickler.dumps(obj))
    else:
        data = memoryview(args[0] if args else kwargs["buf"]).cast("B")
        offset = args[1] if len(args) > 1 else kwargs.get("offset", 0)
        size = args[2] if len(args) > 2 else kwargs.get("size")
        buf = bytes(data[offset : None if size is None else offset + size])
    n = len(buf)
    header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
    conn._send(header + buf[: n // 2])
    return f"half-way through sending a message ({n // 2} of {n} bytes written)"
