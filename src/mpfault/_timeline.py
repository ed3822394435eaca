"""Text and HTML/SVG timelines rendered from a test's event history.

The history (``mpfault._runtime.events``) says, for every process of a test, which queue
operations it invoked, when each one returned or raised, which fault fired, and what
happened to the process itself (killed, paused, gated, ...).  This module turns it into:

* :func:`render_text`: a compact terminal timeline, one block per process, for the
  failure report;
* :func:`render_html`: one self-contained HTML file (inline CSS and SVG, no scripts, no
  external resources), a swimlane per process on a common time axis;
* :func:`write_html`: the same, written to ``<directory>/<sanitised test id>.html``.

Everything here is a pure function of a :class:`TimelineInput`; it imports neither
pytest nor anything outside the standard library and ``mpfault._runtime.events``.
The HTML is also well-formed XML (polyglot XHTML), so it can be checked with
``xml.etree``.  Elements carry stable classes and ``data-*`` attributes:

* ``g.lane[data-process][data-pid][data-status]``: one per process;
* ``g.op.<put|get|other>.<ok|raised|pending>[data-op][data-queue][data-seq]``: one per
  operation drawn (at most ``max_ops``; ``text.elided[data-elided]`` says how many not);
* ``path.fault[data-fault]``: a fault fired during the operation it sits on;
* ``g.mark.<kind>[data-kind][data-time-ms]``: process marks (kill, pause, gate-wait, ...).
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import signal as _signal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mpfault._runtime.reader import Event, Mark

__all__ = [
    "ProcessInfo",
    "TimelineInput",
    "render_html",
    "render_text",
    "sanitise_name",
    "write_html",
]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ProcessInfo:
    """What the parent knows about one process of the test.

    ``name`` and ``pid`` identify it in the history (events are matched by pid, or by
    name when ``pid`` is None).  ``role`` is its target's name.  ``exitcode`` is None
    while the process is alive; ``signal`` names the signal that killed it, if any
    (a negative ``exitcode`` is understood too).  ``stopped`` means it is alive but
    stopped (SIGSTOP, a pause fault).
    """

    name: str
    pid: int | None = None
    role: str = ""
    exitcode: int | None = None
    signal: str | None = None
    stopped: bool = False

    @property
    def fate(self) -> str:
        """One of ``"killed"``, ``"exited"``, ``"stopped"``, ``"running"``."""
        if self.signal is not None or (self.exitcode is not None and self.exitcode < 0):
            return "killed"
        if self.exitcode is not None:
            return "exited"
        return "stopped" if self.stopped else "running"

    @property
    def status(self) -> str:
        """A short human description of the exit status, e.g. ``killed by SIGKILL``."""
        fate = self.fate
        if fate == "killed":
            return f"killed by {self.signal_name}"
        if fate == "exited":
            return f"exited {self.exitcode}"
        return "stopped" if fate == "stopped" else "still running"

    @property
    def signal_name(self) -> str:
        """The name of the signal that killed the process (``""`` if it was not killed)."""
        if self.signal:
            return self.signal
        if self.exitcode is not None and self.exitcode < 0:
            try:
                return _signal.Signals(-self.exitcode).name
            except ValueError:
                return f"signal {-self.exitcode}"
        return ""


@dataclass(frozen=True)
class TimelineInput:
    """Everything a timeline shows: the history, the processes, and the test's context.

    ``plan`` lists the fault specs of the test (shown in the header).  ``plans`` maps a
    queue name to its plan, as returned by ``read_events``; it is used to name the
    fault behind a ``fault`` mark whose operation never completed (a kill).  ``hang``
    says which call hung, ``failure`` is a one-line summary of the failure.
    """

    events: Sequence[Event] = ()
    marks: Sequence[Mark] = ()
    processes: Sequence[ProcessInfo] = ()
    title: str = ""
    seed: int | None = None
    plan: Sequence[str] = ()
    hang: str | None = None
    failure: str | None = None
    plans: Mapping[str, Sequence[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- model

_PUT_OPS = frozenset({"put", "put_nowait"})
_GET_OPS = frozenset({"get", "get_nowait"})


def _op_kind(op: str) -> str:
    if op in _PUT_OPS:
        return "put"
    if op in _GET_OPS:
        return "get"
    return "other"


@dataclass
class _Row:
    """One operation of a lane, with the fault marks that belong to it."""

    event: Event
    fault_marks: list[Mark] = field(default_factory=list)

    def fault_text(self, plans: Mapping[str, Sequence[str]], details: bool = True) -> str:
        """The fault fired: its spec, and what its marks say it did.

        The spec comes from the END record or, for an operation that never completed
        (a kill), from the queue's plan.  Without ``details`` the marks' descriptions
        are only used when no spec is known.
        """
        ev = self.event
        spec = ev.fault
        notes: list[str] = []
        for m in self.fault_marks:
            if spec is None and m.fault_index >= 0:
                plan = plans.get(m.queue or ev.queue, ())
                if m.fault_index < len(plan):
                    spec = plan[m.fault_index]
            if m.detail:
                notes.append(m.detail)
        if spec is None:
            return "; ".join(notes)
        if notes and details:
            return f"{spec} ({'; '.join(notes)})"
        return spec

    @property
    def faulted(self) -> bool:
        return self.event.fault is not None or bool(self.fault_marks)


@dataclass
class _Lane:
    name: str
    pid: int | None
    info: ProcessInfo | None
    index: int
    rows: list[_Row] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @property
    def first(self) -> float:
        times = [r.event.start for r in self.rows] + [m.time for m in self.marks]
        return min(times) if times else math.inf

    @property
    def fate(self) -> str:
        if self.info is not None:
            return self.info.fate
        kinds = {m.kind for m in self.marks}
        if "kill" in kinds:
            return "killed"
        if "exit" in kinds:
            return "exited"
        return "unknown"

    @property
    def status(self) -> str:
        if self.info is not None:
            return self.info.status
        kill = [m for m in self.marks if m.kind == "kill"]
        if kill:
            return f"killed by {kill[-1].detail or 'a signal'} (no process info)"
        ex = [m for m in self.marks if m.kind == "exit"]
        if ex:
            return f"exited {ex[-1].detail} (no process info)"
        return "no process info"

    @property
    def role(self) -> str:
        if self.info is not None and self.info.role:
            return self.info.role
        for m in self.marks:
            if m.kind == "start" and m.detail:
                return m.detail
        return ""

    def pending_phrase(self) -> str:
        fate = self.fate
        if fate == "killed":
            return "PENDING (in flight when killed)"
        if fate == "exited":
            code = self.info.exitcode if self.info is not None else None
            return (
                "PENDING (in flight at exit)"
                if code is None
                else (f"PENDING (in flight at exit {code})")
            )
        if fate == "stopped":
            return "PENDING (process stopped)"
        return "PENDING"


def _build_lanes(inp: TimelineInput) -> list[_Lane]:
    """Group the history by process, in start order, and attach fault marks to ops."""
    lanes: list[_Lane] = []
    by_pid: dict[int, _Lane] = {}
    by_name: dict[str, _Lane] = {}
    for info in inp.processes:
        lane = _Lane(info.name, info.pid, info, len(lanes))
        lanes.append(lane)
        if info.pid is not None:
            by_pid.setdefault(info.pid, lane)
        else:
            by_name.setdefault(info.name, lane)
    orphans: dict[tuple[str, int], _Lane] = {}

    def lane_for(process: str, pid: int) -> _Lane:
        lane = by_pid.get(pid)
        if lane is None:
            lane = by_name.get(process)
        if lane is None:
            lane = orphans.get((process, pid))
            if lane is None:
                lane = _Lane(process, pid, None, len(lanes))
                lanes.append(lane)
                orphans[(process, pid)] = lane
        return lane

    for ev in sorted(inp.events, key=lambda e: (e.start, e.seq)):
        lane_for(ev.process, ev.pid).rows.append(_Row(ev))
    for m in sorted(inp.marks, key=lambda m: m.time):
        if m.kind == "plan":
            continue
        lane = lane_for(m.process, m.pid)
        if m.kind == "fault":
            row = _owner(lane.rows, m)
            if row is not None:
                row.fault_marks.append(m)
                continue
        lane.marks.append(m)
    lanes.sort(key=lambda ln: (ln.first, ln.index))
    return lanes


def _owner(rows: Sequence[_Row], m: Mark) -> _Row | None:
    """The operation during which fault mark ``m`` fired, if any (latest match wins)."""
    for row in reversed(rows):
        ev = row.event
        if ev.start > m.time:
            continue
        if m.queue and m.queue != ev.queue:
            continue
        if ev.end is not None and ev.end < m.time:
            continue
        if m.fault_index >= 0 and ev.fault_index >= 0 and m.fault_index != ev.fault_index:
            continue
        return row
    return None


def _time_range(inp: TimelineInput) -> tuple[float, float]:
    """(first, last) time of anything shown, in monotonic seconds; (0, 0) if empty."""
    times: list[float] = []
    for ev in inp.events:
        times.append(ev.start)
        if ev.end is not None:
            times.append(ev.end)
    times.extend(m.time for m in inp.marks if m.kind != "plan")
    if not times:
        return 0.0, 0.0
    return min(times), max(times)


# --------------------------------------------------------------------------- text

#: Mark glyphs: kind -> (unicode, ascii).
_GLYPHS: dict[str, tuple[str, str]] = {
    "kill": ("⚡", "!!"),
    "exit": ("⏹", "[]"),
    "pause": ("⏸", "||"),
    "resume": ("▶", "|>"),
    "gate-wait": ("⛔", "#"),
    "gate-pass": ("✓", "v"),
    "start": ("▸", ">"),
    "return": ("↩", "<-"),
    "raise": ("✗", "x!"),
    "fault": ("⚠", "*"),
}
_OTHER_GLYPH = ("•", "-")

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _clean(s: str) -> str:
    """Replace characters that cannot appear in XML (or a terminal) by an escape."""
    return _INVALID_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _cut(s: str, n: int, ell: str = "…") -> str:
    """``s`` truncated to at most ``n`` characters, ending in ``ell`` if cut."""
    if n <= 0:
        return ""
    if len(s) <= n:
        return s
    if n <= len(ell):
        return s[:n]
    return s[: n - len(ell)] + ell


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3f}"


def _fmt_dur(seconds: float) -> str:
    ms = seconds * 1000.0
    if ms >= 1000.0:
        return f"{seconds:.2f} s"
    return f"{ms:.1f} ms"


def _value(ev: Event, arrow: str) -> str:
    if _op_kind(ev.op) == "put":
        return ev.item or ""
    if ev.result is not None:
        return f"{arrow} {ev.result}"
    return ev.item or ""


def _outcome(ev: Event, lane: _Lane) -> str:
    if ev.outcome == "pending" or ev.end is None:
        return lane.pending_phrase()
    if ev.outcome == "raised":
        text = f"raised {ev.exc or 'an exception'}"
    elif ev.outcome == "ok":
        text = "ok"
    else:
        text = ev.outcome
    dur = ev.end - ev.start
    if dur >= 0.001:
        text += f" after {_fmt_dur(dur)}"
    return text


def _rule(label: str, width: int, ch: str) -> str:
    head = f"{ch}{ch} {label} "
    return _cut(head, width) + ch * max(0, width - len(head))


def render_text(
    inp: TimelineInput, last: int = 12, width: int = 100, *, ascii: bool = False
) -> str:
    """Render a compact terminal timeline of ``inp``.

    One block per process, in start order, with its last ``last`` operations (relative
    time in ms since the first recorded event, queue, operation, item or result,
    outcome, fault fired) and its marks inline (kill, pause, resume, gate wait/pass,
    start, return, raise).  A one-line summary per process ends it.  No line is longer
    than ``width``.  With ``ascii=True`` the output is pure ASCII (plain glyphs, and
    non-ASCII characters of item reprs escaped).
    """
    width = max(width, 40)
    last = max(last, 0)
    gi = 1 if ascii else 0
    ell = "..." if ascii else "…"
    rule_ch = "-" if ascii else "─"
    arrow = "->" if ascii else "→"
    dot = "|" if ascii else "·"
    lanes = _build_lanes(inp)
    t0, _ = _time_range(inp)
    out: list[str] = []

    def emit(line: str) -> None:
        line = _clean(line)
        if ascii:
            line = line.encode("ascii", "backslashreplace").decode("ascii")
        out.append(_cut(line.rstrip(), width, ell))

    emit(f"mpfault timeline {dot} {inp.title or '(untitled test)'}")
    meta = [f"seed {inp.seed}" if inp.seed is not None else "seed -"]
    meta.append("plan: " + (", ".join(inp.plan) if inp.plan else "(no faults)"))
    emit(f"  {'  '.join(meta)}")
    if inp.hang:
        emit(f"  HANG: {inp.hang}")
    if inp.failure:
        emit(f"  FAILURE: {inp.failure}")
    if not lanes:
        emit("  (no processes, no operations recorded)")
        return "\n".join(out) + "\n"

    # Column widths, shared by all blocks so times line up across processes.
    shown: list[tuple[_Lane, list[_Row], list[Mark], int, int]] = []
    for lane in lanes:
        rows = lane.rows[-last:] if last else []
        cut_rows = len(lane.rows) - len(rows)
        if cut_rows and rows:
            since = rows[0].event.start
            marks = [m for m in lane.marks if m.time >= since]
        elif cut_rows:
            marks = lane.marks[-last:] if last else []
        else:
            marks = list(lane.marks)
        if last and len(marks) > last:
            marks = marks[-last:]
        shown.append((lane, rows, marks, cut_rows, len(lane.marks) - len(marks)))
    times = [(r.event.start - t0) * 1000.0 for _, rows, _, _, _ in shown for r in rows]
    times += [(m.time - t0) * 1000.0 for _, _, marks, _, _ in shown for m in marks]
    tw = max((len(_fmt_ms(t)) for t in times), default=5) + 3
    qw = min(max((len(r.event.queue) for _, rows, _, _, _ in shown for r in rows), default=1), 12)
    ow = min(max((len(r.event.op) for _, rows, _, _, _ in shown for r in rows), default=1), 12)
    prefix_w = 2 + tw + 2 + qw + 2 + ow + 2

    for lane, rows, marks, cut_rows, cut_marks in shown:
        head = [lane.name]
        if lane.pid is not None:
            head.append(f"pid {lane.pid}")
        if lane.role:
            head.append(lane.role)
        head.append(lane.status)
        out.append("")
        emit(_rule(f" {dot} ".join(head), width, rule_ch))
        if cut_rows or cut_marks:
            parts = []
            if cut_rows:
                parts.append(f"{cut_rows} earlier operation{'s' if cut_rows != 1 else ''}")
            if cut_marks:
                parts.append(f"{cut_marks} mark{'s' if cut_marks != 1 else ''}")
            emit(f"  {ell} {' and '.join(parts)} not shown")
        if not rows and not marks:
            emit("  (no operations recorded)")
            continue
        cells = []
        for r in rows:
            ev = r.event
            fault = r.fault_text(inp.plans, details=False)
            tail = _outcome(ev, lane) + (f"  {_GLYPHS['fault'][gi]} fault {fault}" if fault else "")
            cells.append((ev.start, 0, r, _value(ev, arrow), tail))
        vw_natural = max((len(c[3]) for c in cells), default=0)
        tail_max = max((len(c[4]) for c in cells), default=0)
        vw = max(min(vw_natural, 28, width - prefix_w - tail_max - 2), min(vw_natural, 16))
        items: list[tuple[float, int, str]] = []
        for start, _, r, value, tail in cells:
            ev = r.event
            ms = _fmt_ms((start - t0) * 1000.0) + " ms"
            line = (
                f"  {ms:>{tw}}  {_cut(ev.queue, qw, ell):<{qw}}  {_cut(ev.op, ow, ell):<{ow}}  "
                f"{_cut(value, vw, ell):<{vw}}  {tail}"
            )
            items.append((start, 1, line))
        for m in marks:
            ms = _fmt_ms((m.time - t0) * 1000.0) + " ms"
            glyph = _GLYPHS.get(m.kind, _OTHER_GLYPH)[gi]
            text = f"{glyph} {m.kind}"
            if m.detail:
                text += f" {m.detail}"
            if m.queue:
                text += f" (queue {m.queue})"
            items.append((m.time, 0, f"  {ms:>{tw}}  {text}"))
        # Marks sort before an operation starting at the same instant (start, pause...).
        for _, _, line in sorted(items, key=lambda x: (x[0], x[1])):
            emit(line)

    out.append("")
    emit(_rule("summary", width, rule_ch))
    nw = min(max(len(ln.name) for ln in lanes), 24)
    pw = max(len(str(ln.pid)) for ln in lanes) + 4
    sw = min(max(len(ln.status) for ln in lanes), 36)
    for lane in lanes:
        n = len(lane.rows)
        pend = sum(1 for r in lane.rows if r.event.end is None)
        raised = sum(1 for r in lane.rows if r.event.outcome == "raised")
        faults = sum(1 for r in lane.rows if r.faulted)
        stats = [f"{n} op{'s' if n != 1 else ''}"]
        if pend:
            stats.append(f"{pend} pending")
        if raised:
            stats.append(f"{raised} raised")
        if faults:
            stats.append(f"{faults} fault{'s' if faults != 1 else ''} fired")
        pid = f"pid {lane.pid}" if lane.pid is not None else "pid ?"
        emit(
            f"  {_cut(lane.name, nw, ell):<{nw}}  {pid:<{pw}}  {_cut(lane.status, sw, ell):<{sw}}"
            f"  {', '.join(stats)}"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- html

_SVG_W = 1140
_LABEL_W = 236
_X0 = _LABEL_W + 8
_X1 = _SVG_W - 24
_AXIS_H = 34
_STRIP_H = 18  # room for mark glyphs above the bars
_ROW_H = 17
_BAR_H = 12
_MAX_SUBROWS = 4
_LANE_MIN_H = 56

_COLOURS = {"put": "#2f6fd1", "get": "#1f9a57", "other": "#7d8590"}

_CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 14px 18px; color: #1f2328; background: #fff; }
h1 { font-size: 17px; margin: 0 0 6px 0; }
h1 code { font-size: 15px; background: #f3f4f6; padding: 1px 5px; border-radius: 4px; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 4px 0 8px 0; }
.meta .k { color: #59636e; margin-right: 4px; }
.plan code, .seed code { background: #f3f4f6; padding: 0 4px; border-radius: 3px;
  margin-right: 4px; }
.hang, .failure { border-left: 4px solid #cf222e; background: #fff1f0; padding: 4px 10px;
  margin: 4px 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
  white-space: pre-wrap; word-break: break-word; }
.hang { border-color: #bf8700; background: #fff8e1; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 12px; margin: 6px 0 8px 0; color: #424a53;
  font-size: 12px; }
.legend-item { display: inline-flex; align-items: center; gap: 5px; }
.legend svg { vertical-align: middle; }
.note { color: #59636e; font-size: 12px; }
svg.timeline { display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.lane-name { font-size: 13px; font-weight: 600; fill: #1f2328; }
.lane-sub { font-size: 11px; fill: #59636e; }
.lane-status { font-size: 11px; font-weight: 600; }
.tick-label { font-size: 10px; fill: #59636e; }
.op-label { font-size: 10px; fill: #fff; pointer-events: none; }
.pending-label { font-size: 10px; font-style: italic; fill: #24292f; pointer-events: none; }
.mark-label { font-size: 10px; fill: #6e5a00; }
.op:hover rect, .mark:hover, .fault:hover { opacity: 0.75; }
details { margin-top: 10px; }
pre { font: 12px/1.35 ui-monospace, "DejaVu Sans Mono", monospace; background: #f6f8fa;
  padding: 8px; overflow-x: auto; }
"""

