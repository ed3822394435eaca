"""``kill(during)``: a process dies blocked inside a queue operation, holding what the
operation holds there (the read lock of a get, the write lock of a put's feeder, the
condition lock of ``task_done()``, half a message of a connection's send).  Real
processes and real locks under every start method: what the other processes then see
is what a real death there does to them."""

from __future__ import annotations

import json
import queue
import re
import time

import pytest

from mpfault import ChildError, Harness
from procs import wait_gone

pytest_plugins = ["pytester"]


def get_one(q, timeout):  # type: ignore[no-untyped-def]
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return "Empty"


def put_all(q, items):  # type: ignore[no-untyped-def]
    for x in items:
        q.put(x)
    return len(items)


def done_one(q):  # type: ignore[no-untyped-def]
    q.get()
    q.task_done()


def qsize_of(q):  # type: ignore[no-untyped-def]
    return q.qsize()


def send_one(conn, obj):  # type: ignore[no-untyped-def]
    conn.send(obj)


def _fault_details(h: Harness) -> list[str]:
    return [m.detail for m in h.history.marks if m.kind == "fault"]


def test_killed_inside_get_keeps_the_read_lock(mpfault: Harness) -> None:
    q = mpfault.queue(faults=["get@c1:kill(during)"])
    c1 = mpfault.spawn(get_one, q, None, name="c1")  # idle in get(): the queue is empty
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        c1.result(timeout=60)
    q.put(1)
    q.put(2)
    # the items are there, but the read lock died with c1: no get can take them
    c2 = mpfault.spawn(get_one, q, 0.5, name="c2")
    t0 = time.monotonic()
    assert c2.result(timeout=60) == "Empty"
    assert time.monotonic() - t0 >= 0.5
    assert q.qsize() == 2
    assert _fault_details(mpfault) == [
        "get: kill SIGKILL (during, holding the read lock) [get@c1:kill(during)]"
    ]
    (holder,) = mpfault.history.dead_lock_holders("get")
    assert re.fullmatch(r"c1 \(pid \d+, killed inside get\(\) on 'q1' holding it, at .*\)", holder)


def test_killed_inside_put_keeps_the_write_lock_and_loses_the_item(mpfault: Harness) -> None:
    q = mpfault.queue(faults=["put@p1:kill(during)"])
    p1 = mpfault.spawn(put_all, q, ["a"], name="p1")
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        p1.result(timeout=60)
    p2 = mpfault.spawn(put_all, q, ["b", "c"], name="p2")
    assert p2.result(timeout=60) == 2  # put() returns; p2's feeder waits for the lock
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)  # nothing reaches the pipe: p1 holds the write lock for good
    assert q.qsize() == 3  # 'a' was taken in (its room) and never sent
    (detail,) = _fault_details(mpfault)
    assert detail == (
        "put: kill SIGKILL (during, holding the write lock, the item taken in and never"
        " sent) [put@p1:kill(during)]"
    )
    assert mpfault.history.dead_lock_holders("put")[0].startswith("p1 (pid ")


def test_killed_inside_task_done_keeps_the_condition_lock(mpfault: Harness) -> None:
    q = mpfault.queue(kind="JoinableQueue", faults=["task_done@w:kill(during)"])
    q.put("job")
    w = mpfault.spawn(done_one, q, name="w")
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        w.result(timeout=60)
    # join() and put() need that lock: nobody can take it any more
    assert q.wrapped._cond.acquire(timeout=0.3) is False
    assert "(during, holding the lock of task_done()/join())" in _fault_details(mpfault)[0]


def test_a_fault_off_the_lock_ops_dies_on_entry(mpfault: Harness) -> None:
    q = mpfault.queue(faults=["qsize@w:kill(during)"])
    w = mpfault.spawn(qsize_of, q, name="w")
    with pytest.raises(ChildError, match="killed by SIGKILL"):
        w.result(timeout=60)
    q.put(1)
    assert q.get(timeout=10) == 1  # nothing was held
    assert "(during, on entry)" in _fault_details(mpfault)[0]


def test_killed_half_way_through_a_send(mpfault: Harness) -> None:
    with mpfault.instrument(faults={"Connection@*": "send@w:kill(during)"}):
        reader, writer = mpfault.ctx.Pipe(duplex=False)
        p = mpfault.ctx.Process(target=send_one, args=(writer, "x" * 1000), name="w")
        p.start()
        writer.close()
        p.join(60)
        assert p.exitcode == -9
        # the length and half the message arrived; then the end of the file
        with pytest.raises(OSError, match="got end of file during message"):
            reader.recv()
        reader.close()
    (detail,) = [d for d in _fault_details(mpfault) if "kill" in d]
    assert re.search(
        r"send: kill SIGKILL \(during, half-way through sending a message "
        r"\((\d+) of (\d+) bytes written\)\)",
        detail,
    )


