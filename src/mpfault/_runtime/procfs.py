"""The one reader of Linux ``/proc``: process and thread states, parents, descendants.

Used by the harness (teardown, ``wait_stopped``), the contract and the tests.  Every
function answers None, False or an empty set where ``/proc`` (or the process) is not
there.  Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["alive", "all_stopped", "descendants", "stat_state", "state", "thread_states"]


def _fields(path: str) -> list[bytes] | None:
    """The fields of a ``stat`` file after the command name: state, ppid, ..."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split(b" ")


def stat_state(path: str) -> str | None:
    """The one-letter state (R, S, D, T, t, Z, ...) in the ``stat`` file at ``path``."""
    fields = _fields(path)
    return None if fields is None else fields[0].decode()


def state(pid: int, tid: int | None = None) -> str | None:
    """The state of process ``pid`` (or of its thread ``tid``), or None if it is gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return stat_state(path)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return state(pid) not in (None, "Z")


def thread_states(pid: int) -> list[str]:
    """The state of every thread of ``pid`` (empty if it is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    states = (state(pid, int(tid)) for tid in tids)
    return [s for s in states if s is not None]


def all_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (or the process is gone)."""
    return all(s in ("T", "t", "Z") for s in thread_states(pid))


def descendants(roots: Iterable[int]) -> set[int]:
    """Every live descendant of ``roots`` (walks /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for e in entries:
        if not e.isdigit():
            continue
        fields = _fields(f"/proc/{e}/stat")
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(e))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        p = todo.pop()
        for c in children.get(p, ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out
