"""The recorded history of a test, and the checkers that read it.

The history is the single source every checker, report and timeline reads: it
holds every operation on a harness queue in every process (``Event``), and the
process-level marks (faults that fired, kills, pauses, gates).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._runtime.during import HOLDING
from ._runtime.errors import HistoryError
from ._runtime.reader import Event, Mark, read_events

#: what a ``kill(during)`` fault mark says the process held: "(during, <this>) [spec]"
_DURING = re.compile(r"\(during, (.*)\) \[")

__all__ = ["History", "HistoryError", "Item"]


@dataclass(frozen=True)
class Item:
    """An item the checkers talk about: its value, who put it, when, and what fired near it."""

    value: str
    key: str
    queue: str
    process: str | None
    pid: int | None
    time: float | None
    count: int = 1
    fault: str | None = None
    near: tuple[str, ...] = ()
    #: where a lost item is: ``"in queue"`` (its producer lived on to flush it: still in
    #: the queue, not got yet), ``"unflushed"`` (its producer died with it possibly still
    #: in its buffer), or ``""`` (not known, or not a lost item)
    where: str = ""
    #: why no consumer got it, when the history says (``stopped getting after ...``)
    why: str = ""
    #: the value as shown (the part that tells it apart from similar items); "" = value
    shown: str = ""

    def describe(self, t0: float) -> str:
        """One line: value, producer, relative time, faults."""
        who = f"put by {self.process} (pid {self.pid})" if self.process else "never put"
        when = f" at +{(self.time - t0) * 1000:.1f} ms" if self.time is not None else ""
        n = f" x{self.count}" if self.count != 1 else ""
        faults = []
        if self.where == "in queue":
            faults.append(f"still in queue {self.queue!r}, not got yet")
        elif self.where == "unflushed":
            faults.append("its producer died before flushing it to the queue")
        if self.fault:
            faults.append(f"fault {self.fault} fired on this put")
        faults.extend(self.near)
        if self.why:
            faults.append(self.why)
        tail = f"; {'; '.join(faults)}" if faults else ""
        return f"{self.shown or self.value}{n} on {self.queue!r}, {who}{when}{tail}"


_PUTS = ("put", "put_nowait")
_GETS = ("get", "get_nowait")

#: what a settle callback returns: the history once the test's children have settled,
#: and the children still running after the wait (``"consumer-2 (pid 12)"``), if any
Settled = tuple["History", list[str]]


def _full_repr(e: Event) -> str:
    """The longest repr the history holds of the item ``e`` put (its key keeps ~200
    characters of a repr the short form cut at 60)."""
    v = e.item or ""
    k = e.key or ""
    if v.endswith("...") and ":" in k and not k.startswith(("str:", "bytes:")):
        full = k.split(":", 1)[1]
        if len(full) > len(v) and full[: len(v) - 3] == v[:-3]:
            return full
    return v


def _distinct(values: list[str], width: int = 60) -> list[str]:
    """Short forms of ``values`` that keep distinct values distinct: the whole value when
    it fits, else the head plus the part where it differs from the others (or its tail)."""
    out = []
    uniq = sorted(set(values))
    for v in values:
        if len(v) <= width:
            out.append(v)
            continue
        others = [u for u in uniq if u != v]
        start = 0
        for u in others:  # the longest prefix shared with any other value
            k = 0
            n = min(len(u), len(v))
            while k < n and u[k] == v[k]:
                k += 1
            start = max(start, k)
        head = v[:20]
        if start <= 20:
            out.append(v[: width - 1] + "…")
            continue
        part = v[max(start - 10, 20) : max(start - 10, 20) + width - 24]
        tail = "…" if max(start - 10, 20) + width - 24 < len(v) else ""
        out.append(f"{head}…{part}{tail}")
    return out


class History:
    """Every operation on a harness queue, in every process of the test."""

    def __init__(
        self,
        events: Iterable[Event],
        marks: Iterable[Mark] = (),
        plans: dict[str, list[str]] | None = None,
        processes: dict[int, str] | None = None,
        *,
        queues: Iterable[str] = (),
        settle: Callable[[], Settled] | None = None,
        fates: dict[int, str] | None = None,
    ) -> None:
        """``queues``: names of the test's queues (also those without operations yet);
        ``settle``: called by the checkers before they judge: waits (bounded) for the
        test's running children and returns the history then, and who still runs;
        ``fates``: pid -> how a child ended (``"exited"``, ``"killed"``), from its owner."""
        self.events: list[Event] = list(events)
        self.marks: list[Mark] = list(marks)
        self.plans: dict[str, list[str]] = dict(plans or {})
        self.processes: dict[int, str] = dict(processes or {})
        self.queues: list[str] = list(dict.fromkeys([*queues, *self.plans]))
        self.fates: dict[int, str] = dict(fates or {})
        self._settle = settle

    @classmethod
    def read(
        cls,
        directory: str,
        processes: dict[int, str] | None = None,
        *,
        plans: dict[str, list[str]] | None = None,
        queues: Iterable[str] = (),
        settle: Callable[[], Settled] | None = None,
        fates: dict[int, str] | None = None,
        cache: dict[str, Any] | None = None,
    ) -> History:
        """Read the logs every process wrote under ``directory``.

        ``plans`` (queue -> fault specs) are what the owner of the queues knows of
        their plans, for queues no process has used yet; ``cache``: a dict kept for
        the directory, so that logs that did not change are not parsed again.
        """
        events, marks, logged = read_events(directory, cache)
        return cls(
            events,
            marks,
            {**(plans or {}), **logged},
            processes,
            queues=queues,
            settle=settle,
            fates=fates,
        )

    def _settled(self, what: str, wait: bool) -> History:
        """The history to judge: after waiting for the test's running children."""
        __tracebackhide__ = True
        if not wait or self._settle is None:
            return self
        hist, alive = self._settle()
        if alive:
            raise HistoryError(
                f"{what}: the history is not settled: {', '.join(alive)} "
                f"{'is' if len(alive) == 1 else 'are'} still running (waited up to the "
                "test's deadline); join or stop it first, or pass wait=False to judge "
                "the history so far"
            )
        return hist

    # -- names ------------------------------------------------------------------------
    def process_names(self) -> list[str]:
        """Names of every process known to the history."""
        names = ["MainProcess", *self.processes.values(), *(e.process for e in self.events)]
        names += [m.process for m in self.marks]
        return list(dict.fromkeys(names))

    def queue_names(self) -> list[str]:
        """Names of every queue known to the history."""
        return list(dict.fromkeys([*self.queues, *(e.queue for e in self.events)]))

    def _check_names(self, process: str | None, queue: str | None, where: str) -> None:
        __tracebackhide__ = True
        if process is not None and process not in self.process_names():
            known = ", ".join(repr(n) for n in self.process_names())
            raise ValueError(f"{where}: no process named {process!r} in this test (known: {known})")
        if queue is not None and queue not in self.queue_names():
            known = ", ".join(repr(n) for n in self.queue_names()) or "none"
            raise ValueError(f"{where}: no queue named {queue!r} in this test (known: {known})")

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.events)

    def __repr__(self) -> str:
        return f"<History {len(self.events)} events, {len(self.marks)} marks>"

    @property
    def t0(self) -> float:
        """The time of the first event or mark (monotonic seconds)."""
        times = [e.start for e in self.events[:1]] + [m.time for m in self.marks[:1]]
        return min(times) if times else 0.0

    # -- selection ----------------------------------------------------------------------
    def ops(
        self,
        op: str | Iterable[str] | None = None,
        *,
        process: str | None = None,
        queue: str | None = None,
        outcome: str | None = None,
    ) -> list[Event]:
        """The events matching every given filter (``op="put"`` includes ``put_nowait``).

        A ``process`` or ``queue`` name the test does not know is a ``ValueError``
        listing the known names.
        """
        __tracebackhide__ = True
        self._check_names(process, queue, "history.ops()")
        ops: set[str] | None = None
        if isinstance(op, str):
            ops = {op, f"{op}_nowait"} if op in ("put", "get") else {op}
        elif op is not None:
            ops = set(op)
        return [
            e
            for e in self.events
            if (ops is None or e.op in ops)
            and (process is None or e.process == process)
            and (queue is None or e.queue == queue)
            and (outcome is None or e.outcome == outcome)
        ]

    def pending(self) -> list[Event]:
        """Operations that never completed (in flight when their process died or stopped)."""
        return [e for e in self.events if e.end is None]

    def put_items(self, queue: str | None = None) -> list[str]:
        """Reprs of the items put successfully, in start order."""
        return [e.item or "" for e in self.ops(_PUTS, queue=queue, outcome="ok")]

    def got_items(self, queue: str | None = None) -> list[str]:
        """Reprs of the items got successfully, in start order."""
        return [e.result or "" for e in self.ops(_GETS, queue=queue, outcome="ok")]

    def fired(self) -> dict[str, int]:
        """How often each fault fired, by ``"<queue>: <fault spec>"`` (zero counts included)."""
        counts: dict[str, int] = {}
        for q, plan in self.plans.items():
            for spec in plan:
                counts.setdefault(f"{q}: {spec}", 0)
        for m in self.marks:
            if m.kind == "fault":
                plan = self.plans.get(m.queue, [])
                spec = plan[m.fault_index] if 0 <= m.fault_index < len(plan) else "?"
                key = f"{m.queue}: {spec}"
                counts[key] = counts.get(key, 0) + 1
        return counts

    def notes(self) -> list[str]:
        """What the history notes about itself, once each: a queue's ``key``/``show``
        that failed on an item (``"q1: show() raised ValueError for an item of type
        LogRecord; default repr used"``)."""
        return list(dict.fromkeys(f"{m.queue}: {m.detail}" for m in self.marks if m.kind == "note"))

    def last_operation(self, pid: int) -> str | None:
        """A description of the last operation of process ``pid`` and what fired in it."""
        evs = [e for e in self.events if e.pid == pid]
        if not evs:
            return None
        e = evs[-1]
        what = e.item if e.op.startswith("put") else None
        s = f"{e.op}({what or ''}) on {e.queue!r}"
        if e.end is None:
            s += ", still in flight"
        elif e.outcome == "raised":
            s += f", raised {e.exc}"
        else:
            s += ", returned" + (f" {e.result}" if e.result else "")
        kills = [m for m in self.marks if m.pid == pid and m.kind in ("kill", "exit")]
        if kills:
            k = kills[-1]
            plan = self.plans.get(k.queue, [])
            spec = plan[k.fault_index] if 0 <= k.fault_index < len(plan) else "?"
            inside = [
                m.detail
                for m in self.marks
                if m.pid == pid
                and m.kind == "fault"
                and ": kill " in m.detail
                and "(during, " in m.detail
            ]
            how = _DURING.search(inside[-1]) if inside else None
            during = f" inside the operation, {how.group(1)}" if how else ""
            s += f"; then fault {spec} fired ({k.kind} {k.detail}{during})"
        elif e.fault:
            s += f"; fault {e.fault} fired"
        return s

    def locks_held_by_the_dead(self) -> list[tuple[Mark, str]]:
        """The ``kill(during)`` faults that killed a process holding a queue's lock:
        (the fault's mark, ``"read"``, ``"write"`` or ``"cond"``), in time order."""
        out = []
        for m in self.marks:
            if m.kind == "fault" and "(during, holding the " in m.detail:
                for which, phrase in HOLDING.items():
                    if f"(during, {phrase}" in m.detail:
                        out.append((m, which))
                        break
        return out

    def dead_lock_holders(self, side: str) -> list[str]:
        """The dead processes that hold or may have left a queue's lock taken: for
        ``"put"`` (the write lock a feeder thread takes) the killed processes that put,
        for ``"get"`` (the read lock) the killed ones that got; each as
        ``"producer-1 (pid 12, killed; its last put on 'q1' at +71.0 ms)"``.  Those
        killed inside the operation holding the lock (``kill(during)``) come first, as
        ``"worker (pid 12, killed inside get() on 'q1' holding it, at +3.0 ms)"``."""
        ops = _PUTS if side == "put" else _GETS
        t0 = self.t0
        certain = []
        sure: set[int] = set()
        for m, which in self.locks_held_by_the_dead():
            if which == ("write" if side == "put" else "read") and m.pid not in sure:
                sure.add(m.pid)
                op = m.detail.split(":", 1)[0]
                certain.append(
                    f"{m.process} (pid {m.pid}, killed inside {op}() on {m.queue!r} holding"
                    f" it, at +{(m.time - t0) * 1000:.1f} ms)"
                )
        killed = {m.pid for m in self.marks if m.kind in ("kill", "exit")}
        killed |= {pid for pid, fate in self.fates.items() if fate == "killed"}
        last: dict[int, Event] = {}
        for e in self.events:
            if e.op in ops and e.pid in killed and e.pid not in sure:
                last[e.pid] = e
        return certain + [
            f"{e.process} (pid {e.pid}, killed; its last {e.op} on {e.queue!r} at "
            f"+{(e.start - t0) * 1000:.1f} ms)"
            for e in sorted(last.values(), key=lambda e: -e.start)
        ]

    def lock_note(self, stack: str) -> str:
        """``blocked on a queue lock last taken by <dead process>`` for a child whose
        stack waits for a queue's lock that a killed process may hold; else ``""``."""
        if "wacquire()" in stack or "with self._wlock" in stack:
            side, lock = "put", "write lock (a feeder thread's wacquire())"
        elif "with self._rlock" in stack or "self._rlock.acquire" in stack:
            side, lock = "get", "read lock (get())"
        else:
            return ""
        holders = self.dead_lock_holders(side)
        if not holders:
            return ""
        how = "held by" if "holding it" in holders[0] else "last taken by"
        return (
            f"blocked on a queue {lock} {how} {holders[0]}"
            + (f" (or by {', '.join(holders[1:])})" if len(holders) > 1 else "")
            + ": a process killed while holding a queue's lock leaves it taken for good"
        )

    # -- checkers -----------------------------------------------------------------------
    def _near(self, e: Event) -> tuple[str, ...]:
        out = []
        for m in self.marks:
            if m.pid == e.pid and m.kind in ("kill", "exit", "pause") and m.time >= e.start:
                plan = self.plans.get(m.queue, [])
                spec = plan[m.fault_index] if 0 <= m.fault_index < len(plan) else "?"
                after = f" +{(m.time - e.start) * 1000:.1f} ms later"
                out.append(f"then {m.kind} {m.detail} by fault {spec}{after}")
                break
        return tuple(out)

    def _balance(self, queue: str | None) -> tuple[dict[str, list[Event]], dict[str, list[Event]]]:
        puts: dict[str, list[Event]] = defaultdict(list)
        gets: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            if queue is not None and e.queue != queue:
                continue
            if e.op in _PUTS and e.outcome == "ok":
                puts[f"{e.queue}\0{e.key}"].append(e)
            elif e.op in _GETS and e.outcome == "ok":
                gets[f"{e.queue}\0{e.result_key}"].append(e)
        return puts, gets

    def _where(self, e: Event) -> str:
        """Whether a lost item put by ``e`` is still in its queue or died unflushed."""
        died = self.fates.get(e.pid)
        kills = [
            m
            for m in self.marks
            if m.pid == e.pid and m.kind in ("kill", "exit") and m.time >= e.start
        ]
        if e.fault and any(a.strip().startswith("drop") for a in e.fault.split(":")[1:]):
            return ""  # the fault that dropped it says where it went
        if kills or (died is not None and died != "exited"):
            return "unflushed"
        if died == "exited" or e.process == "MainProcess":
            return "in queue"
        return ""

    def _stopped_getting(self, queue: str) -> str:
        """``stopped getting after get() raised X`` for consumers whose last get raised."""
        last: dict[int, Event] = {}
        for e in self.events:
            if e.queue == queue and e.op in _GETS:
                last[e.pid] = e
        why = []
        for e in last.values():
            if e.outcome == "raised" and e.exc:
                why.append(f"{e.process} stopped getting after {e.op}() raised {e.exc}")
        return "; ".join(why)

    def lost(self, queue: str | None = None, *, wait: bool = True) -> list[Item]:
        """Items put (successfully) more often than they were got, with who put them.

        Judges a settled history: first waits (bounded by the deadline) for the
        test's children still running, and fails naming them if they do not end
        (``wait=False``: the history so far).  Each item says whether it is still in
        the queue, not got yet, or its producer died before flushing it.
        """
        __tracebackhide__ = True
        self._check_names(None, queue, "history.lost()")
        return self._settled("lost()", wait)._lost(queue)

    def _lost(self, queue: str | None) -> list[Item]:
        puts, gets = self._balance(queue)
        found: list[Event] = []
        for k, ps in puts.items():
            missing = len(ps) - len(gets.get(k, []))
            if missing <= 0:
                continue
            # the last puts of that value are the ones that did not arrive (FIFO per producer)
            found.extend(ps[len(ps) - missing :])
        found.sort(key=lambda e: e.start)
        shown = _distinct([_full_repr(e) for e in found])
        why = {q: self._stopped_getting(q) for q in {e.queue for e in found}}
        return [
            Item(
                e.item or "",
                e.key or "",
                e.queue,
                e.process,
                e.pid,
                e.start,
                fault=e.fault,
                near=self._near(e),
                where=self._where(e),
                why=why[e.queue],
                shown=s if s != (e.item or "") else "",
            )
            for e, s in zip(found, shown, strict=True)
        ]

    def duplicated(self, queue: str | None = None) -> list[Item]:
        """Items got more often than they were put (``count`` = extra copies)."""
        __tracebackhide__ = True
        self._check_names(None, queue, "history.duplicated()")
        puts, gets = self._balance(queue)
        out = []
        for k, gs in gets.items():
            ps = puts.get(k, [])
            extra = len(gs) - len(ps)
            if extra <= 0:
                continue
            p = ps[0] if ps else None
            out.append(
                Item(
                    gs[0].result or "",
                    gs[0].result_key or "",
                    gs[0].queue,
                    p.process if p else None,
                    p.pid if p else None,
                    p.start if p else None,
                    count=extra,
                    fault=p.fault if p else None,
                )
            )
        return out

    def _fail(self, title: str, items: list[Item]) -> None:
        __tracebackhide__ = True
        t0 = self.t0
        lines = [f"  - {i.describe(t0)}" for i in items[:50]]
        if len(items) > 50:
            lines.append(f"  ... and {len(items) - 50} more")
        pend = self.pending()
        if pend:
            lines.append(
                "  (operations still in flight, outcome unknown: "
                + ", ".join(f"{e.process} {e.op}({e.item or ''})" for e in pend[:5])
                + ")"
            )
        raise HistoryError(f"{title}:\n" + "\n".join(lines))

    def assert_no_loss(self, queue: str | None = None, *, wait: bool = True) -> None:
        """Fail if an item that was put was never got.

        Waits first (bounded by the test's deadline) for the test's children still
        running, and fails naming them if they do not end (``wait=False``: judge the
        history so far).  An item still in the queue is reported as such.
        """
        __tracebackhide__ = True
        self._check_names(None, queue, "assert_no_loss()")
        hist = self._settled("assert_no_loss()", wait)
        lost = hist._lost(queue)
        if lost:
            n = sum(i.count for i in lost)
            hist._fail(f"{n} item{'s' if n != 1 else ''} lost (put but never got)", lost)

    def assert_no_duplicates(self, queue: str | None = None, *, wait: bool = True) -> None:
        """Fail if an item was got more often than it was put (after the children settled,
        as :meth:`assert_no_loss`)."""
        __tracebackhide__ = True
        self._check_names(None, queue, "assert_no_duplicates()")
        hist = self._settled("assert_no_duplicates()", wait)
        dup = hist.duplicated(queue)
        if dup:
            n = sum(i.count for i in dup)
            hist._fail(f"{n} duplicate{'s' if n != 1 else ''} (got more often than put)", dup)

    def assert_fifo_per_producer(self, queue: str | None = None, *, wait: bool = True) -> None:
        """Fail if a consumer got one producer's items out of the order they were put.

        Across producers no order is promised (queue-behaviours row 20), and
        across consumers none is checked.  Judges the history after the test's
        children settled, as :meth:`assert_no_loss`.
        """
        __tracebackhide__ = True
        self._check_names(None, queue, "assert_fifo_per_producer()")
        self._settled("assert_fifo_per_producer()", wait)._assert_fifo(queue)

    def _assert_fifo(self, queue: str | None) -> None:
        __tracebackhide__ = True
        problems: list[str] = []
        queues = sorted({e.queue for e in self.events if queue is None or e.queue == queue})
        t0 = self.t0
        for qn in queues:
            # each get is matched with the earliest unmatched put of the same value
            pending_puts: dict[str, list[Event]] = defaultdict(list)
            index: dict[tuple[int, int], int] = {}
            counters: dict[int, int] = defaultdict(int)
            for e in self.ops(_PUTS, queue=qn, outcome="ok"):
                pending_puts[e.key or ""].append(e)
                counters[e.pid] += 1
                index[(e.pid, e.seq)] = counters[e.pid]
            last: dict[tuple[int, int], tuple[int, Event, Event]] = {}
            for g in self.ops(_GETS, queue=qn, outcome="ok"):
                cands = pending_puts.get(g.result_key or "")
                if not cands:
                    continue
                p = cands.pop(0)
                n = index[(p.pid, p.seq)]
                prev = last.get((g.pid, p.pid))
                if prev is not None and n < prev[0]:
                    problems.append(
                        f"  - {g.process} got {g.result} (put #{n} by {p.process} at "
                        f"+{(p.start - t0) * 1000:.1f} ms) after {prev[2].result} (put "
                        f"#{prev[0]} by {p.process} at +{(prev[1].start - t0) * 1000:.1f} ms) "
                        f"on {qn!r}"
                    )
                last[(g.pid, p.pid)] = (n, p, g)
        if problems:
            raise HistoryError("items of one producer got out of order:\n" + "\n".join(problems))
