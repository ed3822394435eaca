"""Stress run: the timing-sensitive tests, many times, with every core loaded.

Runs the suite's timing-sensitive tests (races, timing assertions, the fault runtime,
the docs' examples) ``--reps`` times each inside one pytest process (each repetition
sets the test's fixtures up afresh), while ``--hogs`` processes (default: one per
core) spin on the CPU at the same priority, and prints how often each test failed.

    .venv/bin/python benchmarks/stress.py                   # 20 repetitions
    .venv/bin/python benchmarks/stress.py --reps 200 -n 2   # the issue's run
    .venv/bin/python benchmarks/stress.py --reps 50 -k busy_wait_report

Exit status 1 when any repetition failed.  ``--`` passes the rest to pytest.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

#: the timing-sensitive test files (paths from the repository root)
TIMING_SENSITIVE = [
    "tests/test_races.py",
    "tests/test_timing.py",
    "tests/test_faults_runtime.py",
    "tests/test_docs.py",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the pytest plugin that repeats every test (``-p``, from PYTHONPATH), as pytest-repeat does
_PLUGIN = r"""
import json, os, re
import pytest

REPS = int(os.environ["MPFAULT_STRESS_REPS"])
OUT = os.environ["MPFAULT_STRESS_OUT"]


@pytest.fixture
def mpfault_stress_rep(request):
    return request.param


def pytest_generate_tests(metafunc):
    # as pytest-repeat does: one more parameter, the repetition
    metafunc.fixturenames.append("mpfault_stress_rep")
    metafunc.parametrize(
        "mpfault_stress_rep", range(REPS), indirect=True, ids=[f"rep{i}" for i in range(REPS)]
    )


def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller records it (xdist calls this hook in both)
    if report.when == "call" or report.failed:
        test = re.sub(r"(?<=[\[-])rep\d+-|-rep\d+(?=\])|\[rep\d+\]", "", report.nodeid)
        why = report.longreprtext.strip().splitlines()[-1][:200] if report.failed else ""
        rec = {"test": test, "when": report.when, "failed": report.failed, "why": why}
        with open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
"""


def _hog() -> None:  # pragma: no cover - runs in the hog processes
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    x = 0
    while True:
        x += 1


def main(argv: list[str] | None = None) -> int:
    """Run the stress test; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=20, help="repetitions of each test (default 20)")
    p.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="CPU hog processes")
    p.add_argument("-n", dest="workers", default="0", help="pytest-xdist workers (default 0)")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    p.add_argument("files", nargs="*", default=None, help="test files (default: timing tests)")
    argv = sys.argv[1:] if argv is None else list(argv)
    # everything after "--" goes to pytest as it is (argparse would take it as files)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args, unknown = p.parse_known_args(argv)
    extra = unknown + extra
    files = args.files or TIMING_SENSITIVE
    with tempfile.TemporaryDirectory(prefix="mpfault-stress-") as work:
        with open(os.path.join(work, "mpfault_stress_plugin.py"), "w") as f:
            f.write(_PLUGIN)
        out = os.path.join(work, "results.jsonl")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [work, env.get("PYTHONPATH")]))
        env["MPFAULT_STRESS_REPS"] = str(args.reps)
        env["MPFAULT_STRESS_OUT"] = out
        cmd = [sys.executable, "-m", "pytest", *files, "-p", "mpfault_stress_plugin"]
        cmd += ["-q", "-p", "no:cacheprovider", "-o", "timeout=0", "--no-header"]
        if args.workers not in ("0", ""):
            cmd += ["-n", args.workers]
        if args.keyword:
            cmd += ["-k", args.keyword]
        cmd += extra
        ctx = multiprocessing.get_context("fork")
        hogs = [ctx.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
        for h in hogs:
            h.start()
        print(f"stress: {args.reps} repetitions, {args.hogs} CPU hogs, {' '.join(cmd[3:])}")
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
        finally:
            for h in hogs:
                h.kill()
            for h in hogs:
                h.join(5)
        took = time.monotonic() - start
        runs: collections.Counter[str] = collections.Counter()
        fails: collections.Counter[str] = collections.Counter()
        whys: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        if os.path.exists(out):
            with open(out) as f:
                for line in f:
                    r = json.loads(line)
                    if r["when"] == "call":
                        runs[r["test"]] += 1
                    if r["failed"]:
                        fails[r["test"]] += 1
                        whys[r["test"]][r["why"]] += 1
    total = sum(runs.values())
    print(f"\nstress: {total} test runs of {len(runs)} tests in {took:.0f} s")
    print(f"stress: pytest exited with {proc.returncode}")
    if not runs:
        print("stress: nothing ran")
        return 1
    if fails:
        print("failures per test:")
        for test, n in fails.most_common():
            print(f"  {n:4d}/{runs[test]:<4d} {test}")
            for why, k in whys[test].most_common(3):
                print(f"         {k}x {why}")
    print(f"stress: {sum(fails.values())} failures in {total} runs")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
