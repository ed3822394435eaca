"""Issue 11, hardening of the test process: the deadline bounds blocking calls in the test
itself, no run directory is left behind however pytest ends, errors are one line, and
the fixture offers the package's names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mpfault import _rundir
from procs import read_until

TARGETS = """
import os, sys
import pytest


def stuck(q):
    q.get()  # STUCK-LINE


def put_all(q, items):
    for x in items:
        q.put(x)
"""


def test_blocking_get_in_the_test_ends_in_a_hang(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_block=TARGETS
        + """
@pytest.mark.mpfault(start_methods=["fork"], deadline=3)
def test_blocks(mpfault):
    q = mpfault.queue()
    mpfault.spawn(put_all, q, [1], name="producer").join(timeout=30)
    mpfault.spawn(stuck, mpfault.queue(), name="waiter")
    assert q.get() == 1
    q.get()  # nothing more will come: the deadline ends this call
"""
    )
    start = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:timeout", timeout=60)
    took = time.monotonic() - start
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert (
        "Hang: a blocking call in the test's main thread: the test's deadline of 3.0s ran out"
        in out
    )
    assert "What each child last did:" in out
    assert re.search(r"producer \(pid \d+, exited with code 0\): put\(1\) on 'q1', returned", out)
    assert re.search(r"waiter \(pid \d+, running\): get\(\) on 'q2', still in flight", out)
    assert "q.get()  # STUCK-LINE" in out
    assert "test_block.py:" in out  # the test's own line is in the traceback
    assert took < 3 + 5 + 10  # the deadline, its margin, and pytest's own start


def _leaves_no_run_dir(pytester: pytest.Pytester, tmp: str) -> None:
    left = [n for n in os.listdir(tmp) if n.startswith("mpf-")]
    assert left == [], f"run directories left behind: {left}"


LEAKS = (
    TARGETS
    + """
def test_fails(mpfault):
    mpfault.spawn(stuck, mpfault.queue())
    assert False, "failing on purpose"

@pytest.mark.timeout(3, method="signal")
def test_timeout_signal(mpfault):
    mpfault.spawn(stuck, mpfault.queue())
    mpfault.queue().get()

@pytest.mark.timeout(3, method="thread")
def test_timeout_thread(mpfault):
    import signal
    from mpfault._deadline import SIGNAL

    mpfault.spawn(stuck, mpfault.queue())
    # as a call stuck in C code would: the deadline's signal never gets through, so
    # pytest-timeout's thread method os._exit()s pytest
    signal.pthread_sigmask(signal.SIG_BLOCK, [SIGNAL])
    mpfault.queue().get()

def test_interrupted(mpfault):
    mpfault.spawn(stuck, mpfault.queue())
    raise KeyboardInterrupt
"""
)


@pytest.mark.parametrize(
    "test", ["test_fails", "test_timeout_signal", "test_timeout_thread", "test_interrupted"]
)
def test_no_run_directory_left(pytester: pytest.Pytester, test: str) -> None:
    tmp = pytester.mkdir("runfiles")
    pytester.makepyfile(test_leaks=LEAKS)
    os.environ["MPFAULT_TMPDIR"] = str(tmp)
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"test_leaks.py::{test}[fork]", timeout=120
        )
    finally:
        del os.environ["MPFAULT_TMPDIR"]
    assert result.ret != 0
    if test == "test_timeout_thread":
        assert "Timeout" in result.stdout.str() + result.stderr.str()
    _leaves_no_run_dir(pytester, str(tmp))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_blocked_pytest(pytester: pytest.Pytester, tmp: str) -> subprocess.Popen[bytes]:
    pytester.makepyfile(
        test_sig=TARGETS
        + """