_PENDING_LABELS = {
    "killed": "pending · killed in flight",
    "exited": "pending · exited in flight",
    "stopped": "pending · stopped",
}

_STATUS_COLOURS = {
    "killed": "#cf222e",
    "exited": "#1a7f37",
    "stopped": "#bf8700",
    "running": "#bf8700",
    "unknown": "#59636e",
}


def _e(s: object) -> str:
    """Escape text for XML/HTML content and attribute values (quotes included)."""
    return html.escape(_clean(str(s)), quote=True)


def _attrs(**kw: object) -> str:
    """Render attributes; ``data_x`` becomes ``data-x``; None values are omitted."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        name = k.rstrip("_").replace("_", "-")
        parts.append(f' {name}="{_e(v)}"')
    return "".join(parts)


def _n(x: float) -> str:
    """A compact coordinate."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _nice_step(span_ms: float, target: int = 10) -> float:
    raw = span_ms / target
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_text(v: float, step: float) -> str:
    dec = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{dec}f} ms"


def _select_ops(lanes: Sequence[_Lane], max_ops: int) -> set[int]:
    """ids of the rows to draw: all pending/raised/faulted ones first, then the latest."""
    rows = [r for ln in lanes for r in ln.rows]
    if len(rows) <= max_ops:
        return {id(r) for r in rows}
    interesting = [r for r in rows if r.event.end is None or r.event.outcome != "ok" or r.faulted]
    rest = [r for r in rows if not (r.event.end is None or r.event.outcome != "ok" or r.faulted)]
    interesting.sort(key=lambda r: r.event.start, reverse=True)
    keep = interesting[:max_ops]
    rest.sort(key=lambda r: r.event.start, reverse=True)
    keep += rest[: max_ops - len(keep)]
    return {id(r) for r in keep}


