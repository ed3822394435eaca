"""Every exception pytest-mpfault raises, under one root: :class:`MpfaultError`.

Each one is also the builtin exception users already catch for its kind of failure:
a bad fault spec is a ``ValueError``, a failed checker (history, timing) an
``AssertionError``.  Standard library only, so the child runtime can raise them too;
``mpfault`` exports every class here.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LOST_FORKSERVER_STATUS",
    "ChildError",
    "FaultSpecError",
    "Hang",
    "HistoryError",
    "MpfaultError",
    "SpawnError",
    "TimingError",
]

#: why a forkserver child's exit code can read 255 whatever the child did
LOST_FORKSERVER_STATUS = (
    "the fork server lost the child's exit status, which then reads 255 "
    "(CPython gh-140867, under load)"
)


class MpfaultError(Exception):
    """Base class of every error pytest-mpfault raises (``except mpfault.MpfaultError``)."""

    __module__ = "mpfault"


class SpawnError(MpfaultError):
    """A child could not be started (its target or arguments cannot reach it)."""

    __module__ = "mpfault"


class FaultSpecError(MpfaultError, ValueError):
    """A fault, or fault spec text, is invalid (also a ``ValueError``).

    The message is one line.  For text given to :func:`mpfault.faults.parse` it names
    the source and the offending spec: ``bad fault spec 'put:dorp' from --mpfault:
    unknown action 'dorp' (expected one of: ...)``.  ``reason`` is the part after the
    colon; ``spec`` and ``source`` are None for faults built in Python.
    """

    __module__ = "mpfault"

    def __init__(self, reason: str, spec: str | None = None, source: str | None = None) -> None:
        reason = " ".join(reason.splitlines())
        self.reason = reason
        self.spec = spec
        self.source = source
        if spec is not None:
            shown = spec if len(spec) <= 200 else spec[:200] + "..."
            super().__init__(f"bad fault spec {shown!r} from {source}: {reason}")
        else:
            super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.spec, self.source))


class ChildError(MpfaultError):
    """A child process failed: its target raised, or it died by a signal or an exit code.

    Attributes:
        name: the child's process name.
        pid: its pid.
        exc_type: the qualified name of the exception the target raised, or None.
        exc_message: that exception's message, or None.
        child_traceback: the child's formatted traceback, or None.
        exitcode: the process's exit code (negative: killed by that signal), if it exited.
        signal: the name of the signal that killed it (``"SIGKILL"``), or None.
        exception: the original exception object, when it could be pickled back.
    """

    __module__ = "mpfault"

    def __init__(
        self,
        message: str,
        *,
        name: str,
        pid: int | None,
        exc_type: str | None = None,
        exc_message: str | None = None,
        child_traceback: str | None = None,
        exitcode: int | None = None,
        signal: str | None = None,
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.pid = pid
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.child_traceback = child_traceback
        self.exitcode = exitcode
        self.signal = signal
        self.exception = exception


class Hang(MpfaultError):
    """A wait on a child (or the whole test) ran out of time.

    The message says which call timed out and holds the Python stack of every
    live child of the test (all threads), so the line each one blocks on is
    visible.

    Attributes:
        call: the call that timed out, e.g. ``"result(timeout=2.0) of 'consumer-1'"``.
        stacks: child name -> stack text, for every live child.
    """

    __module__ = "mpfault"

    def __init__(self, message: str, *, call: str, stacks: dict[str, str]) -> None:
        super().__init__(message)
        self.call = call
        self.stacks = stacks


class HistoryError(MpfaultError, AssertionError):
    """A checker of the history found a violation (lost, duplicated, reordered items)."""

    __module__ = "mpfault"


class TimingError(MpfaultError, AssertionError):
    """A timed queue call did not raise, raised the wrong exception, or took the wrong time.

    Attributes:
        elapsed: seconds the block took (``nan`` if not measured).
        expected: the timeout (or limit) in seconds.
        exception: the exception the block raised, if any.
    """

    __module__ = "mpfault"

    def __init__(
        self,
        message: str,
        *,
        elapsed: float,
        expected: float,
        exception: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.elapsed = elapsed
        self.expected = expected
        self.exception = exception
