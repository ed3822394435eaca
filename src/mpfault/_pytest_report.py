"""What the plugin adds to the report of a test that used the ``mpfault`` fixture:
its children's output, and for a failure the mpfault section, the replay line, the
timeline (text, ``--mpfault-report`` files, pytest-html) and other plugins' sections.

Loaded by :mod:`.plugin` with the first report of such a test.
"""

from __future__ import annotations

import shlex
import sys
import threading

import pytest

from ._config import SEED_KEY, SETTINGS_KEY, SHOWN_KEY, Settings
from ._harness import Harness
from ._report import failure_section, output_sections, timeline_html, write_timeline

__all__ = ["add_failure_sections", "add_output_sections", "stack_timer"]


def stack_timer(item: pytest.Item, timeout: float) -> threading.Timer:
    """A started timer that prints the stack of every child of ``item`` just before
    pytest-timeout's ``thread`` method ends the process (``timeout`` seconds)."""
    t = threading.Timer(max(0.0, timeout - min(1.0, timeout * 0.2)), _dump_children, args=(item,))
    t.daemon = True
    t.name = "mpfault-timeout-stacks"
    t.start()
    return t


def _dump_children(item: pytest.Item) -> None:
    from ._config import HARNESS_KEY

    harness = item.stash.get(HARNESS_KEY, None)
    if harness is None or harness.closed:
        return
    out = sys.__stderr__
    if out is None:
        return
    lines = [f"\n{'+' * 20} mpfault: children of {item.nodeid} {'+' * 20}"]
    for c in harness.children:
        if c.is_alive():
            lines.append(f"--- {c.name} (pid {c.pid}) ---\n{c.stack(timeout=0.5)}")
        else:
            lines.append(f"--- {c.name} (pid {c.process.pid}): exit code {c.exitcode} ---")
    out.write("\n".join(lines) + "\n")
    out.flush()


def add_output_sections(item: pytest.Item, call: pytest.CallInfo[None], harness: Harness) -> None:
    """Add the children's new output to ``item``'s sections of phase ``call.when``.

    Through item sections, so that the teardown report (which junitxml writes)
    carries every phase's output too.
    """
    shown = item.stash.setdefault(SHOWN_KEY, {})
    outputs = harness.outputs if call.when == "teardown" else harness.collect_outputs()
    for key, text in output_sections(harness, outputs, shown):
        item.add_report_section(call.when, key, text)


def _attach_html(report: pytest.TestReport, page: str) -> None:
    """Attach the timeline to the report for pytest-html (as an inline frame)."""
    try:
        from pytest_html import extras  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - pytest-html without its extras module
        return
    import html

    frame = (
        '<iframe class="mpfault-timeline" style="width:100%;height:640px;border:0" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
    )
    current = getattr(report, "extras", [])
    report.extras = [*current, extras.html(frame)]  # type: ignore[attr-defined]


def _replay_line(item: pytest.Item, settings: Settings, seed: int) -> str:
    parts = ["pytest", shlex.quote(item.nodeid), f"--mpfault-seed={seed}"]
    if settings.faults_source in ("--mpfault", "env MPFAULT"):
        parts += [shlex.quote(f"--mpfault={f}") for f in settings.faults]
    return " ".join(parts)


def add_failure_sections(item: pytest.Item, report: pytest.TestReport, harness: Harness) -> None:
    """Add the mpfault sections of a failed setup or call to ``report``."""
    seed = item.config.stash[SEED_KEY]
    replay = _replay_line(item, item.config.stash[SETTINGS_KEY], seed)
    history = harness.history  # read once for every part of the report
    text = failure_section(harness, seed, replay, history)
    report.sections.append(("mpfault", text))
    summary = report.longreprtext.strip().splitlines()[-1:] if report.longrepr else []
    failure = summary[0][:300] if summary else None
    directory = item.config.getoption("mpfault_report", None)
    if directory:
        path = write_timeline(harness, directory, failure, history)
        report.sections.append(("mpfault timeline", path))
    if item.config.pluginmanager.hasplugin("html") and item.config.getoption("htmlpath", None):
        _attach_html(report, timeline_html(harness, failure, history))
    for extra in item.config.hook.pytest_mpfault_report_sections(
        harness=harness, item=item, report=report
    ):
        if extra:
            report.sections.extend(extra)