def _subrows(rows: Sequence[_Row]) -> list[int]:
    """Greedy interval packing: the sub-row of each operation (time overlap only)."""
    ends: list[float] = []
    out: list[int] = []
    for r in rows:
        ev = r.event
        end = math.inf if ev.end is None else ev.end
        for i, e in enumerate(ends):
            if e <= ev.start:
                ends[i] = end
                out.append(i)
                break
        else:
            if len(ends) < _MAX_SUBROWS:
                ends.append(end)
                out.append(len(ends) - 1)
            else:
                i = min(range(len(ends)), key=lambda j: ends[j])
                ends[i] = max(ends[i], end)
                out.append(i)
    return out


def _defs() -> str:
    grads = "".join(
        f'<linearGradient id="fade-{k}" x1="0" x2="1" y1="0" y2="0">'
        f'<stop offset="0" stop-color="{c}" stop-opacity="0.5"/>'
        f'<stop offset="1" stop-color="{c}" stop-opacity="0.04"/></linearGradient>'
        for k, c in _COLOURS.items()
    )
    return (
        "<defs>"
        '<pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="#ffe3e1"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="#cf222e" stroke-width="2.2"/></pattern>'
        '<pattern id="pausefill" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(-45)"><rect width="6" height="6" fill="#fff4cc"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#f0d98a" stroke-width="2"/></pattern>'
        f"{grads}</defs>"
    )


