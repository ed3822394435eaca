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

__all__ = ["STACK_REQUEST", "Error", "Message", "Result", "Stack", "receive", "send"]

#: parent -> child: send your stack (every thread)
STACK_REQUEST = b"stack"


class _Message:
    """A message: named fields, pickled as (class, fields) (plain classes: a named
    tuple would cost every child a millisecond to define)."""

    __slots__: tuple[str, ...] = ()
    #: the fields, in the order the constructor takes them
    _fields: tuple[str, ...] = ()

    def __init__(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), tuple(getattr(self, name) for name in self._fields))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__reduce__() == other.__reduce__()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({fields})"


class Result(_Message):
    """The target returned: its pickled return value."""

    _fields = ("value",)
    __slots__ = _fields
    value: bytes

    def __init__(self, value: bytes) -> None:
        super().__init__(value)


class Error(_Message):
    """The target raised (or could not be loaded, or its result could not be pickled).

    ``exc_type``: the exception's qualified name (``module.Name``; bare for builtins);
    ``traceback``: the formatted traceback, as the child printed it; ``exception``:
    the pickled exception, where it could be pickled.
    """

    _fields = ("exc_type", "message", "traceback", "exception")
    __slots__ = _fields
    exc_type: str
    message: str
    traceback: str
    exception: bytes | None

    def __init__(
        self, exc_type: str, message: str, traceback: str, exception: bytes | None
    ) -> None:
        super().__init__(exc_type, message, traceback, exception)


class Stack(_Message):
    """The child's stack, every thread, as text (the answer to STACK_REQUEST)."""

    _fields = ("text",)
    __slots__ = _fields
    text: str

    def __init__(self, text: str) -> None:
        super().__init__(text)


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
