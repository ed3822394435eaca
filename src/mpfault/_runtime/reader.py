"""Reading the event history: every process's log under a run directory.

The reader half of :mod:`events` (which writes the logs), apart so that a process
that only records never imports what reading needs (``dataclasses``, ``json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .events import MARKS, OPS, full_key
from .layout import (
    HEADER,
    HEADER_SIZE,
    KIND_BEGIN,
    KIND_END,
    KIND_MARK,
    MAGIC,
    NAMES,
    OUTCOMES,
    RECORD,
    SIZE,
)

__all__ = ["Event", "Mark", "read_events"]


@dataclass(frozen=True)
class Event:
    """One queue operation, as recorded by the process that performed it.

    ``end`` is None (and ``outcome`` is ``"pending"``) when the operation never
    completed: its process died in it, or was still blocked in it.
    """

    process: str
    pid: int
    queue: str
    op: str
    seq: int
    start: float
    end: float | None
    outcome: str
    item: str | None = None
    key: str | None = None
    result: str | None = None
    result_key: str | None = None
    exc: str | None = None
    fault: str | None = None
    #: Index of the fault in the queue's plan, or -1.
    fault_index: int = -1

    @property
    def duration(self) -> float | None:
        """Seconds between invocation and completion (None if pending)."""
        return None if self.end is None else self.end - self.start

    @property
    def value(self) -> str | None:
        """The item concerned: the item put for puts, the item got for gets."""
        return self.item if self.op.startswith("put") else self.result


@dataclass(frozen=True)
class Mark:
    """A process-level event: a fault that killed, paused or gated, a start or return."""

    process: str
    pid: int
    kind: str
    time: float
    queue: str = ""
    detail: str = ""
    fault_index: int = -1


@dataclass
class _Pending:
    begin_time: int
    queue: str
    op: str
    item: str
    key: str
    extra: dict[str, Any] = field(default_factory=dict)


class Record(NamedTuple):
    """A record's fixed part, by field (every field of FIELDS but the padding)."""

    length: int = 0
    kind: int = 0
    op: int = 0
    outcome: int = 0
    flags: int = 0
    fault: int = 0
    qlen: int = 0
    alen: int = 0
    blen: int = 0
    time_ns: int = 0
    seq: int = 0


if Record._fields != NAMES:  # pragma: no cover - a mistake here or in layout.py
    raise ImportError(f"layout: Record has {Record._fields}, FIELDS name {NAMES}")


Event.__module__ = Mark.__module__ = "mpfault"  # their public names


#: what one log holds: its events, its marks, the fault plans it recorded
Parsed = tuple[list[Event], list[Mark], dict[str, list[str]]]


def _read_file(path: str) -> Parsed:
    with open(path, "rb") as f:
        return _parse(f.read())


def _parse(data: bytes) -> Parsed:
    if len(data) < HEADER_SIZE:
        return [], [], {}
    magic, hlen = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        return [], [], {}
    try:
        header = json.loads(data[HEADER.size : HEADER.size + hlen])
    except ValueError:
        return [], [], {}
    pid = int(header["pid"])
    process = str(header["process"])
    off = HEADER_SIZE
    begins: dict[int, _Pending] = {}
    order: list[int] = []
    events: list[Event] = []
    marks: list[Mark] = []
    plans: dict[str, list[str]] = {}
    n = len(data)
    make = Record._make
    unpack = RECORD.unpack_from
    while off + SIZE <= n:
        rec = make(unpack(data, off))
        length, kind, op, fault = rec.length, rec.kind, rec.op, rec.fault
        qlen, alen, blen, t_ns, seq = rec.qlen, rec.alen, rec.blen, rec.time_ns, rec.seq
        if length == 0 or off + length > n or kind not in (KIND_BEGIN, KIND_END, KIND_MARK):
            break
        p = off + SIZE
        queue = data[p : p + qlen].decode("utf-8", "replace")
        p += qlen
        a = data[p : p + alen].decode("utf-8", "replace")
        p += alen
        b = data[p : p + blen].decode("utf-8", "replace")
        if rec.flags:
            b = full_key(rec.flags, a, b)
        off += length
        if kind == KIND_BEGIN:
            begins[seq] = _Pending(t_ns, queue, OPS[op], a, b)
            order.append(seq)
        elif kind == KIND_END:
            pend = begins.get(seq)
            if pend is not None:
                pend.extra = {
                    "end": t_ns,
                    "outcome": OUTCOMES[rec.outcome] if rec.outcome < len(OUTCOMES) else "?",
                    "fault": fault,
                    "a": a,
                    "b": b,
                }
        else:
            kind_name = MARKS[op] if op < len(MARKS) else "?"
            if kind_name == "plan":
                try:
                    plans[queue] = list(json.loads(a))
                except ValueError:
                    plans[queue] = []
            marks.append(Mark(process, pid, kind_name, t_ns / 1e9, queue, a, fault))
    for seq in order:
        pend = begins[seq]
        x = pend.extra
        fault_index = int(x.get("fault", -1))
        plan = plans.get(pend.queue, [])
        fault_s = plan[fault_index] if 0 <= fault_index < len(plan) else None
        outcome = str(x.get("outcome", "pending"))
        events.append(
            Event(
                process=process,
                pid=pid,
                queue=pend.queue,
                op=pend.op,
                seq=seq,
                start=pend.begin_time / 1e9,
                end=(int(x["end"]) / 1e9) if "end" in x else None,
                outcome=outcome,
                item=pend.item or None,
                key=pend.key or None,
                result=(x["a"] or None) if outcome == "ok" else None,
                result_key=(x["b"] or None) if outcome == "ok" else None,
                exc=(x["b"] or None) if outcome == "raised" else None,
                fault=fault_s,
                fault_index=fault_index,
            )
        )
    return events, marks, plans


def read_events(directory: str, cache: dict[str, Any] | None = None) -> Parsed:
    """Read every process's log under ``directory``.

    Returns the events sorted by start time, the marks sorted by time, and the
    fault plan (as spec strings) of every queue that recorded one.

    ``cache`` (a dict the caller keeps for one run directory): a log whose bytes are
    the same as at the last read is not parsed again, and when no log changed the
    very same lists are returned (the checkers of a test read the history once each).
    """
    events: list[Event] = []
    marks: list[Mark] = []
    plans: dict[str, list[str]] = {}
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".ev"))
    except FileNotFoundError:
        return [], [], {}
    files = cache.setdefault("files", {}) if cache is not None else {}
    changed = cache is None or cache.get("names") != names
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            data = f.read()
        hit = files.get(path)
        if hit is not None and hit[0] == data:
            ev, mk, pl = hit[1]
        else:
            changed = True
            ev, mk, pl = _parse(data)
            if cache is not None:
                files[path] = (data, (ev, mk, pl))
        events.extend(ev)
        marks.extend(mk)
        plans.update(pl)
    if cache is not None:
        if not changed and "last" in cache:
            return cache["last"]  # type: ignore[no-any-return]
        cache["names"] = names
    events.sort(key=lambda e: (e.start, e.pid, e.seq))
    marks.sort(key=lambda m: (m.time, m.pid))
    if cache is not None:
        cache["last"] = (events, marks, plans)
    return events, marks, plans