def _glyph(kind: str, x: float, y: float) -> str:
    """The shape of a mark of ``kind`` centred on (x, y); no text, so no font needed."""
    X, Y = _n(x), _n(y)
    if kind == "kill":
        return (
            f'<path d="M{_n(x - 5)},{_n(y - 5)}L{_n(x + 5)},{_n(y + 5)}M{_n(x + 5)},{_n(y - 5)}'
            f'L{_n(x - 5)},{_n(y + 5)}" stroke="#cf222e" stroke-width="3" '
            'stroke-linecap="round" fill="none"/>'
        )
    if kind == "exit":
        return f'<rect x="{_n(x - 4.5)}" y="{_n(y - 4.5)}" width="9" height="9" fill="#24292f"/>'
    if kind == "gate-wait":
        return (
            f'<circle cx="{X}" cy="{Y}" r="6" fill="#cf222e"/>'
            f'<rect x="{_n(x - 3.8)}" y="{_n(y - 1.2)}" width="7.6" height="2.4" fill="#fff"/>'
        )
    if kind == "gate-pass":
        return (
            f'<path d="M{_n(x - 5)},{_n(y)}L{_n(x - 1.5)},{_n(y + 4)}L{_n(x + 5.5)},{_n(y - 5)}" '
            'stroke="#1a7f37" stroke-width="2.6" fill="none" stroke-linecap="round" '
            'stroke-linejoin="round"/>'
        )
    if kind == "start":
        return (
            f'<path d="M{_n(x - 4)},{_n(y - 6)}L{_n(x + 6)},{Y}L{_n(x - 4)},{_n(y + 6)}Z" '
            'fill="#1a7f37"/>'
        )
    if kind == "return":
        return (
            f'<circle cx="{X}" cy="{Y}" r="5" fill="#1a7f37"/>'
            f'<circle cx="{X}" cy="{Y}" r="2" fill="#fff"/>'
        )
    if kind == "raise":
        return (
            f'<path d="M{X},{_n(y - 6.5)}L{_n(x + 6.5)},{_n(y + 5.5)}L{_n(x - 6.5)},{_n(y + 5.5)}Z"'
            ' fill="#cf222e"/>'
            f'<rect x="{_n(x - 1)}" y="{_n(y - 2.5)}" width="2" height="4.5" fill="#fff"/>'
            f'<rect x="{_n(x - 1)}" y="{_n(y + 2.8)}" width="2" height="1.6" fill="#fff"/>'
        )
    if kind in ("pause", "resume"):
        if kind == "pause":
            return (
                f'<rect x="{_n(x - 4.5)}" y="{_n(y - 5)}" width="3.2" height="10" fill="#bf8700"/>'
                f'<rect x="{_n(x + 1.3)}" y="{_n(y - 5)}" width="3.2" height="10" fill="#bf8700"/>'
            )
        return (
            f'<path d="M{_n(x - 4)},{_n(y - 5)}L{_n(x + 5)},{Y}L{_n(x - 4)},{_n(y + 5)}Z" '
            'fill="#bf8700"/>'
        )
    if kind == "fault":
        return _diamond(x, y, 5)
    return f'<circle cx="{X}" cy="{Y}" r="4" fill="#7d8590"/>'


