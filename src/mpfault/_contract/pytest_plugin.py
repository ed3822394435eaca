"""The contract inside pytest: ``pytest --mpfault-contract [--mpfault-queue module:factory]``.

With ``--mpfault-contract`` every contract cell becomes an ordinary test item under a
``contract`` collector, with ids such as
``contract::row05-put-timeout-raises-full[Q-spawn]``, so ``-k``, ``-m mpfault_contract``,
xdist and the usual reports work.  A check of documented behaviour that is violated
fails; a skipped cell is a pytest skip with its reason; an implementation detail that
differs from the reference is an xfail with what was observed (never a failure).  Each
item carries its result as JSON in ``user_properties`` (``mpfault_contract``) and in a
report section.

Without the flag this plugin adds nothing but its two options.

mpfault's main plugin registers this module; it can choose the start methods the
contract runs for by setting ``config.stash[CONTRACT_METHODS_KEY]`` in its
``pytest_configure`` (default: every start method available).  The timeout tolerance
comes from :func:`mpfault._timing.get_default_tolerance`, which the main plugin sets
from the ini key ``mpfault_timeout_tolerance``.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

from .._runtime.errors import MpfaultError
from .model import ALL_KINDS, Check, Result
from .runner import ContractRunner, CustomFactory, FactoryError, load_factory, plan, select_rows

__all__ = [
    "CONTRACT_METHODS_KEY",
    "ContractCollector",
    "ContractItem",
    "ContractViolation",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
]

#: Start methods the contract runs for (set by the main plugin; default: all available).
CONTRACT_METHODS_KEY = pytest.StashKey[tuple[str, ...]]()
_FACTORY_KEY = pytest.StashKey[CustomFactory | None]()
_RUNNER_KEY = pytest.StashKey[ContractRunner]()

CONTRACT_HELP = (
    "Also collect the documented-behaviour contract of multiprocessing queues as test "
    "items (contract::rowNN-...[KIND-METHOD])"
)
QUEUE_HELP = (
    "Run the contract against a third-party queue: FACTORY(ctx, maxsize) returns a new "
    "queue (ctx: the multiprocessing context of the start method; maxsize 0: unbounded)"
)
MARKER = (
    "mpfault_contract: a cell of the documented-behaviour contract of multiprocessing "
    "queues (added by --mpfault-contract)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--mpfault-contract`` and ``--mpfault-queue`` to the "mpfault" option group."""
    group = parser.getgroup("mpfault")
    group.addoption(
        "--mpfault-contract",
        action="store_true",
        default=False,
        dest="mpfault_contract",
        help=CONTRACT_HELP,
    )
    group.addoption(
        "--mpfault-queue",
        dest="mpfault_queue",
        metavar="MODULE:FACTORY",
        default=None,
        help=QUEUE_HELP,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Validate ``--mpfault-queue`` (a ``pytest.UsageError`` naming it) and add the marker."""
    spec = config.getoption("mpfault_queue", None)
    enabled = bool(config.getoption("mpfault_contract", False))
    factory = None
    if spec is not None:
        if not enabled:
            raise pytest.UsageError("--mpfault-queue needs --mpfault-contract")
        try:
            factory = load_factory(spec)
        except FactoryError as exc:
            raise pytest.UsageError(f"--mpfault-queue={spec}: {exc}") from None
    config.stash[_FACTORY_KEY] = factory
    if enabled:
        config.addinivalue_line("markers", MARKER)


class ContractViolation(MpfaultError):
    """A documented behaviour was violated (the failure of a contract item)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.observed)
        self.result = result


def _runner(config: pytest.Config) -> ContractRunner:
    runner = config.stash.get(_RUNNER_KEY, None)
    if runner is None:
        runner = ContractRunner(factory=config.stash.get(_FACTORY_KEY, None))
        config.stash[_RUNNER_KEY] = runner
        config.add_cleanup(runner.close)
    return runner


def _describe(result: Result) -> str:
    c = result.check
    lines = [
        f"row {c.row} ({c.kind}): {c.title}",
        f"queue kind {result.queue_kind}, start method {result.method}, Python {c.versions}",
        f"source: {c.source}",
        f"expected: {c.expect}",
        f"{result.status}: {result.observed}",
    ]
    if result.figures:
        lines.append("figures: " + ", ".join(f"{k}={v}" for k, v in result.figures.items()))
    return "\n".join(lines)


class ContractItem(pytest.Item):
    """One contract cell: a check for one queue kind and start method."""

    def __init__(self, *, check: Check, queue_kind: str, method: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.queue_kind = queue_kind
        self.method = method
        self.add_marker("mpfault_contract")
        reason = check.skip_reason(queue_kind, method)
        if reason is not None:
            self.add_marker(pytest.mark.skip(reason=reason))

    def runtest(self) -> None:
        """Run the cell; fail only on a violation of documented behaviour."""
        result = _runner(self.config).run(self.check, self.queue_kind, self.method)
        self.user_properties.append(("mpfault_contract", json.dumps(result.to_json())))
        self.add_report_section("call", "mpfault contract", _describe(result))
        if result.status == "skip":
            pytest.skip(result.observed)
        if result.violation:
            raise ContractViolation(result)
        if result.status in ("differs", "error"):
            pytest.xfail(f"implementation detail {result.status}: {result.observed}")

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> Any:
        """Show the violation as text: the row, its source, what was expected and seen."""
        if isinstance(excinfo.value, ContractViolation):
            return "documented behaviour violated\n" + _describe(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        """Location shown in reports: the contract cell, not a file line."""
        return self.path, 0, f"contract {self.name}"


class ContractCollector(pytest.Collector):
    """The ``contract`` node: collects one :class:`ContractItem` per cell."""

    def collect(self) -> Iterator[ContractItem]:
        """Yield the cells for the start methods and queue kinds of this run."""
        config = self.config
        methods = config.stash.get(CONTRACT_METHODS_KEY, None) or tuple(
            multiprocessing.get_all_start_methods()
        )
        custom = config.stash.get(_FACTORY_KEY, None) is not None
        for check, kind, method in plan(select_rows(None), methods, ALL_KINDS, custom):
            name = Result(check, kind, method, "skip", "", {}, 0.0).test_id
            yield ContractItem.from_parent(
                self, name=name, check=check, queue_kind=kind, method=method
            )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """With ``--mpfault-contract``, append the contract items (before ``-k``/``-m``)."""
    if not config.getoption("mpfault_contract", False):
        return
    collector = ContractCollector.from_parent(session, name="contract", nodeid="contract")
    cells: list[pytest.Item | pytest.Collector] = list(collector.collect())
    # Report them like any collected node, so "collected N items" counts them.
    config.hook.pytest_collectreport(
        report=pytest.CollectReport(collector.nodeid, "passed", None, cells)
    )
    items.extend(c for c in cells if isinstance(c, pytest.Item))
