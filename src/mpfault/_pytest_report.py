"""What the plugin adds to the report of a test that used the ``mpfault`` fixture:
its children's output, and for a failure the mpfault section, the replay line, the
timeline (text, ``--mpfault-report`` files, pytest-html) and other plugins' sections.

Loaded by :mod:`.plugin` with the first report of such a test.
"""

from __future__ import annotations

import sys
import threading

import pytest

from ._config import SEED_KEY, SETTINGS_KEY, SHOWN_KEY, Settings
from ._harness import Harness
from ._report import failure_section, output_sections, timeline_html, write_timeline

__all__ = ["add_failure_sections", "add_output_sections", "stack_timer"]


def stack_timer(item: pytest.Item, timeout: float) -> threading.Timer:
    """A started timer that prints the stack of every child of ``item`` just before
    pytest-timeout's ``thread`` method ends the process (``timeout`` seconds), and then,
    right before, closes the harness (``os._exit`` runs no teardown: no child, no run
    directory would be cleaned up).

    It fires after mpfault's deadline (kept at ``max(timeout - 1, timeout / 2)``),
    which ends a blocking call of the main thread with a :class:`Hang` first; the
    timer is what is left when even that could not end the test (a call signals do
    not interrupt, a teardown that outlasts the timeout)."""
    dump_at = max(0.0, timeout - min(0.5, timeout * 0.1))
    close_at = max(dump_at, timeout - min(0.2, timeout * 0.05))

    def fire() -> None:
        _dump_children(item)
        # cancel() (the test ended in time) sets ``finished``; else pytest-timeout is
        # about to end the process
        if not t.finished.wait(max(0.0, close_at - dump_at)):
            _close_harness(item)

    t = threading.Timer(dump_at, fire)
    t.daemon = True
    t.name = "mpfault-timeout-stacks"
    t.start()
    return t


def _close_harness(item: pytest.Item) -> None:
    from ._config import HARNESS_KEY

    harness = item.stash.get(HARNESS_KEY, None)
    if harness is not None and not harness.closed:
        harness.close()


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


def _replay_line(item: pytest.Item, settings: Settings, seed: int, harness: Harness) -> str:
    """``python -m pytest NODEID --mpfault-seed=N`` with every option that shaped the run."""
    from ._report import replay_command

    return replay_command(
        item.nodeid,
        seed,
        start_method=harness.start_method,
        settings=settings,
        args=item.config.invocation_params.args,
    )


def add_failure_sections(item: pytest.Item, report: pytest.TestReport, harness: Harness) -> None:
    """Add the mpfault sections of a failed setup or call to ``report``."""
    seed = item.config.stash[SEED_KEY]
    replay = _replay_line(item, item.config.stash[SETTINGS_KEY], seed, harness)
    history = harness.history  # read once for every part of the report
    text = failure_section(harness, seed, replay, history, shown=report.longreprtext)
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
