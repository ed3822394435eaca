"""Data model of the contract: checks, outcomes, results and the report.

A :class:`Check` is data (row number, title, whether the behaviour is documented or an
implementation detail, its source, the queue kinds, versions, platforms and start
methods it applies to) plus a function.  The function takes a
:class:`~mpfault._contract.context.CheckContext` and returns an :class:`Outcome`.  The
runner turns an outcome into a :class:`Result` for one (check, queue kind, start
method) cell; a :class:`Report` holds the results of a run and is what the table and
the JSON are rendered from.
"""

from __future__ import annotations

import platform as _platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._runtime.errors import MpfaultError

if TYPE_CHECKING:
    from .context import CheckContext

__all__ = [
    "ALL_KINDS",
    "CUSTOM",
    "KIND_NAMES",
    "NO_QUEUE",
    "Check",
    "CheckFunc",
    "CheckKind",
    "Figure",
    "Mismatch",
    "Outcome",
    "Report",
    "Result",
    "Status",
    "Unsupported",
    "failed",
    "passed",
    "skipped",
]

#: The stdlib queue kinds the contract knows.
ALL_KINDS: tuple[str, ...] = ("Q", "JQ", "SQ", "MQ")
#: The queue-kind label of a third-party queue given by ``--queue module:factory``.
CUSTOM = "custom"
#: The queue-kind label of a check that uses no queue (for example row 66).
NO_QUEUE = "-"
#: Human names of the queue kinds.
KIND_NAMES: Mapping[str, str] = {
    "Q": "multiprocessing.Queue",
    "JQ": "multiprocessing.JoinableQueue",
    "SQ": "multiprocessing.SimpleQueue",
    "MQ": "Manager().Queue()",
    CUSTOM: "custom queue factory",
    NO_QUEUE: "no queue",
}

CheckKind = Literal["documented", "detail"]
Status = Literal["pass", "fail", "differs", "skip", "error"]
Figure = float | int | str
CheckFunc = Callable[["CheckContext"], "Outcome"]


class Mismatch(MpfaultError, AssertionError):
    """Raised inside a check function when the observed behaviour is not the expected one.

    The message is the observed behaviour; the runner turns it into a ``fail`` (or
    ``differs`` for an implementation detail).
    """


class Unsupported(MpfaultError):
    """Raised inside a check function when the queue under test lacks what the check needs.

    The message is the reason (for example "the queue has no full()"); the runner turns
    it into a ``skip``.
    """


@dataclass(frozen=True)
class Outcome:
    """What a check function returns: ``pass``, ``fail`` or ``skip``, with what was seen.

    Attributes:
        status: ``"pass"``, ``"fail"`` or ``"skip"``.
        observed: what was observed (the skip reason for ``skip``).
        figures: measured values worth reporting (seconds, counts, ...).
    """

    status: Literal["pass", "fail", "skip"]
    observed: str = ""
    figures: Mapping[str, Figure] = field(default_factory=dict)


def passed(observed: str = "", **figures: Figure) -> Outcome:
    """Return a passing :class:`Outcome` that records *observed* and *figures*."""
    return Outcome("pass", observed, figures)


def failed(observed: str, **figures: Figure) -> Outcome:
    """Return a failing :class:`Outcome`; *observed* says what was seen instead."""
    return Outcome("fail", observed, figures)


def skipped(reason: str) -> Outcome:
    """Return a skipping :class:`Outcome` with its *reason*."""
    return Outcome("skip", reason)


def _version_text(since: tuple[int, ...] | None, until: tuple[int, ...] | None) -> str:
    def fmt(v: tuple[int, ...]) -> str:
        return ".".join(map(str, v))

    if since and until:
        return f"{fmt(since)} to {fmt(until)}"
    if since:
        return f"{fmt(since)}+"
    if until:
        return f"up to {fmt(until)}"
    return "all"


