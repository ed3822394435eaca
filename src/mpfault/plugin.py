"""The pytest plugin (entry point ``mpfault``): options, ini keys, the marker, the
``mpfault`` fixture.

It costs nothing until used: importing it loads only what registering those needs
(:mod:`._config`); the harness loads with the first test that uses the fixture, the
report with the first report of such a test (:mod:`._pytest_report`), the contract
plugin only when ``--mpfault-contract`` or ``--mpfault-queue`` is given.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from . import _config, _hookspecs
from ._config import HARNESS_KEY, HELP, SEED_KEY, SETTINGS_KEY, TIMEOUT_KEY

if TYPE_CHECKING:
    from ._harness import Harness

__all__ = ["mpfault"]

#: the contract plugin, registered when its options are given (or help is asked for)
_CONTRACT = "mpfault._contract.pytest_plugin"
#: the report sections of served queues and programs, registered with this plugin
_SERVE = "mpfault._serve_plugin"
_CONTRACT_FLAGS = (
    "--mpfault-contract",
    "--mpfault-queue",
    "--mpfault-queue-context",
    "--mpfault-queue-kind",
    "--help",
    "-h",
)


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
    group.addoption("--mpfault-report", dest="mpfault_report", metavar="DIR", help=HELP["report"])
    for arg in ("key", "show"):
        group.addoption(
            f"--mpfault-{arg}",
            dest=f"mpfault_{arg}",
            metavar="[GLOB=]MODULE:FUNCTION,...",
            help=HELP[arg],
        )
    group.addoption(
        "--mpfault-instrument",
        dest="mpfault_instrument",
        action="store_true",
        default=None,
        help=HELP["instrument"],
    )
    parser.addini("mpfault_start_methods", HELP["start_methods"], default="")
    parser.addini("mpfault_faults", HELP["faults"], type="linelist", default=[])
    parser.addini("mpfault_deadline", HELP["deadline"], default="")
    parser.addini("mpfault_grace", HELP["grace"], default="")
    parser.addini("mpfault_timeout_tolerance", HELP["timeout_tolerance"], default="")
    parser.addini("mpfault_tmpdir", HELP["tmpdir"], default="")
    parser.addini("mpfault_instrument", HELP["instrument"], default="")
    parser.addini("mpfault_key", HELP["key"], type="linelist", default=[])
    parser.addini("mpfault_show", HELP["show"], type="linelist", default=[])


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # the contract plugin adds its options when registered (a historic hook): before
    # the command line is parsed, and only when it is asked for
    pm = early_config.pluginmanager
    if any(a.split("=", 1)[0] in _CONTRACT_FLAGS for a in args) and not pm.has_plugin(
        "mpfault-contract"
    ):
        import importlib

        pm.register(importlib.import_module(_CONTRACT), "mpfault-contract")


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
        self.timers: dict[str, Any] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> Any:
        timeout = float(getattr(settings, "timeout", 0) or 0)
        method = str(getattr(settings, "method", ""))
        if timeout > 0 and _uses_mpfault(item):
            # the harness and the report load now, before the timer starts: compiled on
            # a loaded machine (no bytecode cache: assertion rewriting, or
            # PYTHONDONTWRITEBYTECODE) they took most of a 2 s timeout
            from . import _pytest_report  # noqa: F401
        if timeout > 0:
            item.stash[TIMEOUT_KEY] = (timeout, method)
            item.stash[_config.TIMEOUT_START_KEY] = time.monotonic()
            if method == "thread":
                from ._pytest_report import stack_timer

                self.timers[item.nodeid] = stack_timer(item, timeout)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> Any:
        t = self.timers.pop(item.nodeid, None)
        if t is not None:
            t.cancel()
        return (yield)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _config.MARKER_HELP)
    settings, seed = _config.configure(config)
    contract = config.pluginmanager.get_plugin("mpfault-contract")
    if contract is not None:
        config.stash[contract.CONTRACT_METHODS_KEY] = settings.start_methods
    workerinput = getattr(config, "workerinput", None)
    if config.pluginmanager.hasplugin("xdist") and workerinput is None:
        config.pluginmanager.register(_XdistHooks(seed), "mpfault-xdist")
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(_TimeoutHooks(), "mpfault-timeout")
    # served queues and programs (their report sections); part of this plugin, so that
    # -p no:mpfault disables it too
    if not config.pluginmanager.has_plugin("mpfault-serve"):
        import importlib

        config.pluginmanager.register(importlib.import_module(_SERVE), "mpfault-serve")
    # SIGTERM is made to clean up like SIGINT when the first harness is made
    # (Harness.from_item): a session without an mpfault test keeps Python's default


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import tempfile

    from ._rundir import remove_stale

    signals = sys.modules.get("mpfault._signals")
    if signals is not None:
        signals.release_sigterm(config)
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None:
        # run directories of test processes that died without removing theirs (killed
        # inner runs of this session, a SIGKILLed earlier run): only those of dead owners
        remove_stale(settings.tmpdir or tempfile.gettempdir())


def pytest_report_header(config: pytest.Config) -> list[str]:
    return _config.header(config.stash[SETTINGS_KEY], config.stash[SEED_KEY])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mpfault" not in metafunc.fixturenames:
        return
    try:
        methods = list(_config.for_definition(metafunc.definition).start_methods)
    except pytest.UsageError as e:
        # a collection error of one line (the marker's), not a traceback of pluggy frames
        raise pytest.Collector.CollectError(str(e)) from None
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
    from ._harness import Harness

    item = request.node
    harness = Harness.from_item(item, getattr(request, "param", None))
    item.stash[HARNESS_KEY] = harness
    request.config.hook.pytest_mpfault_harness_created(harness=harness, item=item)
    try:
        yield harness
    finally:
        problems = harness.close()
    if problems:
        pytest.fail("mpfault teardown: " + "; ".join(problems), pytrace=False)


def _wants_instrument(item: pytest.Item) -> bool:
    """Whether a test that does not use the fixture is instrumented all the same."""
    if "mpfault" in getattr(item, "fixturenames", ()):
        return False
    marker = item.get_closest_marker("mpfault")
    if not item.config.stash[SETTINGS_KEY].instrument and (
        marker is None or not marker.kwargs.get("instrument")
    ):
        return False
    return _config.for_item(item)[0].instrument


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    if _wants_instrument(item):
        from ._harness import Harness

        harness = Harness.from_item(item)
        item.stash[HARNESS_KEY] = harness
        item.config.hook.pytest_mpfault_harness_created(harness=harness, item=item)
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        return (yield)
    finally:
        harness = item.stash.get(HARNESS_KEY, None)
        if (
            harness is not None
            and not harness.closed
            and "mpfault" not in getattr(item, "fixturenames", ())
        ):
            problems = harness.close()
            if problems:
                pytest.fail("mpfault teardown: " + "; ".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    harness = item.stash.get(HARNESS_KEY, None)
    if harness is not None and not harness.closed:
        # only while the test's own code runs: a slow setup or report (a loaded machine)
        # must never see the deadline's signal
        harness.watch_main_thread()
    try:
        return (yield)
    finally:
        # the deadline bounds the test's own blocking calls; the report and teardown
        # that follow have their own bounds
        harness = item.stash.get(HARNESS_KEY, None)
        if harness is not None:
            harness.stop_watching()


def _uses_mpfault(item: pytest.Item) -> bool:
    """Whether ``item`` gets a harness (the fixture, or instrumentation without it)."""
    return "mpfault" in getattr(item, "fixturenames", ()) or _wants_instrument(item)


def _timeout_fired(exc: BaseException) -> bool:
    """Whether ``exc`` is pytest-timeout's ``signal`` method firing (``pytest.fail``
    raised from its SIGALRM handler, wherever the main thread was)."""
    return isinstance(exc, pytest.fail.Exception) and str(exc.msg).startswith("Timeout (")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    harness = item.stash.get(HARNESS_KEY, None)
    if harness is None:
        return (yield)
    # pytest-timeout's signal may fire while the report is being written (a loaded
    # machine, a slow report hook): what it raises there would end the session in an
    # INTERNALERROR and lose the test's report; it fails this report instead
    fired: list[str] = []
    try:
        from ._pytest_report import add_failure_sections, add_output_sections

        add_output_sections(item, call, harness)
    except pytest.fail.Exception as e:
        if not _timeout_fired(e):
            raise
        fired.append(str(e.msg))
    try:
        report: pytest.TestReport = yield
    except pytest.fail.Exception as e:
        if not _timeout_fired(e):
            raise
        fired.append(str(e.msg))
        report = pytest.TestReport.from_item_and_call(item, call)
    if report.failed and call.when in ("call", "setup") and not fired:
        try:
            add_failure_sections(item, report, harness)
        except pytest.fail.Exception as e:
            if not _timeout_fired(e):
                raise
            fired.append(str(e.msg))
    if fired:
        _timed_out_in_report(report, fired[0])
    return report


def _timed_out_in_report(report: pytest.TestReport, message: str) -> None:
    """Fail ``report``: pytest-timeout fired (``message``) while it was being written."""
    note = (
        f"{message} It fired while the report of this test's {report.when} was being "
        "written: the mpfault section may be missing or cut short."
    )
    if report.passed or report.longrepr is None:
        report.longrepr = note
    else:
        report.sections.append(("mpfault", note))
    report.outcome = "failed"
