"""The plugin seen from pytest: reports of failing tests, and no process left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from procs import read_until, wait_gone

METHODS = ["fork", "spawn", "forkserver"]

TARGETS = """
import os, queue, signal, sys
import pytest

def boom():
    raise ValueError("child says no")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def stuck(ready, q):
    ready.put(os.getpid())
    q.get()  # STUCK-LINE

def livelock(ready, q):
    ready.put(os.getpid())
    while True:
        try:
            q.get(timeout=0.05)  # LIVELOCK-LINE
        except queue.Empty:
            pass

def chatty():
    print("hello from the child")
    print("complaint from the child", file=sys.stderr)
    return 1

def record(pid):
    path = os.environ.get("MPF_PIDS")
    if path:
        with open(path, "a") as f:
            f.write(f"{pid}\\n")

def start_stuck(h, n=2):
    ready, q = h.queue(), h.queue()
    children = [h.spawn(stuck, ready, q) for _ in range(n)]
    for _ in children:
        record(ready.get(timeout=60))
    return children
"""


def test_failure_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_reports=TARGETS
        + """
def test_exc(mpfault):
    mpfault.spawn(boom).result(timeout=60)

def test_kill(mpfault):
    mpfault.spawn(die).result(timeout=60)

def test_hang(mpfault):
    from mpfault import Hang
    child = start_stuck(mpfault, 1)[0]
    for _ in range(60):  # until the child is inside q.get() (a loaded CI may be slow)
        try:
            child.result(timeout=0.5)
        except Hang as e:
            if "STUCK-LINE" in str(e):
                raise

@pytest.mark.mpfault(deadline=3)
def test_livelock(mpfault):
    ready, q = mpfault.queue(), mpfault.queue()
    c = mpfault.spawn(livelock, ready, q)
    ready.get(timeout=60)
    c.result()

def test_output(mpfault):
    assert mpfault.spawn(chatty).result(timeout=60) == 2
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=15)
    # (the short summary repeats messages in full when $CI is set: leave it out)
    out = "\n".join(ln for ln in result.stdout.lines if not ln.startswith("FAILED "))
    for m in METHODS:
        # the child's exception and traceback, in the test's failure
        assert re.search(
            rf"ChildError: child 'boom-1' \(pid \d+, {m}\) raised ValueError: child says no",
            out,
        )
        # the signal that killed the child
        assert re.search(rf"child 'die-1' \(pid \d+, {m}\) was killed by SIGKILL", out)
        assert f"test_hang[{m}]" in out
        assert f"test_livelock[{m}]" in out
    assert out.count('raise ValueError("child says no")') >= 3
    assert out.count("result(timeout=0.5) of child 'stuck-1': it timed out after 0.5s") == 3
    assert out.count("q.get()  # STUCK-LINE") >= 3
    assert out.count("the test's deadline of 3.0s ran out") == 3
    assert out.count("q.get(timeout=0.05)  # LIVELOCK-LINE") >= 3
    # child output in a report section of its own
    assert out.count("Captured stdout (mpfault child chatty-1) call") == 3
    assert out.count("Captured stderr (mpfault child chatty-1) call") == 3
    assert out.count("hello from the child") >= 3
    # the mpfault section: seed, replay line, children, timeline
    replays = re.findall(
        r"replay: \S*python\S* -m pytest 'test_reports.py::test_kill\[(\w+)\]'", out
    )
    assert sorted(replays) == sorted(METHODS)
    assert re.search(r"die-1 \(pid \d+\): killed by SIGKILL", out)
    # the harness's own queues and locks leave no resource_tracker warnings behind
    assert "leaked" not in result.stderr.str()


def test_junitxml_carries_child_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_junit=TARGETS
        + """
@pytest.mark.mpfault(start_methods=["fork"])
def test_output(mpfault):
    assert mpfault.spawn(chatty).result(timeout=60) == 2
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--junitxml=out.xml", "-o", "junit_logging=all", timeout=120
    )
    result.assert_outcomes(failed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert "hello from the child" in xml
    assert "complaint from the child" in xml


def _pids(path: os.PathLike[str] | str) -> list[int]:
    with open(path) as f:
        return [int(x) for x in f.read().split()]


LEAK_TESTS = """
def test_fails(mpfault):
    start_stuck(mpfault)
    assert False, "failing on purpose"

@pytest.mark.timeout(3, method="signal")
def test_timeout_signal(mpfault):
    start_stuck(mpfault)
    mpfault.queue().get()  # the test itself blocks, outside any mpfault wait

@pytest.mark.timeout(3, method="thread")
def test_timeout_thread(mpfault):
    start_stuck(mpfault)
    mpfault.queue().get()