@dataclass(frozen=True)
class Check:
    """One observable behaviour of ``queue-behaviours.md``.

    Attributes:
        row: the row number in the reference catalogue.
        slug: short kebab-case name; the check's id is ``row05-<slug>``.
        title: one-line statement of the behaviour.
        kind: ``"documented"`` (a violation fails the contract) or ``"detail"``
            (implementation detail: reported, never failed).
        source: the documentation quote or the code location.
        kinds: queue kinds the behaviour applies to (``Q``, ``JQ``, ``SQ``, ``MQ``;
            ``("-",)`` for a check that uses no queue).
        expect: what the check expects to observe, in a few words.
        func: the check function, or ``None`` when the row cannot be observed portably.
        unobservable: why the row cannot be observed (when ``func`` is ``None``).
        generic: whether the check uses only the generic queue API, so that it also
            runs against a third-party queue (``--queue module:factory``).
        since: first Python version (inclusive) the behaviour applies to.
        until: last Python version (inclusive) the behaviour applies to.
        methods: start methods it applies to (``None``: all).
        platforms: ``sys.platform`` values it applies to (``None``: all).
        not_platforms: ``sys.platform`` values it does not apply to.
        headline: name of the figure shown in the matrix cell, if any.
        parallel: whether the command line may run this check's queue kinds at the same
            time (checks dominated by starting children, with no process-global state and
            no tight timing); never under the fork start method.
    """

    row: int
    slug: str
    title: str
    kind: CheckKind
    source: str
    kinds: tuple[str, ...]
    expect: str
    func: CheckFunc | None = None
    unobservable: str | None = None
    generic: bool = False
    since: tuple[int, ...] | None = None
    until: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    platforms: tuple[str, ...] | None = None
    not_platforms: tuple[str, ...] = ()
    headline: str | None = None
    parallel: bool = False

    @property
    def id(self) -> str:
        """The check's id, e.g. ``row05-put-timeout-raises-full``."""
        return f"row{self.row:02d}-{self.slug}"

    @property
    def versions(self) -> str:
        """The Python versions it applies to, as text (``"all"``, ``"3.13+"``...)."""
        return _version_text(self.since, self.until)

    def skip_reason(
        self,
        kind: str,
        method: str,
        *,
        version: Sequence[int] | None = None,
        platform: str | None = None,
    ) -> str | None:
        """Why this check does not run for *kind* and *method* here, or ``None``.

        Args:
            kind: queue kind (``Q``, ``JQ``, ``SQ``, ``MQ``, ``custom`` or ``-``).
            method: start method.
            version: Python version to judge (default: this interpreter).
            platform: ``sys.platform`` to judge (default: this one).
        """
        ver = tuple(version if version is not None else sys.version_info[:3])
        plat = platform if platform is not None else sys.platform
        if self.func is None:
            return f"not observable portably: {self.unobservable}"
        if kind == CUSTOM and not self.generic:
            need = "/".join(k for k in self.kinds if k != NO_QUEUE) or "no queue"
            return f"needs a stdlib queue ({need}); not run against a custom queue"
        if kind not in (CUSTOM, *self.kinds):
            return f"does not apply to {kind}"
        if self.since is not None and ver < self.since:
            return f"applies to Python {self.versions}"
        if self.until is not None and ver[: len(self.until)] > self.until:
            return f"applies to Python {self.versions}"
        if self.platforms is not None and plat not in self.platforms:
            return f"applies to {', '.join(self.platforms)} only"
        if plat in self.not_platforms:
            return f"does not apply to {plat}"
        if self.methods is not None and method not in self.methods:
            return f"applies to the {', '.join(self.methods)} start method(s) only"
        return None

    def describe(self) -> dict[str, Any]:
        """The check's data as a JSON-ready dict."""
        return {
            "id": self.id,
            "row": self.row,
            "title": self.title,
            "kind": self.kind,
            "source": self.source,
            "queue_kinds": list(self.kinds),
            "generic": self.generic,
            "versions": self.versions,
            "start_methods": list(self.methods) if self.methods else "all",
            "platforms": list(self.platforms) if self.platforms else "all",
            "expect": self.expect,
            "observable": self.func is not None,
            **({"unobservable": self.unobservable} if self.func is None else {}),
        }


@dataclass(frozen=True)
class Result:
    """The result of one check for one queue kind and start method.

    Attributes:
        check: the check.
        queue_kind: ``Q``, ``JQ``, ``SQ``, ``MQ``, ``custom`` or ``-``.
        method: the start method.
        status: ``pass``; ``fail`` (documented behaviour violated); ``differs`` (an
            implementation detail differs from the reference: reported, not failed);
            ``skip``; ``error`` (the check itself raised or hung).
        observed: what was observed, or the skip reason.
        figures: measured values.
        duration: seconds the check took.
    """

    check: Check
    queue_kind: str
    method: str
    status: Status
    observed: str
    figures: Mapping[str, Figure]
    duration: float

    @property
    def violation(self) -> bool:
        """Whether this result violates documented behaviour (fails the contract)."""
        return self.check.kind == "documented" and self.status in ("fail", "error")

    @property
    def test_id(self) -> str:
        """The id of this cell: ``row05-put-timeout-raises-full[Q-spawn]``."""
        if self.queue_kind == NO_QUEUE:
            return f"{self.check.id}[{self.method}]"
        return f"{self.check.id}[{self.queue_kind}-{self.method}]"

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "id": self.test_id,
            "check": self.check.id,
            "row": self.check.row,
            "kind": self.check.kind,
            "queue_kind": self.queue_kind,
            "start_method": self.method,
            "status": self.status,
            "violation": self.violation,
            "observed": self.observed,
            "figures": dict(self.figures),
            "duration": round(self.duration, 4),
        }


@dataclass
class Report:
    """The results of one contract run, with what the table and JSON need.

    Attributes:
        results: results in run order.
        methods: start methods run, in order.
        kinds: queue kinds run.
        target: ``"stdlib"`` or the ``module:factory`` of a custom queue.
        tolerance: timeout overshoot tolerance used, seconds.
        python: ``sys.version`` of the interpreter.
        implementation: ``platform.python_implementation()`` (``CPython``).
        platform: ``sys.platform``.
        durations: seconds spent per start method.
    """

    results: list[Result] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    target: str = "stdlib"
    tolerance: float = 1.0
    python: str = sys.version.split()[0]
    implementation: str = _platform.python_implementation()
    platform: str = sys.platform
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def violations(self) -> list[Result]:
        """The results that violate documented behaviour."""
        return [r for r in self.results if r.violation]

    @property
    def ok(self) -> bool:
        """Whether no documented behaviour was violated."""
        return not self.violations

    def counts(self) -> dict[str, int]:
        """Number of results per status, plus ``violations``."""
        out = {s: 0 for s in ("pass", "fail", "differs", "skip", "error")}
        for r in self.results:
            out[r.status] += 1
        out["violations"] = len(self.violations)
        return out