def _diamond(x: float, y: float, r: float) -> str:
    return (
        f'<path d="M{_n(x)},{_n(y - r)}L{_n(x + r)},{_n(y)}L{_n(x)},{_n(y + r)}'
        f'L{_n(x - r)},{_n(y)}Z" fill="#fb8f44" stroke="#953800" stroke-width="1"/>'
    )


def _legend() -> str:
    def item(label: str, body: str, cls: str, w: int = 26) -> str:
        return (
            f'<span class="legend-item" data-legend="{cls}">'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="16" '
            f'viewBox="0 0 {w} 16">{body}</svg>{_e(label)}</span>'
        )

    def bar(fill: str, stroke: str = "none") -> str:
        return f'<rect x="1" y="3" width="24" height="10" rx="2" fill="{fill}" stroke="{stroke}"/>'

    parts = [
        item("put", bar(_COLOURS["put"]), "put"),
        item("get", bar(_COLOURS["get"]), "get"),
        item("other op", bar(_COLOURS["other"]), "other"),
        item("raised", bar("url(#hatch)", "#cf222e"), "raised"),
        item(
            "pending",
            '<defs><linearGradient id="lg-fade" x1="0" x2="1"><stop offset="0" '
            f'stop-color="{_COLOURS["put"]}"/><stop offset="1" stop-color="{_COLOURS["put"]}" '
            'stop-opacity="0.05"/></linearGradient></defs>'
            '<rect x="1" y="3" width="36" height="10" fill="url(#lg-fade)"/>',
            "pending",
            38,
        ),
        item("fault fired", _diamond(13, 8, 5), "fault"),
        item("killed", _glyph("kill", 13, 8), "kill"),
        item(
            "paused",
            '<rect x="1" y="1" width="24" height="14" fill="#fff4cc" stroke="#e3c565"/>',
            "pause",
        ),
        item("gate wait", _glyph("gate-wait", 13, 8), "gate-wait"),
        item("gate pass", _glyph("gate-pass", 13, 8), "gate-pass"),
        item("start", _glyph("start", 13, 8), "start"),
        item("return", _glyph("return", 13, 8), "return"),
        item("raise", _glyph("raise", 13, 8), "raise"),
        item("exit", _glyph("exit", 13, 8), "exit"),
    ]
    # The hatch pattern is defined in the main SVG; give the legend its own copy.
    parts[3] = (
        parts[3]
        .replace("url(#hatch)", "url(#lg-hatch)")
        .replace(
            'viewBox="0 0 26 16">',
            'viewBox="0 0 26 16"><defs><pattern id="lg-hatch" width="5" height="5" '
            'patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="5" '
            'height="5" fill="#ffe3e1"/><line x1="0" y1="0" x2="0" y2="5" stroke="#cf222e" '
            'stroke-width="2.2"/></pattern></defs>',
        )
    )
    return f'<div class="legend">{"".join(parts)}</div>'


_MAX_MARKS = 2000  # per lane


@dataclass(frozen=True)
class _Scale:
    """Maps monotonic seconds to x coordinates of the chart."""

    t0: float
    t_end: float

    def x(self, t: float) -> float:
        return _X0 + (t - self.t0) / (self.t_end - self.t0) * (_X1 - _X0)

    def ms(self, t: float) -> str:
        return f"{(t - self.t0) * 1000.0:.3f}"


def _scale(inp: TimelineInput) -> _Scale:
    t_first, t_last = _time_range(inp)
    span = t_last - t_first
    if span <= 0:
        span = 0.001
    # Room after the last event so that pending operations visibly run on and fade out.
    pad = 1.16 if any(ev.end is None for ev in inp.events) else 1.04
    return _Scale(t_first, t_first + span * pad)


