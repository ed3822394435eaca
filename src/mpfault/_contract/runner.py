"""Running checks: queue factories, one cell at a time, and whole contract runs.

A *cell* is one check for one queue kind and one start method.  :class:`ContractRunner`
runs cells; it owns what cells share per start method (the ``multiprocessing`` context,
one ``Manager()`` for the MQ kind, scenarios shared between rows).  The command line
runs a whole plan through :func:`run_contract`; the pytest plugin runs one cell per
test item through the same runner.

Third-party queues: ``--queue module:factory`` names a callable
``factory(ctx, maxsize)`` that returns a new queue object, where ``ctx`` is the
``multiprocessing`` context of the start method under test and ``maxsize`` is the
capacity wanted (``0``: unbounded).  The queue must be usable from the children that
``ctx`` starts (it is passed to them as a ``Process`` argument) and should offer the
``multiprocessing.Queue`` API: ``put(obj, block=True, timeout=None)``,
``get(block=True, timeout=None)``, ``put_nowait``, ``get_nowait``, ``empty``, ``full``,
``qsize`` and, optionally, ``close``.  Checks of the generic queue API run against it;
checks of stdlib specifics are skipped.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import multiprocessing
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext
from typing import Any

from .._errors import LOST_FORKSERVER_STATUS, MpfaultError
from .._timing import get_default_tolerance
from .context import Call, CheckContext, QueueFactory, drop_tracebacks
from .model import (
    ALL_KINDS,
    CUSTOM,
    NO_QUEUE,
    Check,
    Outcome,
    Report,
    Result,
    Unsupported,
)
from .registry import all_checks

__all__ = [
    "CHECK_DEADLINE",
    "ContractRunner",
    "CustomFactory",
    "FactoryError",
    "load_factory",
    "plan",
    "run_contract",
    "select_rows",
]

#: Seconds after which a check that has not finished is reported as an error (hung).
CHECK_DEADLINE = 60.0

#: ``factory(ctx, maxsize)`` returns a new queue (see the module docstring).
CustomFactory = Callable[[BaseContext, int], Any]

_FORK_WARNING = r"This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"


class FactoryError(MpfaultError, ValueError):
    """A ``module:factory`` specification that cannot be loaded; the message says why."""


def load_factory(spec: str) -> CustomFactory:
    """Import the queue factory named by ``module:factory`` (``module:obj.attr`` works too).

    The current directory is put on ``sys.path`` if it is not there, as ``python -m``
    does, so that a factory next to the project can be named.

    Raises:
        FactoryError: when *spec* is malformed, the module cannot be imported, the
            attribute does not exist or is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(f"expected module:factory, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise FactoryError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise FactoryError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise FactoryError(f"{spec!r} is not callable")
    factory: CustomFactory = obj
    return factory


def select_rows(rows: Iterable[int] | None) -> tuple[Check, ...]:
    """The checks whose row is in *rows* (all checks if ``None``)."""
    checks = all_checks()
    if rows is None:
        return checks
    wanted = set(rows)
    return tuple(c for c in checks if c.row in wanted)


def plan(
    checks: Sequence[Check], methods: Sequence[str], kinds: Sequence[str], custom: bool = False
) -> list[tuple[Check, str, str]]:
    """The cells ``(check, queue kind, start method)`` to run, start method first.

    For a custom queue every check gets one cell of kind ``custom`` (checks that need a
    stdlib queue are then skipped when run).  Otherwise a check gets a cell for each of
    its queue kinds that is in *kinds* (``-`` for a check that uses no queue).
    """
    cells: list[tuple[Check, str, str]] = []
    for method in methods:
        for c in checks:
            if custom:
                ks: list[str] = [CUSTOM]
            else:
                ks = [k for k in c.kinds if k == NO_QUEUE or k in kinds]
            cells.extend((c, k, method) for k in ks)
    return cells


class ContractRunner:
    """Runs contract cells and owns what the cells of a start method share.

    Args:
        tolerance: seconds a timeout may overshoot (default: the timing module's
            default, which the pytest plugin sets from ``mpfault_timeout_tolerance``).
        factory: a third-party queue factory (see :func:`load_factory`); ``None`` for
            the stdlib queue kinds.
        check_deadline: seconds after which a check still running is reported as an
            error and abandoned.
        isolate_warnings: run each check under ``warnings.catch_warnings()`` that hides
            the 3.12+ "multi-threaded fork" DeprecationWarning.  Turn it off only when
            the caller does that once around cells it runs concurrently
            (``catch_warnings`` is not thread-safe).
    """

    def __init__(
        self,
        *,
        tolerance: float | None = None,
        factory: CustomFactory | None = None,
        check_deadline: float = CHECK_DEADLINE,
        isolate_warnings: bool = True,
    ) -> None:
        self.tolerance = get_default_tolerance() if tolerance is None else tolerance
        self.isolate_warnings = isolate_warnings
        self.factory = factory
        self.check_deadline = check_deadline
        self._managers: dict[str, Any] = {}
        self._shared: dict[str, dict[str, Any]] = {}

    def _manager(self, method: str) -> Any:
        if method not in self._managers:
            self._managers[method] = multiprocessing.get_context(method).Manager()
        return self._managers[method]

    def queue_factory(self, kind: str, method: str) -> QueueFactory | None:
        """``make(maxsize)`` for *kind* under *method* (``None`` for kind ``-``)."""
        mp = multiprocessing.get_context(method)
        if kind == NO_QUEUE:
            return None
        factory = self.factory
        if kind == CUSTOM and factory is None:
            raise ValueError("no custom queue factory was given")

        def make(maxsize: int = 0) -> Any:
            if kind == CUSTOM:
                assert factory is not None
                return factory(mp, maxsize)
            if kind == "Q":
                return mp.Queue(maxsize)
            if kind == "JQ":
                return mp.JoinableQueue(maxsize)
            if kind == "SQ":
                return mp.SimpleQueue()
            return self._manager(method).Queue(maxsize)

        if kind in (CUSTOM, *ALL_KINDS):
            return make
        raise ValueError(f"unknown queue kind {kind!r} (known: {', '.join(ALL_KINDS)})")

    def run(self, check: Check, kind: str, method: str) -> Result:
        """Run one cell and return its :class:`Result` (never raises for a check's failure).

        Under forkserver, a cell that did not pass while a child's exit code read 255 is
        run once more: under load the fork server can lose a child's exit status, and
        ``Process.exitcode`` then says 255 whatever the child did (CPython gh-140867).
        A second such result says so in its observation.
        """
        result, exitcodes = self._run_cell(check, kind, method)
        if not (method == "forkserver" and result.status != "pass" and 255 in exitcodes):
            return result
        result, exitcodes = self._run_cell(check, kind, method)
        if result.status != "pass" and 255 in exitcodes:
            result = dataclasses.replace(
                result,
                observed=result.observed + f" ({LOST_FORKSERVER_STATUS}; the cell was run twice)",
            )
        return result

    def _run_cell(self, check: Check, kind: str, method: str) -> tuple[Result, list[int | None]]:
        """One run of a cell: its result and the exit codes of the children it started."""
        reason = check.skip_reason(kind, method)
        if reason is not None:
            return Result(check, kind, method, "skip", reason, {}, 0.0), []
        assert check.func is not None
        func = check.func
        cx = CheckContext(
            method=method,
            mp=multiprocessing.get_context(method),
            kind=kind,
            make=self.queue_factory(kind, method),
            tolerance=self.tolerance,
            shared=self._shared.setdefault(method, {}),
        )

        def body() -> Outcome:
            if not self.isolate_warnings:
                return func(cx)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", _FORK_WARNING, DeprecationWarning)
                return func(cx)

        start = time.perf_counter()
        call = Call(body, name=f"mpfault-contract-{check.id}")
        try:
            finished = call.join(self.check_deadline)
        finally:
            cx.close()
        duration = time.perf_counter() - start
        figures_seen = dict(cx.figures)
        outcome: Outcome | None = None
        if not finished:
            status, observed = "error", f"did not finish within {self.check_deadline:g} s"
        else:
            exc = call.exception
            if exc is None:
                outcome = call.value()
                assert outcome is not None
                status, observed = outcome.status, outcome.observed
            elif isinstance(exc, Unsupported):
                status, observed = "skip", str(exc)
            elif isinstance(exc, AssertionError):  # Mismatch, TimingError
                status, observed = "fail", str(exc)
            elif isinstance(exc, Exception):
                status, observed = "error", _describe_error(exc)
            else:
                raise exc  # KeyboardInterrupt and the like
        if call.exception is not None:
            drop_tracebacks(call.exception)
        if check.kind == "detail" and status == "fail":
            status = "differs"
        figures = {**figures_seen}
        if finished and call.exception is None and outcome is not None:
            figures.update(outcome.figures)
        del call, outcome
        # Free the check's queues now: CPython code on the way (proxy and pickling
        # errors) leaves reference cycles, and a semaphore finalized by the cyclic GC
        # inside a later resource-tracker call makes 3.13 warn that it "might leak".
        gc.collect()
        result = Result(check, kind, method, status, observed, figures, duration)  # type: ignore[arg-type]
        return result, cx.exitcodes

    def finish_method(self, method: str) -> None:
        """Release what the cells of *method* shared (its manager, shared scenarios)."""
        manager = self._managers.pop(method, None)
        if manager is not None:
            try:
                manager.shutdown()
            except Exception:  # pragma: no cover - the manager died
                pass
        self._shared.pop(method, None)

    def close(self) -> None:
        """Release everything (shut the managers down)."""
        for method in list(self._managers):
            self.finish_method(method)
        self._shared.clear()


def _describe_error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(tb):
        if "_contract" in frame.filename:
            where = f" (at {os.path.basename(frame.filename)}:{frame.lineno})"
            break
    return f"raised {type(exc).__name__}: {exc}{where}"


def run_contract(
    *,
    methods: Sequence[str],
    kinds: Sequence[str] = ALL_KINDS,
    rows: Iterable[int] | None = None,
    factory: CustomFactory | None = None,
    target: str = "stdlib",
    tolerance: float | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_method: Callable[[str, int, float | None], None] | None = None,
) -> Report:
    """Run the contract and return its :class:`Report`.

    Args:
        methods: start methods, in order.
        kinds: stdlib queue kinds (ignored when *factory* is given).
        rows: row numbers to run (default: all).
        factory: a third-party queue factory; its cells have kind ``custom``.
        target: the label of what is tested (``stdlib`` or the ``module:factory``).
        tolerance: seconds a timeout may overshoot (default: the timing default).
        on_result: called with each result as it comes.
        on_method: called as ``(method, cells, None)`` before a start method's cells
            and ``(method, cells, seconds)`` after them.
    """
    custom = factory is not None
    runner = ContractRunner(tolerance=tolerance, factory=factory, isolate_warnings=False)
    report = Report(
        methods=list(methods),
        kinds=[CUSTOM] if custom else list(kinds),
        target=target,
        tolerance=runner.tolerance,
    )
    cells = plan(select_rows(rows), methods, kinds, custom)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _FORK_WARNING, DeprecationWarning)
        try:
            for method in methods:
                mine = [c for c in cells if c[2] == method]
                if on_method is not None:
                    on_method(method, len(mine), None)
                start = time.perf_counter()
                try:
                    for group in _groups(mine, concurrent=method != "fork"):
                        for result in _run_group(runner, group):
                            report.results.append(result)
                            if on_result is not None:
                                on_result(result)
                finally:
                    runner.finish_method(method)
                report.durations[method] = round(time.perf_counter() - start, 3)
                if on_method is not None:
                    on_method(method, len(mine), report.durations[method])
        finally:
            runner.close()
    return report


