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
from mpfault._contract.provider import ProviderError, load_provider
from mpfault._contract.registry import all_checks, get_check
from mpfault._contract.render import render_table, report_from_json, report_to_json
from mpfault._contract.runner import ContractRunner, plan

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
    assert "does not apply to multiprocessing.Queue" in (shutdown.skip_reason("Q", "fork") or "")
    warns = get_check("row69-fork-warns-with-feeder-thread")
    assert "fork start method" in (warns.skip_reason("Q", "spawn", version=(3, 12, 1)) or "")
    macos = get_check("row12-qsize-not-implemented-macos")
    assert macos.skip_reason("Q", "spawn", platform="linux") == "applies to darwin only"
    assert macos.skip_reason("Q", "spawn", platform="darwin") is None
    assert get_check("row05-put-timeout-raises-full").skip_reason("Q", "spawn") is None
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
    # a provider's run: its one kind, and no cells of checks that use no queue
    custom = plan(checks, ["fork"], ["JQ"], custom=True)
    assert [(c.row, k) for c, k, _ in custom] == [(5, "JQ")]


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
        (_broken, "documented", "error", False, "raised KeyError(\"'oops'\") in _broken()"),
        (_broken, "detail", "error", False, "not counted against the queue"),
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
    assert table.count("n/a[2]") == 2  # one note for the same reason
    assert "[2] n/a: because" in table
    assert "[1] FAIL row05-put-timeout-raises-full[Q-spawn]: Full after 0.05 s, early" in table
    assert "[3] differs row14-get-nowait-right-after-put[Q-fork]: returned it" in table
    assert "Verdict: FAILED - 1 violation(s)" in table
    data = report_to_json(report)
    assert json.loads(json.dumps(data)) == data
    assert data["summary"]["violations"] == 1
    assert not data["ok"]
    assert render_table(report_from_json(data)) == table
    assert report_to_json(report_from_json(data)) == data


def test_load_provider_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec, kw, needle in [
        ("nocolon", {}, "expected module:queue"),
        ("no_such_module_here:f", {}, "cannot import module"),
        ("os:no_such_attr", {}, "has no attribute"),
        ("os:sep", {}, "is not callable"),
        ("queue:Queue", {"kind": "Frob"}, "unknown queue kind 'Frob'"),
        ("queue:Queue", {"context": "os:sep"}, "not a get_context(method) callable"),
    ]:
        with pytest.raises(ProviderError, match=re.escape(needle)):
            load_provider(spec, **kw)


class _Ctx:
    """Stands for a context (make() is given it)."""


def _one(n):  # type: ignore[no-untyped-def]
    return ("one", n)


def _ctx_and_maxsize(ctx, maxsize):  # type: ignore[no-untyped-def]
    return ("ctx-maxsize", ctx, maxsize)


def _ctx_keyword(maxsize=0, *, ctx):  # type: ignore[no-untyped-def]
    return ("ctx-kw", ctx, maxsize)


def _named(max_size_bytes=100, maxsize=7):  # type: ignore[no-untyped-def]
    return ("named", max_size_bytes, maxsize)


def _nothing():  # type: ignore[no-untyped-def]
    return ("nothing",)


@pytest.mark.parametrize(
    ("fn", "made", "call"),
    [
        (_one, ("one", 3), "(maxsize)"),
        (_ctx_and_maxsize, ("ctx-maxsize", "CTX", 3), "(ctx, maxsize)"),
        (_ctx_keyword, ("ctx-kw", "CTX", 3), "(maxsize, ctx=ctx)"),
        (_named, ("named", 100, 3), "(maxsize=maxsize)"),  # never the first positional
        (_nothing, ("nothing",), "()"),
    ],
)
def test_the_queue_callable_is_called_as_its_signature_says(
    fn: Any, made: tuple[Any, ...], call: str
) -> None:
    from mpfault._contract.provider import SpecProvider

    provider = SpecProvider(fn, name="m:f")
    got = provider.create("CTX", 3)
    assert got == made
    assert provider.call_text.endswith(call)


