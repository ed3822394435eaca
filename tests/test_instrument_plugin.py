"""Instrumentation from pytest: the marker, --mpfault-instrument (chaos mode over a suite
that knows nothing of mpfault), and the done-when cases on the real stdlib code, under
every start method (the inner tests use the fixture, parametrized over all of them)."""

from __future__ import annotations

import json
import pathlib
import re
import time

import pytest

from procs import wait_gone

pytest_plugins = ["pytester"]

HERE = pathlib.Path(__file__).parent


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def test_chaos_mode_over_a_suite_that_knows_nothing_of_mpfault(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain=(HERE / "test_plain_multiprocessing.py").read_text(),
        test_failing="""
            import multiprocessing

            def double(x):
                return 2 * x

            def test_fails_after_a_pool():
                with multiprocessing.get_context("fork").Pool(2) as pool:
                    assert pool.map(double, range(5)) == [0, 2, 4, 6, 9]
        """,
    )
    result = run(pytester, "--mpfault-instrument", "--mpfault=get:10%delay(1ms..5ms)")
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    assert "mpfault: instrumenting every test" in out
    # the failure carries the mpfault report, with the pool's queues by where they were made
    assert "SimpleQueue@multiprocessing/pool.py:" in out
    assert "ForkPoolWorker-" in out
    # without the option, nothing of mpfault
    plain = run(pytester)
    plain.assert_outcomes(passed=3, failed=1)
    assert "SimpleQueue@" not in plain.stdout.str()


