"""The ``mpfault`` command line (``python -m mpfault`` or the ``mpfault`` script).

``mpfault check`` runs the documented-behaviour contract of multiprocessing queues on
this interpreter, for the chosen start methods and queue kinds (or for a third-party
queue given by ``--queue module:factory``), shows progress on stderr, prints the
matrix on stdout and optionally writes it as JSON.

Exit status: 0 when no documented behaviour is violated, 1 when one is, 2 for a usage
error (a one-line message naming the bad argument).

This module imports nothing heavy at import time (spawn children of ``python -m
mpfault`` import it as their main module) and never imports pytest.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, NoReturn

from ._runtime.errors import MpfaultError

__all__ = ["main"]

KINDS_HELP = "Q=multiprocessing.Queue, JQ=JoinableQueue, SQ=SimpleQueue, MQ=Manager().Queue()"
QUEUE_HELP = (
    "run the contract against a third-party queue: FACTORY(ctx, maxsize) returns a new "
    "queue, ctx being the multiprocessing context of the start method under test and "
    "maxsize the capacity (0: unbounded); only checks of the generic queue API run"
)


class UsageError(MpfaultError):
    """A bad command line; the message names the bad argument."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_rows(value: str, known: set[int]) -> list[int]:
    rows: list[int] = []
    for part in _split(value):
        lo, sep, hi = part.partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise UsageError(f"argument --rows: invalid row or range {part!r}") from None
        if first > last:
            raise UsageError(f"argument --rows: empty range {part!r}")
        for row in range(first, last + 1):
            if row not in known:
                raise UsageError(
                    f"argument --rows: no row {row} (rows are {min(known)}-{max(known)})"
                )
            if row not in rows:
                rows.append(row)
    if not rows:
        raise UsageError("argument --rows: no rows given")
    return rows


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="mpfault",
        description="pytest-mpfault command line: check multiprocessing queue behaviour.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check",
        help="run the documented-behaviour contract of multiprocessing queues",
        description=(
            "Run the documented-behaviour contract (queue-behaviours.md) on this "
            "interpreter. Exit status 0: no documented behaviour violated; 1: violated; "
            "2: usage error."
        ),
    )
    check.add_argument(
        "--start-methods",
        metavar="METHODS",
        help="comma-separated start methods (default: all available here)",
    )
    check.add_argument(
        "--kinds", metavar="KINDS", help=f"comma-separated queue kinds: {KINDS_HELP}"
    )
    check.add_argument("--rows", metavar="ROWS", help="rows to run, e.g. 1,2,5-8 (default: all)")
    check.add_argument("--queue", metavar="MODULE:FACTORY", help=QUEUE_HELP)
    check.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    check.add_argument(
        "--tolerance",
        metavar="SECONDS",
        help="seconds a queue timeout may overshoot before it fails (default: 1.0)",
    )
    check.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    check.add_argument("--list", action="store_true", help="list the checks and exit")
    return parser


class _Progress:
    """Progress on stderr: one character per cell, one line per start method."""

    _CHAR = {"pass": ".", "fail": "F", "differs": "d", "skip": "s", "error": "E"}

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.column = 0

    def method(self, method: str, cells: int, seconds: float | None) -> None:
        if seconds is None:
            self.stream.write(f"{method:<11}")
            self.column = 0
        else:
            self.stream.write(f" {cells} cells in {seconds:.1f} s\n")
        self.stream.flush()

    def result(self, result: object) -> None:
        if self.column and self.column % 60 == 0:
            self.stream.write("\n" + " " * 11)
        self.stream.write(self._CHAR.get(getattr(result, "status", ""), "?"))
        self.column += 1
        self.stream.flush()


def _list_checks(out: IO[str]) -> None:
    from ._contract.registry import all_checks

    for c in all_checks():
        kinds = ",".join(c.kinds)
        status = "" if c.func is not None else "  (not observable)"
        out.write(f"{c.id:<48} {c.kind:<10} {kinds:<11} {c.versions:<8} {c.title[:70]}{status}\n")


def _check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    import json
    import math
    import multiprocessing
    import os

    from ._contract.model import ALL_KINDS
    from ._contract.registry import all_checks
    from ._contract.render import render_table, report_to_json
    from ._contract.runner import FactoryError, load_factory, run_contract

    if args.list:
        _list_checks(out)
        return 0
    available = multiprocessing.get_all_start_methods()
    methods = available
    if args.start_methods is not None:
        methods = []
        for m in _split(args.start_methods):
            if m not in available:
                raise UsageError(
                    f"argument --start-methods: unknown start method {m!r} "
                    f"(available here: {', '.join(available)})"
                )
            if m not in methods:
                methods.append(m)
        if not methods:
            raise UsageError("argument --start-methods: no start method given")
    kinds = list(ALL_KINDS)
    if args.kinds is not None:
        if args.queue is not None:
            raise UsageError("argument --kinds: not allowed with --queue")
        kinds = []
        for k in _split(args.kinds):
            if k.upper() not in ALL_KINDS:
                raise UsageError(f"argument --kinds: unknown queue kind {k!r} ({KINDS_HELP})")
            if k.upper() not in kinds:
                kinds.append(k.upper())
        if not kinds:
            raise UsageError("argument --kinds: no queue kind given")
    rows = None
    if args.rows is not None:
        rows = _parse_rows(args.rows, {c.row for c in all_checks()})
    tolerance = None
    if args.tolerance is not None:
        try:
            tolerance = float(args.tolerance)
        except ValueError:
            tolerance = math.nan
        if not math.isfinite(tolerance) or tolerance < 0:
            raise UsageError(
                f"argument --tolerance: expected a non-negative number of seconds, "
                f"got {args.tolerance!r}"
            )
    factory = None
    if args.queue is not None:
        try:
            factory = load_factory(args.queue)
        except FactoryError as exc:
            raise UsageError(f"argument --queue: {exc}") from None
    if args.json is not None:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise UsageError(f"argument --json: directory {parent!r} does not exist")

    progress = None if args.quiet else _Progress(err)
    if "forkserver" in methods:
        # Children import the check targets; have the fork server import them once.
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            ["mpfault._contract._children"]
        )
    report = run_contract(
        methods=methods,
        kinds=kinds,
        rows=rows,
        factory=factory,
        target=args.queue or "stdlib",
        tolerance=tolerance,
        on_result=progress.result if progress else None,
        on_method=progress.method if progress else None,
    )
    out.write(render_table(report))
    out.flush()
    if args.json is not None:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report_to_json(report), f, indent=2)
                f.write("\n")
        except OSError as exc:
            err.write(f"mpfault check: error: argument --json: cannot write {args.json!r}: {exc}\n")
            return 2
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line with *argv* (default ``sys.argv[1:]``); return the exit status."""
    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        if args.command == "check":
            return _check(args, sys.stdout, sys.stderr)
        raise UsageError(f"mpfault: error: unknown command {args.command!r}")  # pragma: no cover
    except UsageError as exc:
        message = str(exc)
        if not message.startswith("mpfault"):
            message = f"mpfault check: error: {message}"
        sys.stderr.write(message.splitlines()[0] + "\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
