"""What a test's report shows: child output sections, and the mpfault section of a failure."""

from __future__ import annotations

from ._child import Child
from ._child import signal_name as _signame
from ._harness import Harness
from ._history import History
from ._runtime.procfs import state as _proc_state
from ._timeline import ProcessInfo, TimelineInput, render_html, render_text, write_html

__all__ = [
    "describe_child",
    "failure_section",
    "output_sections",
    "timeline_html",
    "timeline_input",
    "timeline_text",
    "write_timeline",
]


def describe_child(c: Child) -> str:
    """``producer-1 (pid 123): killed by SIGKILL`` and the like."""
    code = c.exitcode
    if code is None:
        status = "still running" if c.is_alive() else "not started"
    elif code < 0:
        status = f"killed by {_signame(-code)}"
    else:
        status = f"exited with code {code}"
    return f"{c.name} (pid {c.process.pid}): {status}"


def output_sections(
    harness: Harness,
    outputs: dict[str, tuple[str, str]],
    shown: dict[str, tuple[int, int]],
) -> list[tuple[str, str]]:
    """``(key, text)`` report sections with what each child wrote since the last report."""
    sections = []
    for name, (out, err) in outputs.items():
        o, e = shown.get(name, (0, 0))
        if len(out) > o:
            sections.append((f"stdout (mpfault child {name})", out[o:]))
        if len(err) > e:
            sections.append((f"stderr (mpfault child {name})", err[e:]))
        shown[name] = (max(o, len(out)), max(e, len(err)))
    return sections


def timeline_input(
    harness: Harness,
    *,
    hang: str | None = None,
    failure: str | None = None,
    history: History | None = None,
) -> TimelineInput:
    """The history of ``harness`` and what is known of its children, for the timelines."""
    hist = harness.history if history is None else history
    procs = [ProcessInfo(name="MainProcess", pid=harness.run.controller_pid, role="the test")]
    for c in harness.children:
        code = c.exitcode
        procs.append(
            ProcessInfo(
                name=c.name,
                pid=c.process.pid,
                role=getattr(c, "target_name", ""),
                exitcode=code,
                signal=_signame(-code) if code is not None and code < 0 else None,
                stopped=c.is_alive() and _proc_state(c.pid) in ("T", "t"),
            )
        )
    return TimelineInput(
        events=hist.events,
        marks=hist.marks,
        processes=procs,
        title=harness.test_id,
        seed=harness.seed,
        plan=[f"{q}: {s}" for q, plan in hist.plans.items() for s in plan],
        plans=hist.plans,
        hang=hang,
        failure=failure,
    )


def timeline_text(harness: Harness, last: int = 12, history: History | None = None) -> str:
    """The compact text timeline of the harness's history."""
    return render_text(timeline_input(harness, history=history), last=last)


def timeline_html(
    harness: Harness, failure: str | None = None, history: History | None = None
) -> str:
    """The self-contained HTML/SVG timeline of the harness's history."""
    return render_html(timeline_input(harness, failure=failure, history=history))


def write_timeline(
    harness: Harness, directory: str, failure: str | None = None, history: History | None = None
) -> str:
    """Write the HTML timeline to ``directory``; return its path."""
    inp = timeline_input(harness, failure=failure, history=history)
    return write_html(inp, directory, harness.test_id)


def failure_section(
    harness: Harness, seed: int, replay: str, history: History | None = None
) -> str:
    """The ``mpfault`` section of a failing test's report."""
    lines = [
        f"start method: {harness.start_method}; run seed: {seed} (test seed {harness.seed})",
        f"replay: {replay}",
    ]
    hist = harness.history if history is None else history
    fired = hist.fired()
    if fired:
        lines.append("faults (times fired):")
        lines.extend(f"  {spec}: {n}" for spec, n in fired.items())
    else:
        lines.append("faults: none")
    if harness.children:
        lines.append("children:")
        lines.extend(f"  {describe_child(c)}" for c in harness.children)
    live = [c for c in harness.children if c.is_alive()]
    if live:
        lines.append("stacks of live children:")
        for c in live:
            lines.append(f"--- {c.name} (pid {c.pid}) ---")
            lines.append(c.stack())
    if len(hist.events) or hist.marks:
        lines.append("timeline (last events of each process):")
        try:
            lines.append(timeline_text(harness, history=hist))
        except Exception as e:  # the report must never hide the real failure
            lines.append(f"  (timeline unavailable: {type(e).__name__}: {e})")
    return "\n".join(lines)