def test_a_context_s_own_queue_uses_the_start_method_s_context() -> None:
    multiprocess = pytest.importorskip("multiprocess")
    provider = load_provider("multiprocess:Queue")
    assert "multiprocess.get_context" in provider.context_name
    provider.setup("spawn")
    try:
        assert type(provider.ctx).__module__ == "multiprocess.context"
        assert provider.ctx is multiprocess.get_context("spawn")
        q = provider.make(2)
        assert type(q).__module__ == "multiprocess.queues"
        q.close()
    finally:
        provider.teardown()


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: multiprocessing.Queue(), "Q"),
        (lambda: multiprocessing.JoinableQueue(), "JQ"),
        (lambda: multiprocessing.SimpleQueue(), "SQ"),
    ],
)
def test_the_kind_is_probed_from_the_api(make: Any, kind: str) -> None:
    from mpfault._contract.provider import probe_kind

    q = make()
    try:
        assert probe_kind(q)[0] == kind
    finally:
        q.close()


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
        (["--queue", "nope"], "argument --queue: expected module:queue"),
        (["--queue", "os:sep"], "argument --queue: 'os:sep' is not callable"),
        (["--queue", "queue:Queue", "--kind", "Deque"], "argument --kind: unknown queue kind"),
        (["--queue", "queue:Queue", "--context", "os"], "argument --context: 'os' is not a"),
        (["--kind", "Queue"], "argument --kind: needs --queue"),
        (["--context", "multiprocessing"], "argument --context: needs --queue"),
        (["--compare", "/no/such.json"], "argument --compare: cannot read '/no/such.json'"),
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