def test_interrupted(mpfault):
    start_stuck(mpfault)
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize(
    ("test", "method"),
    [
        (t, m)
        for t in ["test_fails", "test_timeout_signal", "test_timeout_thread", "test_interrupted"]
        for m in METHODS
    ],
)
def test_no_process_left_behind(pytester: pytest.Pytester, test: str, method: str) -> None:
    pytester.makepyfile(test_leaks=TARGETS + LEAK_TESTS)
    pids = pytester.path / "pids"
    os.environ["MPF_PIDS"] = str(pids)
    try:
        # a pytest that is ended by os._exit leaves its run directory: in the test's own
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            f"--mpfault-tmpdir={pytester.path}",
            f"test_leaks.py::{test}[{method}]",
            timeout=120,
        )
    finally:
        del os.environ["MPF_PIDS"]
    out = result.stdout.str() + result.stderr.str()
    if test == "test_timeout_thread":
        assert result.ret != 0
        # mpfault's deadline (below the timeout) ends the blocking call with a Hang that
        # holds every child's stack; where pytest-timeout's thread method still fires
        # first (os._exit, e.g. a teardown slowed by load), the stacks are printed
        # before it ends the process
        assert (
            "Hang: a blocking call in the test's main thread" in out
            or "mpfault: children of test_leaks.py::test_timeout_thread" in out
        ), out
        assert out.count("q.get()  # STUCK-LINE") >= 2
    elif test == "test_timeout_signal":
        result.assert_outcomes(failed=1)
        # mpfault's deadline (kept below the timeout) ends the blocking call first
        assert "Hang: a blocking call in the test's main thread" in out
        assert "Stacks of the test's live children:" in out
        assert out.count("q.get()  # STUCK-LINE") >= 2
    elif test == "test_interrupted":
        assert result.ret == pytest.ExitCode.INTERRUPTED
    else:
        result.assert_outcomes(failed=1)
    found = _pids(pids)
    assert len(found) == 2
    assert wait_gone(found, 10) == [], "children outlived the test"


UNINTERRUPTIBLE = """
import signal

from mpfault._deadline import SIGNAL


@pytest.mark.timeout(3, method="thread")
def test_blocked(mpfault):
    start_stuck(mpfault)
    # a call that no signal interrupts (as C code can be): mpfault's deadline cannot end
    # it, so pytest-timeout's thread method does, and the stacks come before its os._exit
    signal.pthread_sigmask(signal.SIG_BLOCK, {SIGNAL})
    mpfault.queue().get()
"""


def test_thread_timeout_prints_stacks_when_the_deadline_cannot_interrupt(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leaks=TARGETS + UNINTERRUPTIBLE)
    pids = pytester.path / "pids"
    os.environ["MPF_PIDS"] = str(pids)
    try:
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            f"--mpfault-tmpdir={pytester.path}",
            "--mpfault-start-methods=fork",
            "test_leaks.py::test_blocked",
            timeout=120,
        )
    finally:
        del os.environ["MPF_PIDS"]
    out = result.stdout.str() + result.stderr.str()
    assert result.ret != 0  # os._exit by pytest-timeout
    assert "Hang: a blocking call" not in out
    assert "mpfault: children of test_leaks.py::test_blocked" in out
    assert out.count("q.get()  # STUCK-LINE") >= 2
    found = _pids(pids)
    assert len(found) == 2
    assert wait_gone(found, 10) == [], "children outlived the test"


SLOW_REPORT_CONFTEST = """
import threading

import pytest


def pytest_mpfault_report_sections(harness, item, report):
    # a report hook that is still busy when pytest-timeout's signal fires (a gate that
    # never opens: the SIGALRM handler's pytest.fail ends the wait)
    threading.Event().wait()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_makereport(item, call):
    if call.when == "setup" and "slow_setup_report" in item.name:
        threading.Event().wait()  # inside pytest's own report-making, below mpfault's
    return (yield)
"""

SLOW_REPORT_TESTS = """
import pytest


@pytest.mark.timeout(3, method="signal")
@pytest.mark.mpfault(start_methods=["fork"])
def test_failure_report(mpfault):
    mpfault.queue().put(1)
    assert 1 == 2, "failing on purpose"


@pytest.mark.timeout(3, method="signal")
@pytest.mark.mpfault(start_methods=["fork"])
def test_slow_setup_report(mpfault):
    pass


@pytest.mark.mpfault(start_methods=["fork"])
def test_after(mpfault):
    pass
"""


def test_pytest_timeout_firing_while_the_report_is_written_fails_the_test(
    pytester: pytest.Pytester,
) -> None:
    """pytest-timeout's signal fires in mpfault's report hooks: the test fails with its
    own failure and a note, the session goes on (no INTERNALERROR, nothing lost)."""
    pytester.makeconftest(SLOW_REPORT_CONFTEST)
    pytester.makepyfile(test_slow_report=SLOW_REPORT_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=120)
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    result.assert_outcomes(failed=1, errors=1, passed=1)
    assert "AssertionError: failing on purpose" in out
    assert (
        "Timeout (>3.0s) from pytest-timeout. It fired while the report of this test's call "
        "was being written: the mpfault section may be missing or cut short." in out
    )
    assert (
        "Timeout (>3.0s) from pytest-timeout. It fired while the report of this test's setup "
        "was being written" in out
    )
    assert re.search(r"ERROR test_slow_report.py::test_slow_setup_report\[fork\]", out), out
    assert re.search(r"PASSED test_slow_report.py::test_after\[fork\]", out), out