def _lane_label(lane: _Lane, top: float) -> str:
    sub = [f"pid {lane.pid}" if lane.pid is not None else "pid ?"]
    if lane.role:
        sub.append(lane.role)
    colour = _STATUS_COLOURS.get(lane.fate, "#59636e")
    return (
        f'<text class="lane-name" x="10" y="{_n(top + 17)}"><title>{_e(lane.name)}</title>'
        f"{_e(_cut(lane.name, 30))}</text>"
        f'<text class="lane-sub" x="10" y="{_n(top + 31)}">{_e(_cut(" · ".join(sub), 40))}</text>'
        f'<text class="lane-status" x="10" y="{_n(top + 45)}" fill="{colour}">'
        f"{_e(_cut(lane.status, 38))}</text>"
    )


def _marks_svg(lane: _Lane, top: float, lane_h: float, sc: _Scale) -> tuple[str, str, int]:
    """(pause regions, other mark glyphs, number of marks not drawn) of a lane."""
    marks = lane.marks[-_MAX_MARKS:]
    pauses: list[str] = []
    glyphs: list[str] = []
    resumes_used: set[int] = set()
    for mi, m in enumerate(marks):
        if m.kind != "pause":
            continue
        end_t: float | None = None
        for mj in range(mi + 1, len(marks)):
            if marks[mj].kind == "resume" and mj not in resumes_used:
                resumes_used.add(mj)
                end_t = marks[mj].time
                break
        xa = sc.x(m.time)
        xb = sc.x(end_t) if end_t is not None else float(_X1)
        if end_t is not None:
            label = "paused"
        else:
            label = "stopped" if lane.fate == "stopped" else "paused (no resume)"
        tip = f"pause {m.detail}".strip() + f" at +{sc.ms(m.time)} ms"
        tip += f", resumed at +{sc.ms(end_t)} ms" if end_t is not None else ", never resumed"
        attrs = _attrs(
            class_="mark pause",
            data_kind="pause",
            data_time_ms=sc.ms(m.time),
            data_end_ms=None if end_t is None else sc.ms(end_t),
            data_detail=m.detail or None,
        )
        text = ""
        if xb - xa > 60:
            text = (
                f'<text class="mark-label" x="{_n(xa + 14)}" y="{_n(top + 13)}">{_e(label)}</text>'
            )
        pauses.append(
            f"<g{attrs}><title>{_e(tip)}</title>"
            f'<rect x="{_n(xa)}" y="{_n(top + 1)}" width="{_n(max(xb - xa, 2))}" '
            f'height="{_n(lane_h - 2)}" fill="url(#pausefill)" stroke="#e3c565" '
            f'stroke-width="1" opacity="0.9"/>{_glyph("pause", xa + 6, top + 10)}{text}</g>'
        )
    gate_wait_x: float | None = None
    for mi, m in enumerate(marks):
        if m.kind == "pause" or (m.kind == "resume" and mi in resumes_used):
            continue
        xm = sc.x(m.time)
        tip = m.kind + (f" {m.detail}" if m.detail else "")
        tip += (f" (queue {m.queue})" if m.queue else "") + f" at +{sc.ms(m.time)} ms"
        extra = ""
        if m.kind == "kill":
            extra = (
                f'<line x1="{_n(xm)}" y1="{_n(top + 2)}" x2="{_n(xm)}" '
                f'y2="{_n(top + lane_h - 2)}" stroke="#cf222e" stroke-width="1.2" '
                'stroke-dasharray="3,2"/>'
            )
        if m.kind == "gate-wait":
            gate_wait_x = xm
        elif m.kind == "gate-pass" and gate_wait_x is not None:
            glyphs.append(
                f'<line class="gate-span" x1="{_n(gate_wait_x + 6)}" y1="{_n(top + 10)}" '
                f'x2="{_n(xm - 6)}" y2="{_n(top + 10)}" stroke="#8c959f" '
                'stroke-width="1.5" stroke-dasharray="2,2"/>'
            )
            gate_wait_x = None
        attrs = _attrs(
            class_=f"mark {m.kind}",
            data_kind=m.kind,
            data_time_ms=sc.ms(m.time),
            data_detail=m.detail or None,
            data_queue=m.queue or None,
        )
        glyphs.append(
            f"<g{attrs}><title>{_e(tip)}</title>{extra}{_glyph(m.kind, xm, top + 10)}</g>"
        )
    return "".join(pauses), "".join(glyphs), len(lane.marks) - len(marks)


