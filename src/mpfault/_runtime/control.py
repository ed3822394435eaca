"""The control channel between the test process and a child: named messages.

A child (:mod:`.bootstrap`) sends :class:`Result`, :class:`Error` and :class:`Stack`;
the test process (:class:`mpfault.Child`) reads them with :func:`receive` and asks for
a stack with :data:`STACK_REQUEST`.  Messages are plain data (named tuples of str and
bytes), pickled by the C pickler.  Standard library only.
"""

from __future__ import annotations

import pickle
import threading
from multiprocessing.connection import Connection
from typing import NamedTuple

__all__ = ["STACK_REQUEST", "Error", "Message", "Result", "Stack", "receive", "send"]

#: parent -> child: send your stack (every thread)
STACK_REQUEST = b"stack"


class Result(NamedTuple):
    """The target returned: its pickled return value."""

    value: bytes


class Error(NamedTuple):
    """The target raised (or could not be loaded, or its result could not be pickled)."""

    #: the exception's qualified name (``module.Name``; bare for builtins)
    exc_type: str
    message: str
    #: the formatted traceback, as the child printed it
    traceback: str
    #: the pickled exception, where it could be pickled
    exception: bytes | None


class Stack(NamedTuple):
    """The child's stack, every thread, as text (the answer to STACK_REQUEST)."""

    text: str


Message = Result | Error | Stack

_send_lock = threading.Lock()


def send(conn: Connection, msg: Message) -> None:
    """Send ``msg`` (from any thread of the child)."""
    data = pickle.dumps(msg)  # outside the lock
    with _send_lock:
        conn.send_bytes(data)


def receive(conn: Connection) -> Message:
    """The next message (blocks; EOFError or OSError once the channel is closed)."""
    msg = pickle.loads(conn.recv_bytes())
    if not isinstance(msg, (Result, Error, Stack)):
        raise OSError(f"unexpected message on the control channel: {msg!r}")
    return msg
