"""Exceptions raised in the test process by the harness."""

from __future__ import annotations

__all__ = ["LOST_FORKSERVER_STATUS", "ChildError", "Hang", "MpfaultError", "SpawnError"]

#: why a forkserver child's exit code can read 255 whatever the child did
LOST_FORKSERVER_STATUS = (
    "the fork server lost the child's exit status, which then reads 255 "
    "(CPython gh-140867, under load)"
)


class MpfaultError(Exception):
    """Base class of the errors pytest-mpfault raises."""


class SpawnError(MpfaultError):
    """A child could not be started (its target or arguments cannot reach it)."""


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

    def __init__(self, message: str, *, call: str, stacks: dict[str, str]) -> None:
        super().__init__(message)
        self.call = call
        self.stacks = stacks