@pytest.mark.mpfault(start_methods=["fork"])
def test_blocks(mpfault):
    c = mpfault.spawn(stuck, mpfault.queue())
    sys.__stdout__.write("READY\\n")
    sys.__stdout__.flush()
    c.result()
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "test_sig.py"],
        cwd=pytester.path,
        env=dict(os.environ, MPFAULT_TMPDIR=tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # a run started in the background by a shell inherits SIGINT ignored (and Python
        # then keeps ignoring it): the interrupted run is one whose SIGINT does something
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    seen = read_until(proc.stdout, b"READY")
    assert b"READY" in seen, seen.decode(errors="replace")
    assert [n for n in os.listdir(tmp) if n.startswith("mpf-")], "no run directory made"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_run_ended_by_a_signal_leaves_no_run_directory(
    pytester: pytest.Pytester, sig: signal.Signals
) -> None:
    tmp = str(pytester.mkdir("runfiles"))
    proc = _start_blocked_pytest(pytester, tmp)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out.decode(errors="replace")
    _leaves_no_run_dir(pytester, tmp)


def test_after_sigkill_the_next_run_removes_stale_run_directories(
    pytester: pytest.Pytester,
) -> None:
    tmp = str(pytester.mkdir("runfiles"))
    proc = _start_blocked_pytest(pytester, tmp)
    (stale,) = [n for n in os.listdir(tmp) if n.startswith("mpf-")]
    proc.kill()
    proc.communicate(timeout=60)
    assert os.path.isdir(os.path.join(tmp, stale))  # SIGKILL: nothing could clean up
    # a directory of a live process (this one), one of a pid reused by another process,
    # and one without an owner file (made by something else): only the reused one goes
    live = os.path.join(tmp, "mpf-live")
    reused = os.path.join(tmp, "mpf-reused")
    unowned = os.path.join(tmp, "mpf-unowned")
    for d in (live, reused, unowned):
        os.mkdir(d)
    _rundir.write_owner(live)
    with open(os.path.join(reused, _rundir.OWNER), "w") as f:
        f.write(f"{os.getpid()} 1\n")  # our pid, but not our start time
    pytester.makepyfile(
        test_next="""
import pytest

@pytest.mark.mpfault(start_methods=["fork"])
def test_ok(mpfault):
    assert mpfault.spawn(int, "1").result(timeout=30) == 1
"""
    )
    os.environ["MPFAULT_TMPDIR"] = tmp
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_next.py")
    finally:
        del os.environ["MPFAULT_TMPDIR"]
    result.assert_outcomes(passed=1)
    assert sorted(os.listdir(tmp)) == ["mpf-live", "mpf-unowned"]


def test_a_marker_typo_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo="""
import pytest

@pytest.mark.mpfault("put:dorp")
def test_x(mpfault):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert out.count("unknown action 'dorp'") == 1
    assert (
        "mpfault: bad fault spec 'put:dorp' from @pytest.mark.mpfault on test_typo.py::test_x"
        in out
    )
    assert "Traceback" not in out
    assert "During handling" not in out
    assert "pluggy/" not in out
    assert not [ln for ln in out.splitlines() if re.match(r"^\S+\.py:\d+: in ", ln)]


def test_option_and_code_specs_are_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mpfault=get:delay(10)")
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the duration 10 needs a unit: write 10ms or 10s" in err
    assert "Traceback" not in err
    pytester.makepyfile(
        test_code="""
import pytest
from mpfault import faults

@pytest.mark.mpfault(start_methods=["fork"])
def test_queue(mpfault):
    mpfault.queue(faults=["put:dorp"])

def test_parse():
    faults.parse("get:delay(10)")
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "E       mpfault.FaultSpecError: bad fault spec 'put:dorp' from faults of queue" in out
    assert "the duration 10 needs a unit" in out
    assert "grammar.py" not in out
    assert "_harness.py" not in out
    assert "def parse" not in out


def test_seed_last_without_the_cache_says_the_cache_is_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mpfault-seed=last")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "the cache is off (-p no:cacheprovider)" in result.stderr.str()


def test_the_fixture_offers_the_package_names(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_names="""
import pytest
import mpfault as package


def boom():
    raise ValueError("no")


@pytest.mark.mpfault(start_methods=["fork"])
def test_names(mpfault):
    q = mpfault.queue(faults=[mpfault.faults.drop(op="put", nth=1)])
    q.put(1)
    q.put(2)
    assert q.get(timeout=30) == 2
    with pytest.raises(mpfault.ChildError, match="no"):
        mpfault.spawn(boom).result(timeout=30)
    assert mpfault.Hang is package.Hang
    assert mpfault.faults == ()  # still the harness's ambient faults
    assert mpfault.faults.parse("put:drop") == package.faults.parse("put:drop")
    with pytest.raises(AttributeError):
        mpfault.no_such_name
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_replay_line_runs_as_written_with_the_options_of_the_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_replay=TARGETS
        + """
def test_slow(mpfault):
    mpfault.spawn(stuck, mpfault.queue(), name="slow").result(timeout=60)
"""
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--mpfault-deadline=2",
        "--mpfault-start-methods=fork,spawn",
        "-p",
        "no:timeout",
    )
    result.assert_outcomes(failed=2)
    lines = [ln for ln in result.stdout.lines if ln.startswith("replay: ")]
    assert len(lines) == 2
    spawn = next(ln for ln in lines if "[spawn]" in ln)[len("replay: ") :]
    assert re.match(r"\S*python\S* -m pytest 'test_replay.py::test_slow\[spawn\]'", spawn)
    assert "--mpfault-deadline=2" in spawn
    assert "--mpfault-start-methods=spawn" in spawn
    assert "-p no:timeout" in spawn
    # run it as written: the same test fails the same way
    proc = subprocess.run(
        spawn,
        shell=True,
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 failed" in proc.stdout, proc.stdout[-2000:]
    assert "the test's deadline of 2.0s ran out" in proc.stdout


def test_a_hang_shows_each_stack_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once=TARGETS
        + """
@pytest.mark.mpfault(start_methods=["fork"])
def test_hang(mpfault):
    mpfault.spawn(stuck, mpfault.queue(), name="blocked").result(timeout=1)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # (the short summary repeats the error's whole message where the CI variable is set:
    # pytest does not cut its lines there)
    out = result.stdout.str().split("short test summary info")[0]
    assert len(re.findall(r"--- blocked \(pid \d+\) ---", out)) == 1
    assert "stacks of live children: in the error above (blocked)" in out
    assert out.count("q.get()  # STUCK-LINE") == 1


def test_a_hang_on_a_queue_lock_names_the_dead_process_that_took_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_lock="""
import pytest


def big_put(q):
    q.put(b"x" * (4 << 20))  # the feeder writes it to a pipe no one reads: it keeps the lock
    q.get()  # and the process stays


def put_one(q):
    q.put(1)  # returns; at exit the feeder must take the write lock, held by the dead one


@pytest.mark.mpfault(start_methods=["fork"])
def test_lock(mpfault):
    q = mpfault.queue()
    a = mpfault.spawn(big_put, q, name="writer")
    for _ in range(200):  # a bounded number of stack requests, no sleeping
        if "send_bytes" in a.stack():
            break
    else:
        pytest.fail("the writer's feeder never wrote")
    a.kill()
    a.join(timeout=30)
    mpfault.spawn(put_one, q, name="late").join(timeout=2)
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "wacquire()" in out
    assert re.search(
        r"note: blocked on a queue write lock \(a feeder thread's wacquire\(\)\) last taken by "
        r"writer \(pid \d+, killed; its last put on 'q1'",
        out,
    ), out[-4000:]


def test_a_slow_setup_never_gets_the_deadlines_signal(pytester: pytest.Pytester) -> None:
    """The main thread is watched during the test's call only: a setup (or a report)
    slower than the deadline, on a loaded machine, is no INTERNALERROR."""
    pytester.makepyfile(
        test_slow="""
import threading
import pytest


@pytest.fixture
def slow_setup(mpfault):
    threading.Event().wait(2.0)  # a setup slower than the deadline (not synchronisation)
    return mpfault


@pytest.mark.mpfault(start_methods=["fork"], deadline=1)
def test_after_a_slow_setup(slow_setup):
    threading.Event().wait(30)  # the call itself still ends at the deadline
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    result.assert_outcomes(failed=1)
    assert "Hang: a blocking call in the test's main thread" in out
