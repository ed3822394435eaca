"""Helpers of the test suite: waiting for processes that are not our children."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 :].split(b" ", 1)[0] != b"Z"


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