DEAF_CHILD_TESTS = """
import os, signal, threading
import pytest

PIDFILE = os.path.join(os.path.dirname(__file__), "pid")


def deaf(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # teardown's SIGTERM does nothing
    ready.put(os.getpid())
    threading.Event().wait()


@pytest.mark.timeout(3, method="signal")
@pytest.mark.mpfault(start_methods=["fork"])
def test_deaf_child(mpfault):
    ready = mpfault.queue()
    mpfault.spawn(deaf, ready)
    with open(PIDFILE, "w") as f:
        f.write(str(ready.get(timeout=30)))


def test_after():
    # the same session: the parent-death watchdog cannot have ended the child yet
    pid = int(open(PIDFILE).read())
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state == "gone", f"the child (pid {pid}, state {state}) outlived its teardown"
"""


def test_pytest_timeout_firing_in_the_teardown_waits_for_the_cleanup(
    pytester: pytest.Pytester,
) -> None:
    """pytest-timeout's signal fires while the teardown waits out a child's grace (it
    ignores SIGTERM): the teardown still kills and reaps it, then the timeout fails it."""
    pytester.makeini("[pytest]\nmpfault_grace = 6\n")
    pytester.makepyfile(test_deaf=DEAF_CHILD_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=120)
    out = result.stdout.str()
    result.assert_outcomes(passed=2, errors=1)
    assert re.search(r"ERROR test_deaf.py::test_deaf_child\[fork\] - Failed: Timeout", out), out
    assert re.search(r"PASSED test_deaf.py::test_after", out), out


LOAD_ORDER_CONFTEST = """
import sys

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    loaded = "mpfault._pytest_report" in sys.modules
    print(f"LOADED {item.name} {loaded}")
"""

LOAD_ORDER_TESTS = """
import pytest


def test_plain():
    pass


@pytest.mark.timeout(30)
def test_timed_plain():
    pass


@pytest.mark.timeout(30)
@pytest.mark.mpfault(start_methods=["fork"])
def test_timed(mpfault):
    pass
"""


def test_the_report_loads_before_pytest_timeouts_timer_and_only_for_mpfault_tests(
    pytester: pytest.Pytester,
) -> None:
    """Under pytest-timeout the harness and report modules load before its timer starts
    (compiling them on a loaded machine took most of a 2 s timeout); a session whose
    tests do not use mpfault loads neither."""
    pytester.makeconftest(LOAD_ORDER_CONFTEST)
    pytester.makepyfile(test_load_order=LOAD_ORDER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=120)
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "LOADED test_plain False" in out
    assert "LOADED test_timed_plain False" in out
    assert "LOADED test_timed[fork] True" in out


@pytest.mark.parametrize("method", METHODS)
def test_no_process_left_after_pytest_is_sigkilled(pytester: pytest.Pytester, method: str) -> None:
    pytester.makepyfile(
        test_sigkill=TARGETS
        + """
def test_blocks(mpfault):
    start_stuck(mpfault)
    print("READY", flush=True)
    sys.__stdout__.write("READY\\n")
    sys.__stdout__.flush()
    mpfault.children[0].result()
"""
    )
    pids = pytester.path / "pids"
    env = dict(os.environ, MPF_PIDS=str(pids))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--mpfault-tmpdir={pytester.path}",  # a SIGKILLed pytest leaves its run files
            "-s",
            f"test_sigkill.py::test_blocks[{method}]",
        ],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = read_until(proc.stdout, b"READY")
    assert b"READY" in seen, seen.decode(errors="replace")
    found = _pids(pids)
    assert len(found) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    assert wait_gone(found, 10) == [], "children outlived the SIGKILLed pytest"


def test_spawn_children_do_not_reimport_the_pytest_script(pytester: pytest.Pytester) -> None:
    script = os.path.join(os.path.dirname(sys.executable), "pytest")
    if not os.path.exists(script):
        pytest.skip("no pytest console script next to the interpreter")
    pytester.makepyfile(
        """
        import sys
        import pytest

        def main_file():
            return getattr(sys.modules.get("__mp_main__"), "__file__", None)

        @pytest.mark.mpfault(start_methods=["spawn", "forkserver"])
        def test_main(mpfault):
            assert mpfault.spawn(main_file).result(timeout=60) is None
        """
    )
    proc = subprocess.run(
        [script, "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