def test_instrument_settings_and_their_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import multiprocessing
        import pytest

        @pytest.mark.mpfault(instrument=True, start_methods=["fork"])
        def test_marker(mpfault):
            q = mpfault.ctx.Queue()
            q.put(1)
            assert q.get(timeout=10) == 1
            assert [e.queue for e in mpfault.history.events][0].startswith("Queue@")

        def test_no_fixture_no_instrumentation():
            q = multiprocessing.Queue()
            assert type(q).put.__module__ == "multiprocessing.queues"
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_env_value_is_checked(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    monkeypatch.setenv("MPFAULT_INSTRUMENT", "maybe")
    result = run(pytester)
    assert result.ret != 0
    result.stderr.fnmatch_lines(
        ["*mpfault: env MPFAULT_INSTRUMENT must be 1/true/yes/on or 0/false/no/off, got 'maybe'*"]
    )
    monkeypatch.setenv("MPFAULT_INSTRUMENT", "1")
    run(pytester).stdout.fnmatch_lines(["*mpfault: instrumenting every test*"])


POOL_KILL = r"""
import multiprocessing
import re
import pytest

def square(x):
    return x * x

@pytest.mark.mpfault("got@*PoolWorker-*#2:kill(after)", instrument=True, deadline=60)
def test_pool_worker_dies_with_its_task(mpfault):
    pool = mpfault.ctx.Pool(2)
    res = pool.map_async(square, range(8), chunksize=1)
    with pytest.raises(multiprocessing.TimeoutError):
        res.get(timeout=3)  # gh-66587: stock CPython waits forever
    hang = mpfault._hang("pool.map()", 3)
    text = str(hang)
    assert "was killed by SIGKILL right after get() on 'SimpleQueue@multiprocessing/pool" in text
    assert re.search(r"returned \(\d+, \d+, <function mapstar", text)  # the task it had taken
    assert "PoolWorker-" in text and "Stacks of the test's live children" in text
    dead = [c for c in mpfault.children if c.adopted and c.exitcode == -9]
    assert len(dead) == 1
"""


def test_pool_worker_killed_after_its_second_task(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(POOL_KILL)
    result = run(pytester)
    result.assert_outcomes(passed=3)


POOL_MAP_DEADLINE = r"""
import json, os
import pytest

def square(x):
    return x * x

@pytest.mark.mpfault("got@*PoolWorker-*#2:kill(after)", instrument=True, deadline=4)
def test_pool_map(mpfault):
    with mpfault.ctx.Pool(2) as pool:
        with open(os.environ["POOL_PIDS"], "a") as f:
            f.write(json.dumps([p.pid for p in pool._pool]) + "\n")
        pool.map(square, range(8), chunksize=1)  # gh-66587: stock CPython waits forever
"""


def test_pool_map_in_the_test_ends_at_the_deadline_in_a_hang(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The done-when of the instrumentation issue: pool.map() called in the test itself
    (no harness wait involved) is ended by the deadline, and the Hang names the killed
    worker and the task it had taken; nothing is left behind."""
    pytester.makepyfile(POOL_MAP_DEADLINE)
    pids = pytester.path / "pids"
    monkeypatch.setenv("POOL_PIDS", str(pids))
    t0 = time.monotonic()
    result = run(pytester, f"--mpfault-tmpdir={pytester.path}")
    elapsed = time.monotonic() - t0
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert out.count("Hang: a blocking call in the test's main thread") >= 3
    assert (
        out.count("was killed by SIGKILL right after get() on 'SimpleQueue@multiprocessing/pool")
        >= 3
    )
    assert re.search(r"returned \(\d+, \d+, <function mapstar", out)  # the task it took
    assert elapsed >= 3 * 4 - 1  # each waited for its deadline
    assert [p for p in pytester.path.iterdir() if p.name.startswith("mpf-")] == []
    workers = [pid for line in pids.read_text().splitlines() for pid in json.loads(line)]
    assert len(workers) == 6
    assert wait_gone(workers, 10) == [], "pool workers outlived the test"


EXECUTOR = """
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import pytest

def double(x):
    return 2 * x

@pytest.mark.mpfault("got@*Process-*#1:kill(after)", instrument=True)
def test_broken_pool_names_the_item(mpfault):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=mpfault.ctx) as ex:
        with pytest.raises(BrokenProcessPool):
            list(ex.map(double, range(10)))
    hist = mpfault.history
    taken = [e for e in hist.ops("get", outcome="ok") if e.queue.startswith("_SafeQueue@")]
    assert taken and "_CallItem" in (taken[0].result or "")
    killed = [c for c in mpfault.children if c.adopted and c.exitcode == -9]
    assert len(killed) == 1

@pytest.mark.mpfault(instrument=True)
def test_clean_map_no_loss_no_duplicates(mpfault):
    # 100 clean map()s of 200 items: 10 executors (their start and shutdown), 10 maps each
    for _ in range(10):
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=mpfault.ctx) as ex:
            for _ in range(10):
                assert list(ex.map(double, range(200))) == [2 * x for x in range(200)]
    hist = mpfault.history
    calls_got = [e for e in hist.ops("get", outcome="ok") if e.queue.startswith("_SafeQueue@")]
    assert len([e for e in calls_got if "_CallItem" in (e.result or "")]) == 100 * 200
    queues = {e.queue for e in hist.events}
    assert any(q.startswith("_SafeQueue@") for q in queues)  # the call queue
    assert any(q.startswith("SimpleQueue@concurrent/futures/process.py") for q in queues)
    for q in queues:
        if q.startswith(("_SafeQueue@", "SimpleQueue@")):
            hist.assert_no_duplicates(q)
    results = [q for q in queues if q.startswith("SimpleQueue@")]
    for q in results:  # (a worker that exits puts its pid, which shutdown may not read)
        assert [i for i in hist.lost(q) if not i.key.startswith("int:")] == []
    calls = [q for q in queues if q.startswith("_SafeQueue@")]
    for q in calls:
        assert [i for i in hist.lost(q) if "_CallItem" in i.key] == []
"""


def test_process_pool_executor(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(EXECUTOR)
    run(pytester).assert_outcomes(passed=6)


LOGGING = """
import logging
import logging.handlers
import pytest

def work(q):
    log = logging.getLogger("worker")
    log.setLevel(logging.INFO)
    log.addHandler(logging.handlers.QueueHandler(q))
    for i in range(1, 6):
        log.info("record %d", i)

@pytest.mark.mpfault("put@worker#3:kill(after)", instrument=True)
def test_records_lost_with_the_worker(mpfault):
    q = mpfault.ctx.Queue()
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    listener = logging.handlers.QueueListener(q, Keep())
    listener.start()
    p = mpfault.ctx.Process(target=work, args=(q,), name="worker")
    p.start()
    p.join(30)
    assert p.exitcode == -9
    # a record the feeder thread was writing when the kill landed leaves the queue's
    # write lock held by a dead process (and a stock QueueListener.stop() waits forever)
    if not q._wlock.acquire(False):
        q._wlock.release()
    else:
        q._wlock.release()
    listener.stop()
    lost = [i.key for i in mpfault.history.lost() if "LogRecord" in i.key]
    # the worker put 3 records before it died: each one either reached the listener
    # or is reported lost, by its message
    assert "record 3" not in got
    assert any('"record 3"' in v for v in lost)
    for n in (1, 2):
        assert (f"record {n}" in got) != any(f'"record {n}"' in v for v in lost)
"""


def test_queue_handler_and_listener(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LOGGING)
    run(pytester).assert_outcomes(passed=3)
