"""Worked demonstrations of documented races and hazards, made exact with gates.

No sleep is used as synchronisation: gates park a process at an exact point, the
test acts, then releases it.
"""

from __future__ import annotations

import queue
import time
from multiprocessing.connection import wait

import pytest

from mpfault import ChildError, FaultQueue, Hang, Harness, faults
from procs import hang_showing

N = 100


def guarded_put(q: FaultQueue, go: FaultQueue, out: FaultQueue, n: int) -> None:
    """The check-then-act producer: put only when the queue is not full."""
    for i in range(n):
        go.get()  # one attempt per round of the test
        if not q.full():
            try:
                q.put_nowait(i)
                out.put("put")
            except queue.Full:
                out.put("Full")
        else:
            out.put("skipped")


def guarded_get(q: FaultQueue, out: FaultQueue, n: int) -> None:
    """The check-then-act consumer: get only when the queue is not empty."""
    for _ in range(n):
        wait([q._reader])  # until an item is in the pipe (no polling)
        if not q.empty():
            try:
                out.put(("got", q.get_nowait()))
            except queue.Empty:
                out.put(("Empty", None))
        else:
            out.put(("skipped", None))


def test_full_then_put_race(mpfault: Harness) -> None:
    """queue-behaviours row 16: full() returned False, yet put_nowait() raises Full."""
    gates = [mpfault.gate("full", when="after", who="p1", nth=i + 1) for i in range(N)]
    q = mpfault.queue(maxsize=1, faults=gates)
    go, out = mpfault.queue(), mpfault.queue()
    p1 = mpfault.spawn(guarded_put, q, go, out, N, name="p1")
    outcomes = []
    for g in gates:
        go.put("go")
        g.wait_reached(timeout=60)  # p1 saw full() == False and is parked right after it
        q.put("filler")  # another producer fills the only slot
        g.release()
        outcomes.append(out.get(timeout=60))
        assert q.get(timeout=60) == "filler"
    assert outcomes == ["Full"] * N
    p1.result(timeout=60)


def test_empty_then_get_race(mpfault: Harness) -> None:
    """queue-behaviours row 17: empty() returned False, yet get_nowait() raises Empty."""
    gates = [mpfault.gate("empty", when="after", who="c1", nth=i + 1) for i in range(N)]
    q = mpfault.queue(faults=gates)
    out = mpfault.queue()
    c1 = mpfault.spawn(guarded_get, q, out, N, name="c1")
    outcomes = []
    for i, g in enumerate(gates):
        q.put(i)
        g.wait_reached(timeout=60)  # c1 saw empty() == False and is parked
        assert q.get(timeout=60) == i  # another consumer takes the item first
        g.release()
        outcomes.append(out.get(timeout=60))
    assert outcomes == [("Empty", None)] * N
    c1.result(timeout=60)


def put_then_report(q: FaultQueue, item: object) -> None:
    q.put(item)


def test_loss_after_put_followed_by_kill(mpfault: Harness) -> None:
    """queue-behaviours row 28: SIGKILL right after put() loses the item."""
    n = N if mpfault.start_method == "fork" else 5
    q = mpfault.queue(faults=[faults.kill(when="after", op="put", who="producer-*")])
    for i in range(n):
        c = mpfault.spawn(put_then_report, q, i, name=f"producer-{i}")
        with pytest.raises(ChildError, match="killed by SIGKILL"):
            c.result(timeout=60)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert len(mpfault.history.lost()) == n


def put_big(q: FaultQueue) -> str:
    q.put("X" * 1_000_000)
    return "returned"


def test_join_before_drain_deadlock(mpfault: Harness) -> None:
    """queue-behaviours row 26: joining a child that put more than the pipe holds."""
    q = mpfault.queue(name="big")
    c = mpfault.spawn(put_big, q, name="producer")
    assert c.result(timeout=60) == "returned"  # the target returned...
    with pytest.raises(Hang) as info:
        c.join(timeout=1.0)  # ...but the process cannot exit: its feeder is blocked
    msg = str(info.value)
    assert "join(timeout=1.0) of child 'producer'" in msg
    assert "Queues with items put and never got:\n  'big': 1 item(s): 'XXXX" in msg
    assert "join_thread" in msg or "_finalize_join" in msg
    assert q.get(timeout=60) == "X" * 1_000_000  # draining first is the fix
    assert c.join(timeout=60) == 0


def consume_until_none(q: FaultQueue) -> int:
    n = 0
    while q.get() is not None:
        n += 1
    return n


def consume_and_readd_sentinel(q: FaultQueue) -> int:
    n = 0
    while True:
        x = q.get()
        if x is None:
            q.put(None)  # leave the sentinel for the next consumer
            return n
        n += 1


def test_fewer_sentinels_than_consumers(mpfault: Harness) -> None:
    """queue-behaviours row 46: N consumers need N sentinels."""
    q = mpfault.queue()
    consumers = [mpfault.spawn(consume_until_none, q) for _ in range(3)]
    for i in range(9):
        q.put(i)
    q.put(None)
    q.put(None)
    done: dict[str, int] = {}
    end = time.monotonic() + 60
    while len(done) < 2 and time.monotonic() < end:
        for c in consumers:
            if c.name not in done:
                try:
                    done[c.name] = c.result(timeout=0.2)
                except Hang:
                    pass
    assert len(done) == 2
    assert sum(done.values()) <= 9
    (hung,) = [c for c in consumers if c.name not in done]
    hang_showing(hung, "while q.get() is not None")  # blocked for good: no sentinel left


def test_sentinel_readd_pattern(mpfault: Harness) -> None:
    q = mpfault.queue()
    consumers = [mpfault.spawn(consume_and_readd_sentinel, q) for _ in range(3)]
    for i in range(9):
        q.put(i)
    q.put(None)
    assert sum(c.result(timeout=60) for c in consumers) == 9
    assert q.get(timeout=60) is None
    mpfault.history.assert_no_duplicates()