def _op_svg(r: _Row, lane: _Lane, by: float, sc: _Scale, plans: Mapping[str, Sequence[str]]) -> str:
    """One operation: a bar (and its fault marker) in a ``g.op`` element."""
    ev = r.event
    kind = _op_kind(ev.op)
    pending = ev.end is None or ev.outcome == "pending"
    outcome = "pending" if pending else ("raised" if ev.outcome == "raised" else "ok")
    classes = f"op {kind} {outcome}"
    if r.faulted:
        classes += " faulted"
    if not pending and ev.end == ev.start:
        classes += " instant"
    value = _value(ev, "→")
    fault = r.fault_text(plans)
    xa = sc.x(ev.start)
    if pending or ev.end is None:
        xb = float(_X1)
        status = lane.pending_phrase().lower()
    else:
        xb = sc.x(ev.end)
        status = _outcome(ev, lane)
    w = max(xb - xa, 6.0 if outcome == "raised" else 2.0)
    tip = f"{ev.op} on {ev.queue}" + (f": {value}" if value else "")
    tip += f" — {status} — at +{sc.ms(ev.start)} ms"
    if not pending and ev.end is not None:
        tip += f", took {(ev.end - ev.start) * 1000.0:.3f} ms"
    if fault:
        tip += f" — fault {fault}"
    attrs = _attrs(
        class_=classes,
        data_process=lane.name,
        data_op=ev.op,
        data_queue=ev.queue,
        data_seq=ev.seq,
        data_start_ms=sc.ms(ev.start),
        data_end_ms=None if pending or ev.end is None else sc.ms(ev.end),
        data_outcome=outcome,
        data_item=value or None,
        data_exc=ev.exc,
        data_fault=fault or None,
    )
    out = [f"<g{attrs}><title>{_e(tip)}</title>"]
    geom = f'x="{_n(xa)}" y="{_n(by)}" width="{_n(w)}" height="{_BAR_H}"'
    text_y = _n(by + _BAR_H - 2.5)
    if outcome == "pending":
        out.append(
            f'<rect {geom} fill="url(#fade-{kind})" stroke="{_COLOURS[kind]}" '
            'stroke-width="1" stroke-dasharray="4,2"/>'
        )
        label = _PENDING_LABELS.get(lane.fate, "pending")
        if value and w / 5.6 > len(label) + len(value) + 3:
            label = f"{label} · {value}"
        out.append(
            f'<text class="pending-label" x="{_n(xa + 4)}" y="{text_y}">'
            f"{_e(_cut(label, max(4, int(w / 5.6))))}</text>"
        )
    elif outcome == "raised":
        out.append(f'<rect {geom} fill="url(#hatch)" stroke="#cf222e" stroke-width="1.4"/>')
    else:
        out.append(f'<rect {geom} rx="1.5" fill="{_COLOURS[kind]}"/>')
        if value and w > 26:
            out.append(
                f'<text class="op-label" x="{_n(xa + 3)}" y="{text_y}">'
                f"{_e(_cut(value, int((w - 4) / 5.8)))}</text>"
            )
    out.append("</g>")
    if r.faulted:
        ft = r.fault_marks[0].time if r.fault_marks else ev.start
        fx = min(max(sc.x(ft), xa), xa + w)
        out.append(
            f"<path{_attrs(class_='fault', data_fault=fault or '?', data_seq=ev.seq)} "
            f'd="M{_n(fx)},{_n(by - 6)}L{_n(fx + 5)},{_n(by - 1)}L{_n(fx)},{_n(by + 4)}'
            f'L{_n(fx - 5)},{_n(by - 1)}Z" fill="#fb8f44" stroke="#953800" stroke-width="1">'
            f"<title>{_e(f'fault {fault} on {ev.op} {ev.queue}')}</title></path>"
        )
    return "".join(out)


def _lane_svg(
    lane: _Lane,
    index: int,
    top: float,
    sc: _Scale,
    keep: set[int],
    plans: Mapping[str, Sequence[str]],
) -> tuple[str, float]:
    """The ``g.lane`` element of one process, and its height."""
    rows = [r for r in lane.rows if id(r) in keep]
    hidden = [r for r in lane.rows if id(r) not in keep]
    sub = _subrows(rows)
    nsub = max(sub, default=0) + 1
    lane_h = float(max(_LANE_MIN_H, _STRIP_H + nsub * _ROW_H + 10))
    bar_top = top + _STRIP_H + 4
    attrs = _attrs(
        class_="lane",
        data_process=lane.name,
        data_pid=lane.pid,
        data_role=lane.role or None,
        data_status=lane.fate,
        data_info=None if lane.info else "none",
        data_ops=len(lane.rows),
        data_elided=len(hidden),
    )
    bg = "#f6f8fa" if index % 2 else "#ffffff"
    g = [
        f"<g{attrs}>",
        f'<rect class="lane-bg" x="0" y="{_n(top)}" width="{_SVG_W}" height="{_n(lane_h)}" '
        f'fill="{bg}"/>',
        _lane_label(lane, top),
    ]
    pauses, glyphs, marks_hidden = _marks_svg(lane, top, lane_h, sc)
    g.append(pauses)
    if hidden:
        # The operations not drawn: one grey band over the time they cover.
        xa = sc.x(min(r.event.start for r in hidden))
        xb = sc.x(max(r.event.end or r.event.start for r in hidden))
        w = max(xb - xa, 2.0)
        g.append(
            f'<g class="elided-span" data-elided="{len(hidden)}">'
            f"<title>{len(hidden)} operations of {_e(lane.name)} not drawn</title>"
            f'<rect x="{_n(xa)}" y="{_n(bar_top)}" width="{_n(w)}" height="{_BAR_H}" '
            'fill="#eaeef2" stroke="#afb8c1" stroke-dasharray="3,2"/>'
        )
        label = f"{len(hidden)} operations not drawn"
        if w > 5.6 * len(label) + 8:
            g.append(
                f'<text x="{_n(xa + w / 2)}" y="{_n(bar_top + _BAR_H - 2.5)}" '
                f'text-anchor="middle" font-size="10" fill="#59636e">{_e(label)}</text>'
            )
        g.append("</g>")
    for r, s in zip(rows, sub, strict=True):
        g.append(_op_svg(r, lane, bar_top + s * _ROW_H, sc, plans))
    g.append(glyphs)
    if marks_hidden:
        g.append(
            f'<text class="elided-marks" x="{_X0}" y="{_n(top + lane_h - 3)}" '
            f'data-elided="{marks_hidden}" font-size="10" fill="#59636e">'
            f"{marks_hidden} earlier marks not drawn</text>"
        )
    g.append("</g>")
    return "".join(g), lane_h


def _axis_svg(sc: _Scale, height: float, has_times: bool) -> str:
    span_ms = (sc.t_end - sc.t0) * 1000.0
    out = [
        f'<g class="axis" data-span-ms="{span_ms:.3f}">',
        f'<line x1="{_X0}" y1="{_AXIS_H - 4}" x2="{_X1}" y2="{_AXIS_H - 4}" stroke="#8c959f"/>',
        f'<text class="tick-label" x="10" y="{_AXIS_H - 10}" font-weight="600">'
        "ms since the first event</text>",
    ]
    if has_times:
        step = _nice_step(span_ms)
        k = 0
        while k * step <= span_ms + 1e-9 and k < 100:
            v = k * step
            label = _tick_text(v, step)
            tx = _n(sc.x(sc.t0 + v / 1000.0))
            out.append(
                f'<g class="tick" data-ms="{_e(label[:-3])}">'
                f'<line x1="{tx}" y1="{_AXIS_H - 8}" x2="{tx}" y2="{_n(height - 20)}" '
                f'stroke="#d0d7de" stroke-width="1"/>'
                f'<text class="tick-label" x="{tx}" y="{_AXIS_H - 12}" text-anchor="middle">'
                f"{_e(label)}</text></g>"
            )
            k += 1
    out.append("</g>")
    return "".join(out)


