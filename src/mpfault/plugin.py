"""The pytest plugin (entry point ``mpfault``): options, ini keys, the marker, the
``mpfault`` fixture, and what a failing test's report shows.

Kept thin: the harness, the runtime and the checkers live in their own modules.
"""

from __future__ import annotations

import random
import shlex
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from . import _hookspecs
from ._config import HELP, MARKER_HELP, Settings, resolve, session_settings
from ._harness import Harness
from ._report import failure_section, output_sections, timeline_html, write_timeline
from ._runtime.state import derive_seed

__all__ = ["mpfault"]

SEED_KEY = pytest.StashKey[int]()
SETTINGS_KEY = pytest.StashKey[Settings]()
HARNESS_KEY = pytest.StashKey[Harness]()
SHOWN_KEY = pytest.StashKey[dict[str, tuple[int, int]]]()
TIMEOUT_KEY = pytest.StashKey[tuple[float, str]]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_hookspecs)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("mpfault", "multiprocessing queue fault injection (pytest-mpfault)")
    group.addoption(
        "--mpfault-start-methods",
        dest="mpfault_start_methods",
        metavar="METHODS",
        help=HELP["start_methods"],
    )
    group.addoption(
        "--mpfault",
        dest="mpfault_faults",
        action="append",
        metavar="SPEC",
        help=HELP["faults"].replace("%", "%%"),  # argparse formats help with %
    )
    group.addoption("--mpfault-seed", dest="mpfault_seed", metavar="N", help=HELP["seed"])
    group.addoption(
        "--mpfault-deadline", dest="mpfault_deadline", metavar="SECONDS", help=HELP["deadline"]
    )
    group.addoption("--mpfault-tmpdir", dest="mpfault_tmpdir", metavar="DIR", help=HELP["tmpdir"])
    group.addoption(
        "--mpfault-report",
        dest="mpfault_report",
        metavar="DIR",
        help="Write an HTML timeline of every failing test that used mpfault into DIR",
    )
    parser.addini("mpfault_start_methods", HELP["start_methods"], default="")
    parser.addini("mpfault_faults", HELP["faults"], type="linelist", default=[])
    parser.addini("mpfault_deadline", HELP["deadline"], default="")
    parser.addini("mpfault_grace", HELP["grace"], default="")
    parser.addini("mpfault_timeout_tolerance", HELP["timeout_tolerance"], default="")
    parser.addini("mpfault_tmpdir", HELP["tmpdir"], default="")
    from ._contract import pytest_plugin as contract

    if not pluginmanager.is_registered(contract):
        pluginmanager.register(contract, "mpfault-contract")