def _broken_cwd(tmp_path: Path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    (cwd / "contract_broken_queues.py").write_text(
        (TESTS / "contract_broken_queues.py").read_text()
    )
    return cwd


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "method", "rows", "needles"),
    [
        ("early_timeout", "fork", {6}, ["early", "observed queue.Empty after 0.0"]),
        (
            "never_full",
            "forkserver",
            {1, 3, 5, 8, 71},
            ["instead of blocking", "observed no exception", "the 4th put_nowait"],
        ),
        ("reordering", "spawn", {20}, ["arrived after item"]),
        (
            "zero_timeout_empty",
            "spawn",
            {8},
            ["get(timeout=0) on a non-empty queue (empty() was False) raised queue.Empty"],
        ),
        ("flag_close", "fork", {30}, ["did not arrive although close() and join_thread()"]),
        (
            "fragile_feeder",
            "spawn",
            {36},
            ["put(Unpicklable()) returned; then put('after-1'), put('after-2'): get() gave []"],
        ),
        (
            "finite_default",
            "fork",
            {1, 2},
            [
                "on a full queue (maxsize=1) raised queue.Full (no message) after ",
                "on an empty queue raised queue.Empty (no message) after ",
                "a finite default timeout?",
            ],
        ),
        (
            "byte_capacity",
            "spawn",
            {71},
            ["put_nowait(4 KiB item) number 1 on a Queue(maxsize=3) holding 0 items raised"],
        ),
    ],
)
def test_broken_queue_fails_exactly_its_rows(
    factory: str, method: str, rows: set[int], needles: list[str], tmp_path: Path
) -> None:
    if method not in METHODS:
        pytest.skip(f"no {method} start method here")
    path = tmp_path / "contract.json"
    spec = f"contract_broken_queues:{factory}"
    cwd = _broken_cwd(tmp_path)
    proc = run_cli(
        "check", "--queue", spec, "--start-methods", method, "--json", str(path), "-q", cwd=cwd
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(path.read_text())
    violated = {r["row"] for r in data["results"] if r["violation"]}
    assert violated == rows, proc.stdout
    assert not [r for r in data["results"] if r["status"] == "error"], proc.stdout
    assert {r["status"] for r in data["results"] if r["row"] not in rows} <= {
        "pass",
        "differs",
        "skip",
    }
    observed = " ".join(r["observed"] for r in data["results"] if r["violation"])
    for needle in needles:
        assert needle in observed
    assert "raised Full: " not in proc.stdout
    assert data["target"] == spec
    assert data["provider"]["kind"] == "Q"
    assert render_table(report_from_json(data)) == proc.stdout


@pytest.mark.slow
def test_an_early_return_within_tolerance_is_a_visible_difference(tmp_path: Path) -> None:
    path = tmp_path / "contract.json"
    cwd = _broken_cwd(tmp_path)
    for _ in range(10):  # under load the call's overhead can absorb the 0.95 ms
        proc = run_cli(
            "check",
            "--queue",
            "contract_broken_queues:slightly_early",
            "--start-methods",
            "fork",
            "--rows",
            "6",
            "--json",
            str(path),
            "-q",
            cwd=cwd,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr  # differs: not a failure
        (result,) = json.loads(path.read_text())["results"]
        if result["status"] == "differs":
            break
    assert result["status"] == "differs", result
    assert "ms before its timeout of 0.1 s" in result["observed"]
    assert "differs[1] -0." in proc.stdout  # the cell shows the negative overshoot


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in ("fork", "spawn") if m in METHODS])
def test_a_context_bound_queue_needs_its_context(method: str, tmp_path: Path) -> None:
    """Without --context the provider fails its preflight: one line naming what failed
    and no matrix; with its own context every row passes."""
    cwd = _broken_cwd(tmp_path)
    spec = "contract_broken_queues:context_bound"
    proc = run_cli("check", "--queue", spec, "--start-methods", method, cwd=cwd)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        f"mpfault check: error: preflight of --queue failed: {spec}: in the child started "
        f"from multiprocessing.get_context('{method}').Process, q.get() raised RuntimeError"
    ), proc.stderr
    assert "give --context pkg:get_context" in proc.stderr
    path = tmp_path / "bound.json"
    proc = run_cli(
        "check",
        "--queue",
        spec,
        "--context",
        "contract_broken_queues:bound_context",
        "--start-methods",
        method,
        "--json",
        str(path),
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(path.read_text())
    assert data["provider"]["context"] == "contract_broken_queues:bound_context"
    assert {r["status"] for r in data["results"]} <= {"pass", "skip"}, proc.stdout
    assert sum(r["status"] == "pass" for r in data["results"]) >= 40


@pytest.mark.slow
def test_compare_prints_the_rows_that_differ_side_by_side(tmp_path: Path) -> None:
    cwd = _broken_cwd(tmp_path)
    paths = []
    for spec in ("contract_broken_queues:zero_timeout_empty", "contract_broken_queues:flag_close"):
        path = tmp_path / (spec.split(":")[1] + ".json")
        proc = run_cli(
            "check", "--queue", spec, "--start-methods", "fork", "--rows", "8,30,34",
            "--json", str(path), "-q", cwd=cwd,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        paths.append(str(path))
    proc = run_cli("check", "--compare", *paths, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row8 = next(line for line in lines if line.startswith("row08-zero-timeout-is-nonblocking"))
    assert row8.split()[1:] == ["FAIL", "pass"]
    row30 = next(line for line in lines if line.startswith("row30-close-join-thread-flushes"))
    assert row30.split()[1:] == ["pass", "FAIL"]
    assert not any(line.startswith("row34") for line in lines)  # the same in both
    assert "2 row(s) differ among 2 report(s)" in proc.stdout
    assert "contract_broken_queues:flag_close (" in proc.stdout  # column headings
    assert "[fork] FAIL: the item did not arrive" in proc.stdout  # the evidence


def test_a_provider_is_set_up_and_torn_down_per_start_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Manager queue through a provider: its manager starts in setup(), is shut down in
    teardown(), and every documented row run passes."""
    from mpfault._contract.runner import preflight, run_contract

    monkeypatch.syspath_prepend(str(TESTS))
    provider = load_provider("contract_broken_queues:ManagerQueues")
    methods = [m for m in ("fork", "spawn") if m in METHODS]
    lines = preflight(provider, methods)
    assert lines[0].startswith("queue Manager().Queue() (provider): behaves like ManagerQueue")
    report = run_contract(methods=methods, rows=[3, 4, 8, 47, 56, 57], provider=provider)
    assert provider.method is None  # torn down
    assert provider.started == 2 * len(methods)  # preflight + run, per start method
    assert {r.status for r in report.results} == {"pass"}, [
        (r.test_id, r.observed) for r in report.results if r.status != "pass"
    ]
    assert {r.queue_kind for r in report.results} == {"MQ"}
    assert report.provider["kind"] == "MQ"
    assert not multiprocessing.active_children()
