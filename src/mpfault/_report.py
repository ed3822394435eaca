"""What a test's report shows: child output sections, and the mpfault section of a failure."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from ._child import Child
from ._child import signal_name as _signame
from ._harness import Harness
from ._history import History
from ._runtime.procfs import state as _proc_state
from ._timeline import ProcessInfo, TimelineInput, render_html, render_text, write_html

__all__ = [
    "child_states",
    "describe_child",
    "failure_section",
    "output_sections",
    "replay_command",
    "timeline_html",
    "timeline_input",
    "timeline_text",
    "write_timeline",
]


def child_states(harness: Harness) -> dict[int, ProcessInfo]:
    """One state per child, taken once (every part of a report shows the same one):
    child index -> what is known of it (exit code, signal, stopped)."""
    out: dict[int, ProcessInfo] = {}
    for i, c in enumerate(harness.children):
        with contextlib.suppress(Exception):
            if c.process.pid is not None:
                c.process.join(0)  # reap it if it has exited
        code = c.exitcode
        alive = code is None and c.process.pid is not None and c.is_alive()
        out[i] = ProcessInfo(
            name=c.name,
            pid=c.process.pid,
            role=getattr(c, "target_name", ""),
            exitcode=code,
            signal=_signame(-code) if code is not None and code < 0 else None,
            stopped=alive and _proc_state(c.pid) in ("T", "t"),
        )
    return out


def describe_child(c: Child, state: ProcessInfo | None = None) -> str:
    """``producer-1 (pid 123): killed by SIGKILL`` and the like."""
    code = c.exitcode if state is None else state.exitcode
    if code is None:
        started = c.process.pid is not None
        if state is not None:
            status = "stopped" if state.stopped else "still running" if started else "not started"
        else:
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
    states: dict[int, ProcessInfo] | None = None,
) -> TimelineInput:
    """The history of ``harness`` and what is known of its children, for the timelines."""
    hist = harness.history if history is None else history
    procs = [ProcessInfo(name="MainProcess", pid=harness.run.controller_pid, role="the test")]
    procs.extend((child_states(harness) if states is None else states).values())
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


def timeline_text(
    harness: Harness,
    last: int = 12,
    history: History | None = None,
    states: dict[int, ProcessInfo] | None = None,
) -> str:
    """The compact text timeline of the harness's history."""
    return render_text(timeline_input(harness, history=history, states=states), last=last)


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


def replay_command(
    nodeid: str,
    seed: int,
    *,
    start_method: str | None = None,
    settings: Any = None,
    args: Sequence[str] = (),
) -> str:
    """The command that replays one test: ``python -m pytest NODEID --mpfault-seed=N``
    and every option that shaped the run.

    ``args`` are the run's command-line arguments (``config.invocation_params.args``):
    the options kept are those that change how a test runs (plugins, import mode,
    config file, ini overrides, pytest-timeout's, mpfault's own), not those that select
    tests or shape the output.  ``settings`` (the test's resolved settings) add what came
    from the environment (``MPFAULT*``), which the replay gives as options.
    """
    keep_value = {
        "-p",
        "-c",
        "--config-file",
        "--rootdir",
        "--import-mode",
        "-o",
        "--override-ini",
        "--timeout",
        "--timeout-method",
        "--timeout_method",
        "--confcutdir",
        "--basetemp",
        "-W",
        "--pythonwarnings",
        "--mpfault",
        "--mpfault-deadline",
        "--mpfault-tmpdir",
        "--mpfault-start-methods",
        "--mpfault-seed",
        "--mpfault-key",
        "--mpfault-show",
    }
    keep_flag = {"--runxfail", "--noconftest", "-s", "--capture=no", "--mpfault-instrument"}
    drop = {"--mpfault-start-methods", "--mpfault-seed"}  # replaced below
    kept: list[str] = []
    seen: set[str] = set()
    it = iter(list(args))
    for a in it:
        name, eq, _value = a.partition("=")
        if a.startswith("-p") and len(a) > 2 and not a.startswith("--"):
            name, eq = "-p", "="  # -pname
        if name in keep_value:
            opt = [a] if eq else [a, next(it, "")]
            if name not in drop:
                kept.extend(opt)
            seen.add(name)
        elif a in keep_flag:
            kept.append(a)
            seen.add(a)
    parts = [_python(), "-m", "pytest", shlex.quote(nodeid), f"--mpfault-seed={seed}"]
    if start_method:
        parts.append(f"--mpfault-start-methods={start_method}")
    if settings is not None:
        src = getattr(settings, "faults_source", "")
        if src == "env MPFAULT" and "--mpfault" not in seen:
            parts += [shlex.quote(f"--mpfault={f}") for f in settings.faults]
        # what the environment gave, as the options that give it
        for var, option in (
            ("MPFAULT_DEADLINE", "--mpfault-deadline"),
            ("MPFAULT_KEY", "--mpfault-key"),
            ("MPFAULT_SHOW", "--mpfault-show"),
        ):
            value = os.environ.get(var)
            if value and option not in seen:
                parts.append(shlex.quote(f"{option}={value}"))
        if (
            os.environ.get("MPFAULT_INSTRUMENT")
            and getattr(settings, "instrument", False)
            and "--mpfault-instrument" not in seen
        ):
            parts.append("--mpfault-instrument")
    parts += [shlex.quote(a) for a in kept]
    return " ".join(parts)


def _python() -> str:
    """``python``, or the interpreter's path when ``python`` is another one."""
    import shutil

    found = shutil.which("python")
    if found and os.path.realpath(found) == os.path.realpath(sys.executable):
        return "python"
    return shlex.quote(sys.executable)


def failure_section(
    harness: Harness,
    seed: int,
    replay: str,
    history: History | None = None,
    *,
    shown: str = "",
) -> str:
    """The ``mpfault`` section of a failing test's report.

    ``shown``: the failure's text as already reported; a child stack it holds (a
    ``Hang``'s) is not printed again.
    """
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
    notes = hist.notes()
    if notes:
        lines.append("notes:")
        lines.extend(f"  {n}" for n in notes)
    states = child_states(harness)
    if harness.children:
        lines.append("children:")
        lines.extend(f"  {describe_child(c, states[i])}" for i, c in enumerate(harness.children))
    live = [
        c
        for i, c in enumerate(harness.children)
        if states[i].exitcode is None and c.process.pid is not None
    ]
    if live:
        stacks = []
        in_failure = []
        for c in live:
            header = f"--- {c.name} (pid {c.pid}) ---"
            if header in shown:
                in_failure.append(c.name)
                continue
            stacks.append(header)
            text = c.stack()
            stacks.append(text)
            note = hist.lock_note(text)
            if note:
                stacks.append(f"  note: {note}")
        if stacks:
            lines.append("stacks of live children:")
            lines.extend(stacks)
        if in_failure:
            lines.append(f"stacks of live children: in the error above ({', '.join(in_failure)})")
    if len(hist.events) or hist.marks:
        lines.append("timeline (last events of each process):")
        try:
            lines.append(timeline_text(harness, history=hist, states=states))
        except Exception as e:  # the report must never hide the real failure
            lines.append(f"  (timeline unavailable: {type(e).__name__}: {e})")
    return "\n".join(lines)