def _header_html(inp: TimelineInput, lanes: Sequence[_Lane], elided: int) -> str:
    rows = [r for ln in lanes for r in ln.rows]
    total = len(rows)
    n_pending = sum(1 for r in rows if r.event.end is None)
    n_raised = sum(1 for r in rows if r.event.outcome == "raised")
    n_faults = sum(1 for r in rows if r.faulted)
    seed = "" if inp.seed is None else str(inp.seed)
    if inp.plan:
        plan = "".join(f'<code class="fault-spec">{_e(s)}</code>' for s in inp.plan)
    else:
        plan = "<em>none</em>"
    procs = f"{len(lanes)} process{'es' if len(lanes) != 1 else ''}"
    ops = f"{total} operation{'s' if total != 1 else ''}"
    out = [
        '<div class="header">',
        f'<h1 class="title">mpfault timeline <code>{_e(inp.title or "(untitled test)")}</code>'
        "</h1>",
        '<div class="meta">',
        f'<span class="seed" data-seed="{_e(seed)}"><span class="k">seed</span>'
        f"<code>{_e(seed or '-')}</code></span>",
        f'<span class="plan"><span class="k">fault plan</span>{plan}</span>',
        f'<span class="counts" data-processes="{len(lanes)}" data-ops="{total}">'
        f'<span class="k">history</span>{procs}, {ops}, {n_pending} pending, '
        f"{n_raised} raised, {n_faults} with a fault fired</span>",
        "</div>",
    ]
    if inp.hang:
        out.append(f'<div class="hang"><strong>hang:</strong> {_e(inp.hang)}</div>')
    if inp.failure:
        out.append(f'<div class="failure"><strong>failure:</strong> {_e(inp.failure)}</div>')
    if elided:
        out.append(
            f'<p class="note elided-note" data-elided="{elided}">{elided} of {total} '
            "operations are not drawn (pending, raised and faulted ones are kept first, "
            "then the latest); grey bands show where they were.</p>"
        )
    out.append(_legend())
    out.append("</div>")
    return "\n".join(out)


def render_html(inp: TimelineInput, *, max_ops: int = 2000) -> str:
    """Render ``inp`` as one self-contained HTML page with an SVG swimlane timeline.

    The page needs no script and no external resource.  It has a header (title, seed,
    fault plan, hang and failure summary, counts), a legend, one lane per process
    (label: name, pid, target, exit status) on a common time axis in ms, and the text
    timeline in a collapsed ``<details>``.  Each operation is a bar from its start to
    its end, coloured by kind (put, get, other); raised operations are hatched red;
    pending ones run to the end of the chart and fade out.  Faults fired are diamonds
    on their operation, with the fault spec in a tooltip; marks are glyphs (kill: red
    X, pause: a shaded region until the resume, gate wait/pass, start/return/raise).
    At most ``max_ops`` operations are drawn (pending, raised and faulted ones first,
    then the latest); the page says how many were elided.  The document is
    well-formed XML.
    """
    lanes = _build_lanes(inp)
    sc = _scale(inp)
    keep = _select_ops(lanes, max(0, max_ops))
    total = sum(len(ln.rows) for ln in lanes)
    elided = total - len(keep)
    has_times = bool(inp.events) or any(m.kind != "plan" for m in inp.marks)

    lane_svgs: list[str] = []
    y = float(_AXIS_H)
    for i, lane in enumerate(lanes):
        svg, h = _lane_svg(lane, i, y, sc, keep, inp.plans)
        lane_svgs.append(svg)
        y += h
    if not lanes:
        y += 40
    height = y + 22  # room for the notes under the lanes
    notes: list[str] = []
    if total == 0:
        notes.append(
            f'<text class="empty" x="{_X0 + 10}" y="{_n(height - 6)}" font-size="12" '
            'fill="#59636e">no queue operations recorded</text>'
        )
    if elided:
        notes.append(
            f'<text class="elided" x="{_X1}" y="{_n(height - 6)}" text-anchor="end" '
            f'font-size="11" fill="#59636e" data-elided="{elided}">'
            f"{elided} of {total} operations elided (showing {total - elided})</text>"
        )
    title = inp.title or "test"
    svg_open = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{_SVG_W}" '
        f'height="{_n(height)}" viewBox="0 0 {_SVG_W} {_n(height)}" role="img" '
        f'aria-label="{_e("timeline of " + title)}" data-lanes="{len(lanes)}" '
        f'data-ops="{total}" data-drawn="{total - elided}">'
    )
    doc = [
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_e('mpfault timeline: ' + title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        f'<body data-title="{_e(inp.title)}">',
        _header_html(inp, lanes, elided),
        '<div class="chart">',
        svg_open,
        _defs(),
        *lane_svgs,
        _axis_svg(sc, height, has_times),
        *notes,
        "</svg>",
        "</div>",
        "<details><summary>text timeline (last 12 operations per process)</summary>",
        f'<pre class="text-timeline">{_e(render_text(inp))}</pre></details>',
        "</body>",
        "</html>",
    ]
    return "\n".join(doc) + "\n"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise_name(name: str) -> str:
    """A file-name-safe form of a test id (``tests/t.py::test[a/b]`` -> ``tests_t.py_test_a_b``).

    When characters had to be replaced, a short hash of the original is appended, so
    different ids (``[a/b]`` and ``[a:b]``) never share a file.
    """
    safe = _UNSAFE.sub("_", name).strip("._-")[:120] or "timeline"
    if safe != name:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe}-{digest}"
    return safe


def write_html(inp: TimelineInput, directory: str, name: str) -> str:
    """Write :func:`render_html` of ``inp`` to ``<directory>/<sanitised name>.html``.

    The directory is created if needed; the file is replaced atomically.  Returns the
    path written.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, sanitise_name(name) + ".html")
    data = render_html(inp).encode("utf-8")
    # A unique temporary name, created with the umask's permissions (mkstemp's 0600
    # would hide the report from whoever collects CI artifacts), then renamed.
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