POOL_IDLE = r"""
import json, os
import pytest

def square(x):
    return x * x

@pytest.mark.mpfault("get@*PoolWorker-*#1:kill(during)", instrument=True, deadline=4)
def test_pool_map(mpfault):
    try:
        with mpfault.ctx.Pool(2) as pool:
            pool.map(square, range(8), chunksize=1)  # the read lock died with a worker
    finally:  # every worker the pool started, replacements included (all adopted)
        with open(os.environ["POOL_PIDS"], "a") as f:
            f.write(json.dumps([c.pid for c in mpfault.children if c.adopted]) + "\n")
    # not reached when the fault works: what happened instead, for the outer test
    h = mpfault.history
    ops = [f"{e.process} {e.op}#{e.seq} {e.outcome} fault={e.fault}" for e in h.events]
    marks = [f"{m.process} {m.kind} {m.detail}" for m in h.marks]
    pytest.fail("UNEXPECTED map() returned:\n" + "\n".join(ops[:60] + marks[:40]))
"""


def test_pool_worker_killed_idle_in_get_wedges_map_until_the_deadline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrumentation issue's done-when: an idle Pool worker killed inside get()
    takes the task queue's read lock with it; pool.map() in the test ends at the
    deadline in a Hang naming the worker and the lock; no process is left."""
    pytester.makepyfile(POOL_IDLE)
    pids = pytester.path / "pids"
    monkeypatch.setenv("POOL_PIDS", str(pids))
    t0 = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--mpfault-tmpdir={pytester.path}", timeout=300
    )
    elapsed = time.monotonic() - t0
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert "UNEXPECTED" not in out, out[-10000:]
    assert out.count("Hang: a blocking call in the test's main thread") >= 3
    died = re.findall(
        r"PoolWorker-\d+ \(pid \d+\) was killed by SIGKILL while in get\(\) on "
        r"'SimpleQueue@multiprocessing/pool\.py:\d+', holding its read lock",
        out,
    )
    assert len(died) >= 3, out[-6000:]
    assert re.search(
        r"blocked on a queue read lock \(get\(\)\) held by \w*PoolWorker-\d+ \(pid \d+, killed "
        r"inside get\(\) on 'SimpleQueue@multiprocessing/pool\.py:\d+' holding it",
        out,
    ), out[-6000:]
    # the Pool's exit (terminate() takes that same lock) is ended too
    assert out.count("blocked again while unwinding from the Hang above") >= 3
    # the workers' stacks start at their target, without what they inherited or mpfault's
    stacks = out.split("Stacks of the test's live children")[1].split("During handling")[0]
    assert "task = get()" in stacks
    assert "_pytest" not in stacks
    assert "pluggy" not in stacks
    assert "frames of mpfault's recording and faults not shown" in stacks
    assert "instrument.py" not in stacks
    assert elapsed >= 3 * 4 - 1  # each waited for its deadline
    assert [p for p in pytester.path.iterdir() if p.name.startswith("mpf-")] == []
    lines = [json.loads(line) for line in pids.read_text().splitlines()]
    assert len(lines) == 3
    assert all(len(pids) >= 2 for pids in lines), lines
    workers = [pid for pids in lines for pid in pids]
    assert wait_gone(workers, 10) == [], "pool workers outlived the test"


WEDGED_FEEDER = """
import pytest
from mpfault import ChildError


def put_one(q):
    q.put(1)


def test_feeder_wedged_by_a_dead_writer(mpfault):
    with mpfault.instrument(faults={"*": "put@c1:kill(during)"}):
        q = mpfault.ctx.Queue()  # made by the test's code: not a harness queue
        c = mpfault.spawn(put_one, q, name="c1")
        with pytest.raises(ChildError, match="SIGKILL"):
            c.result(timeout=60)
        q.put(2)  # this process's feeder waits for the write lock c1 died holding


def test_wrapped_feeder_wedged_by_a_dead_writer(mpfault):
    raw = mpfault.ctx.Queue()  # the user's queue, wrapped
    q = mpfault.wrap(raw, faults=["put@c1:kill(during)"])
    c = mpfault.spawn(put_one, q, name="c1")
    with pytest.raises(ChildError, match="SIGKILL"):
        c.result(timeout=60)
    raw.put(2)
"""


def test_a_feeder_wedged_by_a_killed_writer_does_not_hold_pytests_exit(
    pytester: pytest.Pytester,
) -> None:
    """multiprocessing joins every queue's feeder thread at exit, with no bound; one
    waiting for a write lock that died with a process never ends.  The queues made
    while instrumented are let go (``cancel_join_thread()``) when instrumentation ends,
    and a wrapped queue of the user's when a dead process holds its write lock."""
    pytester.makepyfile(WEDGED_FEEDER)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--mpfault-tmpdir={pytester.path}", timeout=120
    )
    result.assert_outcomes(passed=6)
    assert [p for p in pytester.path.iterdir() if p.name.startswith("mpf-")] == []
