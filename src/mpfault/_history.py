"""The recorded history of a test, and the checkers that read it.

The history is the single source every checker, report and timeline reads: it
holds every operation on a harness queue in every process (``Event``), and the
process-level marks (faults that fired, kills, pauses, gates).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ._runtime.errors import HistoryError
from ._runtime.reader import Event, Mark, read_events

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

    def describe(self, t0: float) -> str:
        """One line: value, producer, relative time, faults."""
        who = f"put by {self.process} (pid {self.pid})" if self.process else "never put"
        when = f" at +{(self.time - t0) * 1000:.1f} ms" if self.time is not None else ""
        n = f" x{self.count}" if self.count != 1 else ""
        faults = []
        if self.fault:
            faults.append(f"fault {self.fault} fired on this put")
        faults.extend(self.near)
        tail = f"; {'; '.join(faults)}" if faults else ""
        return f"{self.value}{n} on {self.queue!r}, {who}{when}{tail}"


_PUTS = ("put", "put_nowait")
_GETS = ("get", "get_nowait")


class History:
    """Every operation on a harness queue, in every process of the test."""

    def __init__(
        self,
        events: Iterable[Event],
        marks: Iterable[Mark] = (),
        plans: dict[str, list[str]] | None = None,
        processes: dict[int, str] | None = None,
    ) -> None:
        self.events: list[Event] = list(events)
        self.marks: list[Mark] = list(marks)
        self.plans: dict[str, list[str]] = dict(plans or {})
        self.processes: dict[int, str] = dict(processes or {})

    @classmethod
    def read(cls, directory: str, processes: dict[int, str] | None = None) -> History:
        """Read the logs every process wrote under ``directory``."""
        events, marks, plans = read_events(directory)
        return cls(events, marks, plans, processes)

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
        """The events matching every given filter (``op="put"`` includes ``put_nowait``)."""
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
            s += f"; then fault {spec} fired ({k.kind} {k.detail})"
        elif e.fault:
            s += f"; fault {e.fault} fired"
        return s

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

    def lost(self, queue: str | None = None) -> list[Item]:
        """Items put (successfully) more often than they were got, with who put them."""
        puts, gets = self._balance(queue)
        out = []
        for k, ps in puts.items():
            missing = len(ps) - len(gets.get(k, []))
            if missing <= 0:
                continue
            # the last puts of that value are the ones that did not arrive (FIFO per producer)
            for e in ps[len(ps) - missing :]:
                out.append(
                    Item(
                        e.item or "",
                        e.key or "",
                        e.queue,
                        e.process,
                        e.pid,
                        e.start,
                        fault=e.fault,
                        near=self._near(e),
                    )
                )
        return sorted(out, key=lambda i: i.time or 0.0)

    def duplicated(self, queue: str | None = None) -> list[Item]:
        """Items got more often than they were put (``count`` = extra copies)."""
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

    def assert_no_loss(self, queue: str | None = None) -> None:
        """Fail if an item that was put was never got (call it after draining the queue)."""
        __tracebackhide__ = True
        lost = self.lost(queue)
        if lost:
            n = sum(i.count for i in lost)
            self._fail(f"{n} item{'s' if n != 1 else ''} lost (put but never got)", lost)

    def assert_no_duplicates(self, queue: str | None = None) -> None:
        """Fail if an item was got more often than it was put."""
        __tracebackhide__ = True
        dup = self.duplicated(queue)
        if dup:
            n = sum(i.count for i in dup)
            self._fail(f"{n} duplicate{'s' if n != 1 else ''} (got more often than put)", dup)

    def assert_fifo_per_producer(self, queue: str | None = None) -> None:
        """Fail if a consumer got one producer's items out of the order they were put.

        Across producers no order is promised (queue-behaviours row 20), and
        across consumers none is checked.
        """
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