class _XdistHooks:
    """Hands the controller's seed to every xdist worker."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["mpfault_seed"] = self.seed


class _TimeoutHooks:
    """Work with pytest-timeout: keep mpfault's deadline below the test's timeout, and
    with the ``thread`` method (which ``os._exit``s pytest) print every child's stack
    just before it fires."""

    def __init__(self) -> None:
        self.timers: dict[str, threading.Timer] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> Any:
        timeout = float(getattr(settings, "timeout", 0) or 0)
        method = str(getattr(settings, "method", ""))
        if timeout > 0:
            item.stash[TIMEOUT_KEY] = (timeout, method)
            if method == "thread":
                t = threading.Timer(
                    max(0.0, timeout - min(1.0, timeout * 0.2)), _dump_children, args=(item,)
                )
                t.daemon = True
                t.name = "mpfault-timeout-stacks"
                t.start()
                self.timers[item.nodeid] = t
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> Any:
        t = self.timers.pop(item.nodeid, None)
        if t is not None:
            t.cancel()
        return (yield)


def _dump_children(item: pytest.Item) -> None:
    harness = item.stash.get(HARNESS_KEY, None)
    if harness is None or harness._closed:
        return
    out = sys.__stderr__
    if out is None:
        return
    lines = [f"\n{'+' * 20} mpfault: children of {item.nodeid} {'+' * 20}"]
    for c in harness.children:
        if c.is_alive():
            lines.append(f"--- {c.name} (pid {c.pid}) ---\n{c.stack(timeout=0.5)}")
        else:
            lines.append(f"--- {c.name} (pid {c._process.pid}): exit code {c.exitcode} ---")
    out.write("\n".join(lines) + "\n")
    out.flush()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    settings = session_settings(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "mpfault_seed" in workerinput:
        seed = int(workerinput["mpfault_seed"])
    elif settings.seed is not None:
        seed = settings.seed
    else:
        seed = random.randrange(10**9)
    config.stash[SEED_KEY] = seed
    config.stash[SETTINGS_KEY] = settings
    from ._contract import pytest_plugin as contract

    config.stash[contract.CONTRACT_METHODS_KEY] = settings.start_methods
    cache = getattr(config, "cache", None)
    if cache is not None and workerinput is None:
        cache.set("mpfault/seed", seed)
    if config.pluginmanager.hasplugin("xdist") and workerinput is None:
        config.pluginmanager.register(_XdistHooks(seed), "mpfault-xdist")
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(_TimeoutHooks(), "mpfault-timeout")
    try:
        from ._timing import set_default_tolerance
    except ImportError:  # pragma: no cover
        pass
    else:
        set_default_tolerance(settings.timeout_tolerance)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS_KEY]
    seed = config.stash[SEED_KEY]
    faults = "; ".join(str(f) for f in settings.faults) or "none"
    return [
        f"mpfault: seed={seed}, start methods {', '.join(settings.start_methods)}, "
        f"faults: {faults}",
        f"mpfault: replay with --mpfault-seed={seed}",
        f"mpfault: run files in {settings.tmpdir or tempfile.gettempdir()}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mpfault" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("mpfault")
    settings = resolve(metafunc.config, marker, metafunc.definition.nodeid)
    methods = list(settings.start_methods)
    metafunc.parametrize("mpfault", methods, indirect=True, ids=methods)


@pytest.fixture
def mpfault(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness for this test: spawns real processes, makes fault-injecting queues.

    Tests that use it run once per start method (ini ``mpfault_start_methods``,
    ``--mpfault-start-methods``, ``@pytest.mark.mpfault(start_methods=[...])``).
    ``mpfault.spawn(target, *args)`` starts a child, ``mpfault.queue()`` makes a
    queue, ``mpfault.history`` holds every queue operation.  At teardown every
    child and its descendants are terminated, killed and reaped (bounded waits).
    """
    item = request.node
    marker = item.get_closest_marker("mpfault")
    settings = resolve(request.config, marker, item.nodeid)
    method = getattr(request, "param", None) or settings.start_methods[0]
    fixed = marker is not None and marker.kwargs.get("seed") is not None
    base_seed = (
        settings.seed if fixed and settings.seed is not None else (request.config.stash[SEED_KEY])
    )
    deadline = settings.deadline
    timeout = item.stash.get(TIMEOUT_KEY, None)
    if timeout is not None:
        # fire our Hang (with every child's stack) before pytest-timeout does
        cap = max(timeout[0] - 1.0, timeout[0] * 0.8)
        deadline = cap if deadline is None else min(deadline, cap)
    harness = Harness(
        method,
        faults=settings.faults,
        seed=derive_seed(base_seed, item.nodeid),
        deadline=deadline,
        test_id=item.nodeid,
        grace=settings.grace,
        tmpdir=settings.tmpdir,
    )
    item.stash[HARNESS_KEY] = harness
    request.config.hook.pytest_mpfault_harness_created(harness=harness, item=item)
    try:
        yield harness
    finally:
        problems = harness.close()
    if problems:
        pytest.fail("mpfault teardown: " + "; ".join(problems), pytrace=False)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    harness = item.stash.get(HARNESS_KEY, None)
    if harness is not None:
        # child output goes through item sections, so that the teardown report (which
        # junitxml writes) carries every phase's output too
        shown = item.stash.setdefault(SHOWN_KEY, {})
        outputs = harness.outputs if call.when == "teardown" else harness.collect_outputs()
        for key, text in output_sections(harness, outputs, shown):
            item.add_report_section(call.when, key, text)
    report: pytest.TestReport = yield
    if harness is None:
        return report
    if report.failed and call.when in ("call", "setup"):
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
    return report