def _groups(
    cells: Sequence[tuple[Check, str, str]], concurrent: bool
) -> Iterator[list[tuple[Check, str, str]]]:
    """Split *cells* into groups run together: the queue kinds of a ``parallel`` check.

    Concurrency is used only when *concurrent* (not for the fork start method, where a
    child would be forked while other threads of this process run checks).
    """
    group: list[tuple[Check, str, str]] = []
    for cell in cells:
        if group and (not concurrent or not cell[0].parallel or cell[0] is not group[0][0]):
            yield group
            group = []
        group.append(cell)
    if group:
        yield group


def _run_group(runner: ContractRunner, group: list[tuple[Check, str, str]]) -> list[Result]:
    """Run the cells of *group*, concurrently if there are several; results in order."""
    if len(group) == 1:
        return [runner.run(*group[0])]
    calls = [Call(runner.run, *cell, name=f"mpfault-contract-{cell[1]}") for cell in group]
    deadline = runner.check_deadline + 30
    results: list[Result] = []
    for call, (check, kind, method) in zip(calls, group, strict=True):
        if call.join(deadline) and call.exception is None:
            results.append(call.value())
        else:
            observed = "the runner failed" if call.done else "did not finish"
            results.append(Result(check, kind, method, "error", observed, {}, 0.0))
    return results
