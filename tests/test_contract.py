"""Tests of the documented-behaviour contract and its command line."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mpfault.__main__ import main
from mpfault._contract import _children
from mpfault._contract.context import CheckContext
from mpfault._contract.model import (
    ALL_KINDS,
    CUSTOM,
    NO_QUEUE,
    Check,
    CheckFunc,
    Mismatch,
    Outcome,
    Report,
    Result,
    Unsupported,
    failed,
    passed,
)
from mpfault._contract.registry import all_checks, get_check
from mpfault._contract.render import render_table, report_from_json, report_to_json
from mpfault._contract.runner import ContractRunner, FactoryError, load_factory, plan

TESTS = Path(__file__).parent
METHODS = multiprocessing.get_all_start_methods()
#: Rows the contract must observe (the issue's list).
REQUIRED = {
    *range(1, 9),
    10,
    11,
    *range(13, 18),
    20,
    *range(25, 32),
    34,
    36,
    37,
    38,
    42,
    *range(46, 50),
    52,
    53,
    54,
    *range(56, 60),
    61,
    64,
    *range(66, 70),
}


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mpfault`` in a subprocess (children need a clean main process)."""
    return subprocess.run(
        [sys.executable, "-m", "mpfault", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the registry -------------------------------------------------------------------


def test_every_row_has_an_entry_and_required_rows_are_observed() -> None:
    checks = all_checks()
    assert {c.row for c in checks} == set(range(1, 73))
    observed = {c.row for c in checks if c.func is not None}
    assert observed >= REQUIRED, sorted(REQUIRED - observed)


def test_check_data_is_complete() -> None:
    ids = [c.id for c in all_checks()]
    assert len(ids) == len(set(ids))
    for c in all_checks():
        assert re.fullmatch(r"row\d\d-[a-z0-9]+(-[a-z0-9]+)*", c.id), c.id
        assert c.kind in ("documented", "detail"), c.id
        assert c.title, c.id
        assert c.source, c.id
        assert c.expect, c.id
        assert set(c.kinds) <= {*ALL_KINDS, NO_QUEUE}, c.id
        assert (c.func is None) == (c.unobservable is not None), c.id
        if c.func is not None:
            assert c.func.__doc__, c.id
        if c.generic:
            assert c.kind == "documented", c.id


def test_skip_reasons() -> None:
    shutdown = get_check("row64-manager-queue-shutdown")
    assert shutdown.skip_reason("MQ", "fork", version=(3, 12, 1)) == "applies to Python 3.13+"
    assert shutdown.skip_reason("MQ", "fork", version=(3, 13, 0)) is None
    assert "not run against a custom queue" in (shutdown.skip_reason(CUSTOM, "fork") or "")
    warns = get_check("row69-fork-warns-with-feeder-thread")
    assert "fork start method" in (warns.skip_reason("Q", "spawn", version=(3, 12, 1)) or "")
    macos = get_check("row12-qsize-not-implemented-macos")
    assert macos.skip_reason("Q", "spawn", platform="linux") == "applies to darwin only"
    assert macos.skip_reason("Q", "spawn", platform="darwin") is None
    assert get_check("row05-put-timeout-raises-full").skip_reason(CUSTOM, "spawn") is None
    assert "not observable" in (get_check("row21-no-consumer-fairness").skip_reason("Q", "x") or "")


def test_plan_orders_cells_by_start_method() -> None:
    checks = [get_check("row05-put-timeout-raises-full"), get_check("row66-default-start-method")]
    cells = plan(checks, ["fork", "spawn"], ["Q", "SQ"])
    assert [(c.row, k, m) for c, k, m in cells] == [
        (5, "Q", "fork"),
        (66, NO_QUEUE, "fork"),
        (5, "Q", "spawn"),
        (66, NO_QUEUE, "spawn"),
    ]
    custom = plan(checks, ["fork"], ["Q"], custom=True)
    assert [(c.row, k) for c, k, _ in custom] == [(5, CUSTOM), (66, CUSTOM)]


def test_groups_run_queue_kinds_of_parallel_checks_together() -> None:
    from mpfault._contract.runner import _groups

    parallel = get_check("row20-fifo-per-producer")
    serial = get_check("row05-put-timeout-raises-full")
    cells = plan([serial, parallel], ["spawn"], ALL_KINDS)
    grouped = [[(c.row, k) for c, k, _ in g] for g in _groups(cells, concurrent=True)]
    assert grouped == [[(5, "Q")], [(5, "JQ")], [(5, "MQ")], [(20, k) for k in ALL_KINDS]]
    assert all(len(g) == 1 for g in _groups(cells, concurrent=False))


# -- the runner ------------------------------------------------------------------------


def synthetic(func: CheckFunc, kind: Any = "documented") -> Check:
    """A check that is not registered, for testing the runner."""
    return Check(
        row=99,
        slug="synthetic",
        title="t",
        kind=kind,
        source="s",
        kinds=("Q",),
        expect="e",
        func=func,
    )


def _mismatch(cx: CheckContext) -> Outcome:
    """Fails through an exception, after recording a figure."""
    cx.figure(seen=3)
    raise Mismatch("saw 3")


def _broken(cx: CheckContext) -> Outcome:
    """A check with a bug."""
    raise KeyError("oops")


def _unsupported(cx: CheckContext) -> Outcome:
    """Needs what the queue lacks."""
    raise Unsupported("the queue has no frob()")


@pytest.mark.parametrize(
    ("func", "kind", "status", "violation", "observed"),
    [
        (lambda cx: passed("fine", n=1), "documented", "pass", False, "fine"),
        (lambda cx: failed("bad"), "documented", "fail", True, "bad"),
        (lambda cx: failed("bad"), "detail", "differs", False, "bad"),
        (_mismatch, "documented", "fail", True, "saw 3"),
        (_broken, "documented", "error", True, "raised KeyError: 'oops'"),
        (_broken, "detail", "error", False, "raised KeyError"),
        (_unsupported, "documented", "skip", False, "the queue has no frob()"),
    ],
)
def test_runner_maps_outcomes(
    func: CheckFunc, kind: str, status: str, violation: bool, observed: str
) -> None:
    runner = ContractRunner()
    try:
        result = runner.run(synthetic(func, kind), "Q", "fork")
    finally:
        runner.close()
    assert result.status == status
    assert result.violation is violation
    assert observed in result.observed
    if func is _mismatch:
        assert result.figures == {"seen": 3}


_stuck = threading.Event()


def _hangs(cx: CheckContext) -> Outcome:
    """Blocks until the test releases it."""
    _stuck.wait(30)
    return passed()


def test_runner_reports_a_hung_check_and_goes_on() -> None:
    runner = ContractRunner(check_deadline=0.3)
    try:
        result = runner.run(synthetic(_hangs), "Q", "fork")
    finally:
        _stuck.set()
        runner.close()
    assert result.status == "error"
    assert "did not finish within 0.3 s" in result.observed


_runs: list[str] = []


def _exit_now(code: int) -> None:
    """A child target: exit at once with ``code`` (a function of this module: coverage
    replaces ``os._exit`` with one that cannot be pickled)."""
    os._exit(code)


def _exit_255(cx: CheckContext, codes: list[int]) -> Outcome:
    """Starts a child that exits with the next of ``codes`` (255: what a lost
    forkserver status reads as); passes if it read 0."""
    _runs.append(cx.method)
    p = cx.start(_exit_now, codes[min(len(_runs), len(codes)) - 1])
    p.join(30)
    return passed() if p.exitcode == 0 else failed(f"exit code {p.exitcode}")


@pytest.mark.parametrize(
    ("method", "codes", "status", "runs", "note"),
    [
        ("forkserver", [255, 0], "pass", 2, False),  # lost once: the second run decides
        ("forkserver", [255, 255], "fail", 2, True),  # lost twice: said in the result
        ("forkserver", [3, 0], "fail", 1, False),  # a real exit code: no second run
        ("fork", [255, 0], "fail", 1, False),  # only the fork server loses statuses
    ],
)
def test_a_cell_whose_forkserver_child_read_255_runs_again(
    method: str, codes: list[int], status: str, runs: int, note: bool
) -> None:
    """CPython gh-140867: under load the fork server loses a child's exit status and
    ``exitcode`` reads 255; such a cell is run a second time."""
    _runs.clear()
    runner = ContractRunner()
    try:
        result = runner.run(synthetic(lambda cx: _exit_255(cx, codes)), "Q", method)
    finally:
        runner.close()
    assert result.status == status, result.observed
    assert len(_runs) == runs
    assert ("gh-140867" in result.observed) is note


_started: list[Any] = []


def _leaves_a_child(cx: CheckContext) -> Outcome:
    """Starts a child that would block forever, then raises."""
    q = cx.make()
    r, w = cx.pipe()
    _started.append(cx.start(_children.blocking_get, q, w))
    cx.recv(r)
    raise RuntimeError("the check broke")


def test_children_are_reaped_when_a_check_raises() -> None:
    runner = ContractRunner()
    try:
        result = runner.run(synthetic(_leaves_a_child), "Q", "fork")
    finally:
        runner.close()
    assert result.status == "error"
    assert not multiprocessing.active_children()
    assert len(_started) == 1
    with pytest.raises(ValueError, match="closed"):
        _started[0].is_alive()  # reaped and closed


# -- rendering -------------------------------------------------------------------------


def test_table_and_json_agree() -> None:
    check = get_check("row05-put-timeout-raises-full")
    detail = get_check("row14-get-nowait-right-after-put")
    report = Report(methods=["fork", "spawn"], kinds=["Q", "JQ"], durations={"fork": 1, "spawn": 2})
    report.results += [
        Result(check, "Q", "fork", "pass", "ok", {"overshoot": 0.0012}, 0.1),
        Result(check, "Q", "spawn", "fail", "Full after 0.05 s, early", {"overshoot": -0.05}, 0.1),
        Result(check, "JQ", "fork", "skip", "because", {}, 0.0),
        Result(check, "JQ", "spawn", "skip", "because", {}, 0.0),
        Result(detail, "Q", "fork", "differs", "returned it", {}, 0.0),
    ]
    table = render_table(report)
    assert "pass 1.2ms" in table
    assert "FAIL[1] -50.0ms" in table
    assert table.count("skip[2]") == 2  # one note for the same reason
    assert "[1] FAIL row05-put-timeout-raises-full[Q-spawn]: Full after 0.05 s, early" in table
    assert "[3] differs row14-get-nowait-right-after-put[Q-fork]: returned it" in table
    assert "Verdict: FAILED - 1 violation(s)" in table
    data = report_to_json(report)
    assert json.loads(json.dumps(data)) == data
    assert data["summary"]["violations"] == 1
    assert not data["ok"]
    assert render_table(report_from_json(data)) == table
    assert report_to_json(report_from_json(data)) == data


def test_load_factory_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for spec, needle in [
        ("nocolon", "expected module:factory"),
        ("no_such_module_here:f", "cannot import module"),
        ("os:no_such_attr", "has no attribute"),
        ("os:sep", "is not callable"),
    ]:
        with pytest.raises(FactoryError, match=needle):
            load_factory(spec)
    monkeypatch.chdir(TESTS)
    assert load_factory("contract_broken_queues:never_full").__name__ == "never_full"


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rows", "5-"], "argument --rows: invalid row or range '5-'"),
        (["--rows", "99"], "argument --rows: no row 99 (rows are 1-72)"),
        (["--rows", "8-5"], "argument --rows: empty range"),
        (["--start-methods", "forks"], "argument --start-methods: unknown start method 'forks'"),
        (["--kinds", "Q,XQ"], "argument --kinds: unknown queue kind 'XQ'"),
        (["--tolerance", "-1"], "argument --tolerance: expected a non-negative number"),
        (["--tolerance", "soon"], "argument --tolerance"),
        (["--queue", "nope"], "argument --queue: expected module:factory"),
        (["--queue", "os:sep"], "argument --queue: 'os:sep' is not callable"),
        (["--queue", "os:getcwd", "--kinds", "Q"], "argument --kinds: not allowed with --queue"),
        (["--json", "/no/such/dir/x.json"], "argument --json: directory '/no/such/dir'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert needle in err


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required" in capsys.readouterr().err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    assert "row05-put-timeout-raises-full" in out
    assert len(out.splitlines()) == len(all_checks())


def test_cli_runs_without_importing_pytest(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mpfault.__main__ import main\n"
        "rc = main(['check', '--rows', '66,71', '--start-methods', 'fork', '-q'])\n"
        "sys.exit(99 if 'pytest' in sys.modules else rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "row" in proc.stdout
    assert proc.stderr == ""  # -q: no progress


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_full_contract_passes_and_json_agrees_with_table(method: str, tmp_path: Path) -> None:
    path = tmp_path / "contract.json"
    proc = run_cli("check", "--start-methods", method, "--json", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(path.read_text())
    assert data["ok"]
    statuses = {r["status"] for r in data["results"]}
    assert statuses <= {"pass", "differs", "skip"}, [
        (r["id"], r["observed"]) for r in data["results"] if r["status"] in ("fail", "error")
    ]
    assert {r["queue_kind"] for r in data["results"]} == {*ALL_KINDS, NO_QUEUE}
    assert render_table(report_from_json(data)) == proc.stdout
    # stderr has the progress and nothing else (no warnings, no tracebacks).
    assert re.fullmatch(rf"{method} +[.sd\n ]+ \d+ cells in [\d.]+ s\n", proc.stderr), proc.stderr
    # The budget is 30 s on an idle machine; allow for a loaded CI box.
    assert data["durations"][method] < 60


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "method", "rows", "needles"),
    [
        ("early_timeout", "fork", {6}, ["early", "observed queue.Empty after 0.0"]),
        (
            "never_full",
            "forkserver",
            {1, 3, 5},
            ["instead of blocking", "observed no exception"],
        ),
        ("reordering", "spawn", {20}, ["arrived after item"]),
    ],
)
def test_broken_queue_fails_exactly_its_rows(
    factory: str, method: str, rows: set[int], needles: list[str], tmp_path: Path
) -> None:
    if method not in METHODS:
        pytest.skip(f"no {method} start method here")
    path = tmp_path / "contract.json"
    spec = f"contract_broken_queues:{factory}"
    env_path = tmp_path / "cwd"
    env_path.mkdir()
    (env_path / "contract_broken_queues.py").write_text(
        (TESTS / "contract_broken_queues.py").read_text()
    )
    proc = run_cli(
        "check", "--queue", spec, "--start-methods", method, "--json", str(path), "-q", cwd=env_path
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(path.read_text())
    violated = {r["row"] for r in data["results"] if r["violation"]}
    assert violated == rows, proc.stdout
    ran = [r for r in data["results"] if r["status"] != "skip"]
    assert {r["status"] for r in ran if r["row"] not in rows} == {"pass"}, proc.stdout
    observed = " ".join(r["observed"] for r in data["results"] if r["violation"])
    for needle in needles:
        assert needle in observed
    assert data["target"] == spec
    assert render_table(report_from_json(data)) == proc.stdout
    assert os.path.exists(path)
