"""Helpers of the test suite: waiting for processes that are not our children, and a
queue with no process behind it."""

from __future__ import annotations

import os
import queue
import select
import time
from collections.abc import Iterable
from typing import Any

from mpfault._runtime.procfs import alive as alive


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait (on pidfds, no polling) until every pid has exited; return those still alive."""
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
    end = time.monotonic() + timeout
    try:
        while fds:
            left = end - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(fds.values()), [], [], left)
            for pid, fd in list(fds.items()):
                if fd in ready:
                    os.close(fd)
                    del fds[pid]
    finally:
        for fd in fds.values():
            os.close(fd)
    return [pid for pid in fds if alive(pid)]


def hang_showing(child: object, text: str, tries: int = 60, timeout: float = 0.5) -> Exception:
    """The ``Hang`` of ``child.result(timeout)`` once its stacks show ``text``.

    A child that has just been started, or released, may take a moment on a loaded
    machine to reach the line it will block on; this waits for the observable state
    (the stack) rather than for a fixed time.
    """
    from mpfault import Hang

    last: Exception | None = None
    for _ in range(tries):
        try:
            child.result(timeout=timeout)  # type: ignore[attr-defined]
        except Hang as e:
            last = e
            if text in str(e):
                return e
        else:
            raise AssertionError(f"{child!r} returned instead of blocking at {text!r}")
    raise AssertionError(f"{child!r} never blocked at {text!r}:\n{last}")


class ListQueue:
    """A third-party queue: the queue API (the names of ``multiprocessing.Queue``'s
    arguments), a list behind it, no process and no thread."""

    def __init__(self) -> None:
        self.items: list[object] = []

    def put(self, obj: object, block: bool = True, timeout: float | None = None) -> None:
        self.items.append(obj)

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        if not self.items:
            raise queue.Empty
        return self.items.pop(0)

    def qsize(self) -> int:
        return len(self.items)


def without_coverage() -> dict[str, str]:
    """This environment less coverage.py's variables: a subprocess started with it is not
    measured (coverage's multiprocessing support imports multiprocessing, which the tests
    of what a module loads must not see)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def drop_coverage_env(monkeypatch: object) -> None:
    """Remove coverage.py's variables for this test (``monkeypatch``: pytest's fixture)."""
    for key in list(os.environ):
        if key.startswith("COVERAGE_"):
            monkeypatch.delenv(key)  # type: ignore[attr-defined]


def read_until(stream: Any, marker: bytes, timeout: float = 120.0) -> bytes:
    """Read ``stream`` (a pipe) until ``marker`` appears, EOF or ``timeout``; return what
    was read (no polling: a selector waits for data)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    seen = b""
    end = time.monotonic() + timeout
    try:
        while marker not in seen and time.monotonic() < end:
            if sel.select(end - time.monotonic()):
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
    finally:
        sel.close()
    return seen
