"""Running contract cells: one check for one queue kind and start method.

The queue under test comes from a :class:`~mpfault._contract.provider.QueueProvider`:
CPython's own queues (``Q``, ``JQ``, ``SQ``, ``MQ``) by default, or the provider given
by ``--queue`` (see :mod:`mpfault._contract.provider`).  Every cell makes its queues
through the provider and starts its children from the provider's context.  Before a
run against a provider, :func:`preflight` makes one queue per start method and has a
child put and get one item, so that a provider that cannot work at all gives one clear
error instead of a matrix of failures.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext
from typing import Any

from .._errors import LOST_FORKSERVER_STATUS
from .._timing import TimingError, get_default_tolerance
from . import _children
from .context import (
    Call,
    CheckContext,
    QueueFactory,
    _discard_queue,
    drop_tracebacks,
    exc_text,
    reap,
)
from .model import (
    ALL_KINDS,
    NO_QUEUE,
    Check,
    Mismatch,
    Outcome,
    Report,
    Result,
    Unsupported,
)
from .provider import (
    KIND_API,
    KIND_LABELS,
    ProviderError,
    QueueProvider,
    StdlibProvider,
    load_provider,
    probe_kind,
)
from .registry import all_checks

__all__ = [
    "CHECK_DEADLINE",
    "ContractRunner",
    "CustomFactory",
    "FactoryError",
    "load_factory",
    "load_provider",
    "plan",
    "preflight",
    "run_contract",
    "select_rows",
]

#: Seconds after which a check that has not finished is reported as an error (hung).
CHECK_DEADLINE = 60.0

#: ``factory(ctx, maxsize)`` returns a new queue (see the module docstring).
CustomFactory = Callable[[BaseContext, int], Any]

_FORK_WARNING = r"This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"


FactoryError = ProviderError


def load_factory(spec: str) -> QueueProvider:
    """The provider ``--queue SPEC`` names (kept for callers of the older name)."""
    return load_provider(spec)


def select_rows(rows: Iterable[int] | None) -> tuple[Check, ...]:
    """The checks whose row is in *rows* (all checks if ``None``)."""
    checks = all_checks()
    if rows is None:
        return checks
    wanted = set(rows)
    return tuple(c for c in checks if c.row in wanted)


def plan(
    checks: Sequence[Check],
    methods: Sequence[str],
    kinds: Sequence[str],
    custom: bool = False,
) -> list[tuple[Check, str, str]]:
    """The cells ``(check, queue kind, start method)`` to run, start method first.

    A check gets a cell for each of its queue kinds that is in *kinds* (``-`` for a
    check that uses no queue).  With *custom* (a provider's run: *kinds* is its one
    kind) checks that use no queue are left out.
    """
    cells: list[tuple[Check, str, str]] = []
    for method in methods:
        for c in checks:
            ks = [k for k in c.kinds if (k == NO_QUEUE and not custom) or k in kinds]
            cells.extend((c, k, method) for k in ks)
    return cells


class ContractRunner:
    """Runs contract cells and owns what the cells of a start method share.

    Args:
        tolerance: seconds a timeout may overshoot (default: the timing module's
            default, which the pytest plugin sets from ``mpfault_timeout_tolerance``).
        provider: the provider of the queue under test; ``None`` for CPython's queues
            (one :class:`~mpfault._contract.provider.StdlibProvider` per kind).
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
        provider: QueueProvider | None = None,
        check_deadline: float = CHECK_DEADLINE,
        isolate_warnings: bool = True,
    ) -> None:
        self.tolerance = get_default_tolerance() if tolerance is None else tolerance
        self.isolate_warnings = isolate_warnings
        self.provider = provider
        self.check_deadline = check_deadline
        self._stdlib: dict[str, StdlibProvider] = {}
        self._shared: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The queue kinds this runner tests (the provider's one kind, or all four)."""
        if self.provider is not None:
            return (self.provider.kind or "Q",)
        return ALL_KINDS

    def provider_for(self, kind: str, method: str) -> QueueProvider | None:
        """The provider of *kind*, set up for *method* (``None`` for kind ``-``)."""
        if kind == NO_QUEUE:
            return None
        with self._lock:
            if self.provider is not None:
                prov: QueueProvider = self.provider
            else:
                if kind not in ALL_KINDS:
                    raise ValueError(f"unknown queue kind {kind!r} (known: {', '.join(ALL_KINDS)})")
                prov = self._stdlib.setdefault(kind, StdlibProvider(kind))
            if prov.method != method:
                if prov.method is not None:
                    prov.teardown()
                prov.setup(method)
            return prov

    def queue_factory(self, kind: str, method: str) -> QueueFactory | None:
        """``make(maxsize)`` for *kind* under *method* (``None`` for kind ``-``)."""
        prov = self.provider_for(kind, method)
        return None if prov is None else prov.make

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
        try:
            prov = self.provider_for(kind, method)
        except Exception as exc:
            observed = f"the provider's setup({method!r}) raised {exc_text(exc)}"
            return Result(check, kind, method, "error", observed, {}, 0.0), []
        cx = CheckContext(
            method=method,
            mp=prov.ctx if prov is not None else multiprocessing.get_context(method),
            kind=kind,
            make=prov.make if prov is not None else None,
            tolerance=self.tolerance,
            shared=self._shared.setdefault(method, {}),
            stdlib=prov.stdlib if prov is not None else True,
            provider=prov,
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
            error = call.exception
            if error is None:
                outcome = call.value()
                assert outcome is not None
                status, observed = outcome.status, outcome.observed
            elif isinstance(error, Unsupported):
                status, observed = "skip", str(error)
            elif isinstance(error, AssertionError) and not _raised_by_queue(error):
                status, observed = "fail", str(error) or f"{type(error).__name__} in the check"
            elif isinstance(error, Exception):
                status, observed = "error", _describe_error(error)
            else:
                raise error  # KeyboardInterrupt and the like
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
        """Release what the cells of *method* shared (managers, shared scenarios)."""
        with self._lock:
            provs: list[QueueProvider] = list(self._stdlib.values())
            if self.provider is not None:
                provs.append(self.provider)
            for prov in provs:
                if prov.method == method:
                    try:
                        prov.teardown()
                    except Exception:  # pragma: no cover - a provider's bug
                        pass
        self._shared.pop(method, None)

    def close(self) -> None:
        """Release everything (tear every provider down)."""
        for prov in [*self._stdlib.values(), *([self.provider] if self.provider else [])]:
            if prov.method is not None:
                self.finish_method(prov.method)
        self._shared.clear()


def _in_contract(filename: str) -> bool:
    return f"{os.sep}_contract{os.sep}" in filename


def _raised_by_queue(exc: BaseException) -> bool:
    """Whether *exc* was raised inside the queue's code (not by a check's assertion)."""
    if isinstance(exc, (Mismatch, TimingError)):
        return False
    tb = traceback.extract_tb(exc.__traceback__)
    return bool(tb) and not _in_contract(tb[-1].filename)


def _describe_error(exc: BaseException) -> str:
    """What raised *exc*: the queue call (source text and site) or the check's line."""
    tb = traceback.extract_tb(exc.__traceback__)
    text = exc_text(exc)
    last = None
    for n, frame in enumerate(tb):
        if _in_contract(frame.filename):
            last = n
    if last is None:
        return f"raised {text}"
    site = tb[last]
    where = f"{os.path.basename(site.filename)}:{site.lineno}"
    line = (site.line or "").strip()
    if last + 1 < len(tb):
        callee = tb[last + 1]
        module = callee.filename.rsplit(os.sep, 2)
        place = "/".join(module[-2:])
        return (
            f"`{line}` raised {text} in {callee.name}() at {place}:{callee.lineno} "
            f"(contract error, not counted against the queue; called at {where})"
        )
    return f"`{line}` raised {text} (contract error, not counted against the queue; at {where})"


def preflight(provider: QueueProvider, methods: Sequence[str], deadline: float = 20.0) -> list[str]:
    """Try *provider* before a run: per start method, make a queue, have a child get one
    item and put one back.  Probes the kind if the provider does not declare it.

    Returns lines describing the provider (kind, context, missing methods).

    Raises:
        ProviderError: one message naming what failed (no matrix is run).
    """
    lines: list[str] = []
    name = provider.name
    for method in methods:
        try:
            if provider.method is not None:
                provider.teardown()
            provider.setup(method)
        except ProviderError as exc:
            raise ProviderError(f"{name}: {exc}") from None
        except Exception as exc:
            raise ProviderError(f"{name}: setup({method!r}) raised {exc_text(exc)}") from None
        try:
            _preflight_method(provider, method, deadline, lines)
        finally:
            provider.teardown()
    return lines


def _preflight_method(
    provider: QueueProvider, method: str, deadline: float, lines: list[str]
) -> None:
    name = provider.name
    ctx = provider.ctx
    try:
        q = provider.make(0)
    except Exception as exc:
        call = getattr(provider, "call_text", f"{name}.make(0)")
        raise ProviderError(
            f"{name}: making a queue ({call}, maxsize=0) for {method} raised {exc_text(exc)}"
        ) from None
    procs: list[Any] = []
    try:
        if provider.kind is None:
            provider.kind, provider.kind_reason = probe_kind(q)
        kind = provider.kind
        if not lines:
            lines.append(
                f"queue {name}: behaves like {KIND_LABELS[kind]} ({provider.kind_reason}); "
                f"children from {provider.context_name}"
            )
            missing = [n for n in KIND_API[kind] if not callable(getattr(q, n, None))]
            if missing:
                lines.append(
                    f"queue {name}: lacks {', '.join(m + '()' for m in missing)}, which "
                    f"{KIND_LABELS[kind]} documents (rows using them fail)"
                )
        r, w = ctx.Pipe(duplex=False)
        proc_name = f"{provider.context_name.split(' ')[0]}({method!r}).Process"
        hint = ""
        if provider.context_name == "multiprocessing.get_context" and not provider.stdlib:
            hint = " (does the queue need its package's context? give --context pkg:get_context)"
        try:
            p = ctx.Process(target=_children.preflight_child, args=(q, w), daemon=True)
            procs.append(p)
            p.start()
        except Exception as exc:
            raise ProviderError(
                f"{name}: starting a child from {proc_name} with the queue raised "
                f"{exc_text(exc)}{hint}"
            ) from None
        try:
            q.put("mpfault-ping", timeout=deadline) if kind != "SQ" else q.put("mpfault-ping")
        except Exception as exc:
            hint = ""
            if type(exc).__name__ == "Full":
                hint = (
                    " on a queue made with maxsize=0, which means unbounded in CPython (if "
                    "another maxsize means unbounded for this queue, say so in a "
                    "QueueProvider: see the guide)"
                )
            raise ProviderError(
                f"{name}: put('mpfault-ping') under {method} raised {exc_text(exc)}{hint}"
            ) from None
        if not r.poll(deadline):
            p.join(0.5)
            raise ProviderError(
                f"{name}: the child started from {proc_name} reported nothing within "
                f"{deadline:g} s of put('mpfault-ping') (exit code {p.exitcode})"
            )
        status, text = r.recv()
        if status != "ok":
            raise ProviderError(f"{name}: in the child started from {proc_name}, {text}{hint}")
        getter = Call(q.get, name="mpfault-preflight-get")
        if not getter.join(deadline):
            raise ProviderError(
                f"{name}: get() under {method} returned nothing within {deadline:g} s after "
                "the child put ('pong', ...)"
            )
        try:
            got = getter.value()
        except Exception as exc:
            raise ProviderError(f"{name}: get() under {method} raised {exc_text(exc)}") from None
        if got != ("pong", "mpfault-ping"):
            raise ProviderError(
                f"{name}: under {method} the child put ('pong', 'mpfault-ping') and get() "
                f"returned {got!r}"
            )
        r.close()
        w.close()
    finally:
        reap(procs)
        _discard_queue(q)


def run_contract(
    *,
    methods: Sequence[str],
    kinds: Sequence[str] = ALL_KINDS,
    rows: Iterable[int] | None = None,
    provider: QueueProvider | None = None,
    target: str = "stdlib",
    tolerance: float | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_method: Callable[[str, int, float | None], None] | None = None,
) -> Report:
    """Run the contract and return its :class:`Report`.

    Args:
        methods: start methods, in order.
        kinds: stdlib queue kinds (ignored when *provider* is given).
        rows: row numbers to run (default: all).
        provider: the provider of the queue under test (run :func:`preflight` first:
            it probes the kind); ``None``: CPython's queues.
        target: the label of what is tested (``stdlib`` or the ``--queue`` spec).
        tolerance: seconds a timeout may overshoot (default: the timing default).
        on_result: called with each result as it comes.
        on_method: called as ``(method, cells, None)`` before a start method's cells
            and ``(method, cells, seconds)`` after them.
    """
    custom = provider is not None
    runner = ContractRunner(tolerance=tolerance, provider=provider, isolate_warnings=False)
    run_kinds = list(runner.kinds) if custom else list(kinds)
    report = Report(
        methods=list(methods),
        kinds=run_kinds,
        target=target,
        tolerance=runner.tolerance,
    )
    if provider is not None:
        report.provider = provider.describe()
    else:
        report.provider = {"name": "stdlib", "package": "python", "version": report.python}
    cells = plan(select_rows(rows), methods, run_kinds, custom)
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
