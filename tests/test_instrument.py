"""Instrumentation: the queues, pipes and processes the code under test makes itself.

Real stdlib code (Pool, ProcessPoolExecutor, plain queues and pipes), every start method.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mpfault import Harness
from mpfault._runtime import instrument as _ins


def square(x: int) -> int:
    return x * x


class IterQueue(multiprocessing.queues.Queue):  # type: ignore[type-arg]
    """A third-party-style subclass: iterable until a sentinel, with its own get."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("ctx", multiprocessing.get_context())
        super().__init__(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        item = super().get(*args, **kwargs)
        return ("got", item)[1]

    def __iter__(self) -> Iterator[Any]:
        while (item := self.get(timeout=30)) is not None:
            yield item


def drain_iter(q: IterQueue, out: Any) -> None:
    out.put(list(q))


def own_queue(n: int) -> list[Any]:
    """A worker that makes its own queue (the same line in every worker) and uses it."""
    q = multiprocessing.get_context().Queue()  # the line that makes it
    out = []
    for i in range(n):
        q.put(i)
        try:
            out.append(q.get(timeout=0.2))  # an item is there: at once, unless faulted
        except Exception as e:  # a fault of the test
            out.append(type(e).__name__)
    return out


def echo_pipe(conn: Any) -> None:
    while (x := conn.recv()) is not None:
        conn.send(x * 2)


def send_then_die(q: Any, items: list[Any]) -> None:
    for x in items:
        q.put(x)
    q.close()
    q.join_thread()
    os.kill(os.getpid(), signal.SIGKILL)


def killed_worker(h: Harness, timeout: float = 60.0) -> Any:
    """The adopted process that was killed by SIGKILL, once it is (bounded wait)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # the history's kill mark, not only the exit code: under load the fork server
        # loses exit statuses, which then read 255 (CPython gh-140867)
        killed = {m.pid for m in h.history.marks if m.kind == "kill"}
        for c in list(h.children):
            if c.adopted and (
                c.exitcode == -signal.SIGKILL or (c.pid in killed and not c.is_alive())
            ):
                return c
        alive = [c._process.sentinel for c in h.children if c.is_alive()]
        multiprocessing.connection.wait(alive, min(1.0, max(0.0, end - time.monotonic())))
    raise AssertionError(f"no adopted process was killed: {h.children}\n{h.history.events}")


def test_objects_stay_what_they_are(mpfault: Harness) -> None:
    ctx = mpfault.ctx
    with mpfault.instrument():
        q = ctx.Queue()
        jq = ctx.JoinableQueue()
        sq = ctx.SimpleQueue()
        assert type(q) is multiprocessing.queues.Queue
        assert isinstance(jq, multiprocessing.queues.JoinableQueue)
        assert isinstance(q._reader, multiprocessing.connection.Connection)
        q.put(1)
        assert q.get(timeout=10) == 1
        jq.put("a")
        assert jq.get(timeout=10) == "a"
        jq.task_done()
        jq.join()
        sq.put(b"x")
        assert sq.get() == b"x"
    ops = {(e.queue, e.op) for e in mpfault.history.events}
    line = test_objects_stay_what_they_are.__code__.co_firstlineno
    assert (f"Queue@tests/test_instrument.py:{line + 3}", "put") in ops
    assert (f"JoinableQueue@tests/test_instrument.py:{line + 4}", "task_done") in ops
    assert (f"SimpleQueue@tests/test_instrument.py:{line + 5}", "get") in ops
    # put_nowait -> put, get -> recv_bytes: each recorded once
    assert len(mpfault.history.ops("put", queue=f"Queue@tests/test_instrument.py:{line + 3}")) == 1
    mpfault.history.assert_no_loss()


def pipe_bindings(q: Any, sq: Any) -> list[bool]:
    """Whether the bound methods of their pipes that the queues keep are the plain
    functions (the patched descriptors' ``__wrapped__``)."""
    base = multiprocessing.connection._ConnectionBase.__dict__
    kept = [(q, "_send_bytes", "send_bytes"), (q, "_recv_bytes", "recv_bytes")]
    kept += [(q, "_poll", "poll"), (sq, "_poll", "poll")]
    return [getattr(o, a).__func__ is getattr(base[op], "__wrapped__", None) for o, a, op in kept]


def check_pipes_then_echo(q: Any, sq: Any) -> None:
    sq.put(pipe_bindings(q, sq))  # after a fork, or unpickled
    item = q.get(timeout=30)
    sq._writer.send(item)  # the queue's pipe used directly: its put


def test_a_queues_own_use_of_its_pipe_is_plain(mpfault: Harness) -> None:
    """The pipe methods a queue keeps bound (``_recv_bytes``...) are the plain ones, in
    the test process and in children under every start method: the queue's own use of
    its pipe skips the patched descriptor.  ``send``/``recv`` called on the pipe directly
    are still the queue's put/get, and nothing else is recorded."""
    ctx = mpfault.ctx
    with mpfault.instrument():
        q = ctx.Queue()
        sq = ctx.SimpleQueue()
        assert pipe_bindings(q, sq) == [True] * 4
        p = ctx.Process(target=check_pipes_then_echo, args=(q, sq))
        p.start()
        assert sq.get() == [True] * 4
        q.put("x")
        assert sq._reader.recv() == "x"
        p.join(30)
        assert p.exitcode == 0
    assert q._recv_bytes.__func__ is multiprocessing.connection._ConnectionBase.recv_bytes
    ops = {(e.queue.split("@")[0], e.op) for e in mpfault.history.events}
    ops.discard(("Queue", "cancel_join_thread"))  # at the end of the session
    assert ops == {(k, op) for k in ("Queue", "SimpleQueue") for op in ("put", "get")}
    mpfault.history.assert_no_loss()


def test_a_subclass_with_its_own_iter_keeps_working(mpfault: Harness) -> None:
    with mpfault.instrument():
        q = IterQueue(ctx=mpfault.ctx)
        out = mpfault.ctx.Queue()
        p = mpfault.ctx.Process(target=drain_iter, args=(q, out))
        p.start()
        for i in range(5):
            q.put(i)
        q.put(None)
        assert out.get(timeout=30) == [0, 1, 2, 3, 4]
        p.join(30)
        assert p.exitcode == 0
    names = {e.queue for e in mpfault.history.ops("get")}
    assert any(n.startswith("IterQueue@tests/test_instrument.py:") for n in names), names
    # the override and the base get it calls: one get per item, not two
    gets = [e for e in mpfault.history.ops("get") if e.queue.startswith("IterQueue@")]
    assert len(gets) == 6
    mpfault.history.assert_no_loss()
    mpfault.history.assert_no_duplicates()


def test_pool_map_is_recorded_with_no_false_loss(mpfault: Harness) -> None:
    with mpfault.instrument():
        pool = mpfault.ctx.Pool(2)
        assert pool.map(square, range(50), chunksize=1) == [x * x for x in range(50)]
        tasks, results = (_ins.shadow_of(q).name for q in (pool._inqueue, pool._outqueue))
        pool.close()
        pool.join()
    hist = mpfault.history
    assert tasks.startswith("SimpleQueue@multiprocessing/pool.py:")
    workers = {e.process for e in hist.ops("get", queue=tasks)}
    assert len(workers) == 2
    assert all("PoolWorker-" in w for w in workers)
    assert len(hist.ops("put", queue=tasks, process="MainProcess")) == 52  # and 2 sentinels
    assert len(hist.ops("get", queue=results, process="MainProcess")) == 51
    for q in (tasks, results):  # (the pool's change notifier keeps unread wake-ups)
        hist.assert_no_loss(q)
        hist.assert_no_duplicates(q)
    adopted = [c for c in mpfault.children if c.adopted]
    assert sorted(c.name for c in adopted) == sorted(workers)


def test_pool_worker_killed_after_taking_a_task(mpfault: Harness) -> None:
    with mpfault.instrument(faults={"*pool.py*": "got@*PoolWorker-*#2:kill(after)"}):
        pool = mpfault.ctx.Pool(2)
        res = pool.map_async(square, range(6), chunksize=1)
        dead = killed_worker(mpfault)
        with pytest.raises(multiprocessing.TimeoutError):
            res.get(timeout=0.5)  # gh-66587: the task died with the worker
    fate = dead.fate()
    how = "was killed by SIGKILL" if dead.exitcode != 255 else "exited with code 255"
    assert fate.startswith(f"{dead.name} (pid {dead.pid}) {how} right after get()")
    assert "SimpleQueue@multiprocessing/pool.py:" in fate
    fired = {k: n for k, n in mpfault.fired().items() if n}
    assert fired == {f"{dead.fate().split(chr(39))[1]}: got@*PoolWorker-*#2:kill(after)": 1}


def test_nothing_is_left_after_teardown(tmp_path: Any) -> None:
    h = Harness(start_method="fork", tmpdir=str(tmp_path), deadline=30)
    with h, h.instrument(faults={"*": "got@*PoolWorker-*#2:kill(after)"}):
        pool = h.ctx.Pool(2)
        pool.map_async(square, range(4), chunksize=1)
        killed_worker(h)
        pids = {c.pid for c in h.children}
    assert multiprocessing.active_children() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert os.listdir(tmp_path) == []
    del pool


def test_everything_is_restored(mpfault: Harness) -> None:
    queue_put = multiprocessing.queues.Queue.__dict__["put"]
    pipe = multiprocessing.connection.Pipe
    send = multiprocessing.connection._ConnectionBase.__dict__["send"]
    with mpfault.instrument():
        assert multiprocessing.queues.Queue.__dict__["put"] is not queue_put
        q = IterQueue(ctx=mpfault.ctx)
        assert "get" in IterQueue.__dict__
    assert multiprocessing.queues.Queue.__dict__["put"] is queue_put
    assert multiprocessing.connection.Pipe is pipe
    assert multiprocessing.connection._ConnectionBase.__dict__["send"] is send
    assert IterQueue.__dict__["get"].__module__ == __name__
    assert not hasattr(IterQueue.__dict__["get"], "__wrapped__")
    q.put(1)  # plain behaviour now
    assert q.get(timeout=10) == 1


def test_a_thread_that_outlives_the_test_keeps_its_queue(tmp_path: Any) -> None:
    got: list[Any] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def reader(q: Any) -> None:
        try:
            started.set()
            got.append(q.get(timeout=30))  # blocked across the end of the test
            got.append(q.get(timeout=30))
        except BaseException as e:  # pragma: no cover - the failure this test looks for
            errors.append(e)

    with Harness(start_method="fork", tmpdir=str(tmp_path)) as h, h.instrument():
        q = h.ctx.Queue()
        t = threading.Thread(target=reader, args=(q,))
        t.start()
        started.wait(10)
        q.put("during")
        while not got:
            t.join(0.01)
    q.put("after")  # the harness is closed, its log gone
    t.join(30)
    assert got == ["during", "after"]
    assert errors == []


def test_a_pipe_is_recorded_under_one_name(mpfault: Harness) -> None:
    with mpfault.instrument():
        a, b = mpfault.ctx.Pipe()
        p = mpfault.ctx.Process(target=echo_pipe, args=(b,))
        p.start()
        for i in range(3):
            a.send(i)
            assert a.poll(30)
            assert a.recv() == 2 * i
        a.send(None)
        p.join(30)
    evs = [e for e in mpfault.history.events if e.queue.startswith("Connection@")]
    assert {e.queue for e in evs} == {evs[0].queue}
    assert {e.op for e in evs} >= {"send", "recv", "poll"}
    assert {e.process for e in evs if e.op == "recv"} == {"MainProcess", p.name}


def test_the_same_line_in_two_processes_makes_two_queues(mpfault: Harness) -> None:
    # the 2nd get of each worker's own queue is empty: counted per queue, so both
    with mpfault.instrument(faults={"Queue@*test_instrument.py*": "get#2:empty"}):
        a = mpfault.spawn(own_queue, 3, name="w-a")
        b = mpfault.spawn(own_queue, 3, name="w-b")
        assert a.result(timeout=60) == [0, "Empty", 1]  # 1 waits in the queue
        assert b.result(timeout=60) == [0, "Empty", 1]
    names = {e.queue for e in mpfault.history.events if e.queue.startswith("Queue@")}
    assert len(names) == 2
    assert {n.rsplit(" in ", 1)[1] for n in names} == {"w-a", "w-b"}
    for n in names:
        mpfault.history.assert_no_duplicates(n)


def test_harness_queues_are_recorded_once(mpfault: Harness) -> None:
    with mpfault.instrument():
        q = mpfault.queue()
        q.put(1)
        assert q.get(timeout=10) == 1
    assert [e.queue for e in mpfault.history.events] == ["q1", "q1"]


def test_items_whose_repr_has_an_address_match(mpfault: Harness) -> None:
    with mpfault.instrument():
        q = mpfault.ctx.Queue()
        p = mpfault.ctx.Process(target=send_then_die, args=(q, [square, (1, square)]))
        p.start()
        assert q.get(timeout=30) is square
        assert q.get(timeout=30) == (1, square)
        p.join(30)
    mpfault.history.assert_no_loss()
    mpfault.history.assert_no_duplicates()


def count_gets(q: Any, n: int) -> list[Any]:
    import queue

    got = []
    while len(got) < n:
        try:
            got.append(q.get(timeout=0.01))  # polls: most of these gets end in Empty
        except queue.Empty:
            pass
    return got


def test_got_kills_after_the_third_item_whatever_the_polling(mpfault: Harness) -> None:
    q = mpfault.queue(faults=["got@poller#3:kill(after)"])
    c = mpfault.spawn(count_gets, q, 10, name="poller")
    for i in range(10):
        q.put(i)
    with pytest.raises(Exception, match="killed by SIGKILL"):
        c.result(timeout=60)
    got = [e.result for e in mpfault.history.ops("get", process="poller", outcome="ok")]
    assert got == ["0", "1", "2"]


CHILD_MODULES = """
import json, multiprocessing, sys
import mpfault

def child(q):
    q.put(sorted(sys.modules))

def loaded(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    mods = q.get(timeout=120)
    p.join(60)
    return set(mods)

if __name__ == "__main__":
    method = sys.argv[1]
    ctx = multiprocessing.get_context(method)
    plain = loaded(ctx)
    with mpfault.Harness(start_method=method, instrument=True, deadline=60):
        instrumented = loaded(ctx)
    print(json.dumps(sorted(instrumented - plain)))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_an_instrumented_child_loads_only_the_runtime(tmp_path: Any, method: str) -> None:
    """What a spawned child of an instrumented test imports beyond a plain one is the
    runtime itself: no hashlib, sysconfig, multiprocessing.pool, stack formatting
    (~15 ms a child together, each child of a test pays it)."""
    script = tmp_path / "child_modules.py"
    script.write_text(CHILD_MODULES)
    out = subprocess.run(
        [sys.executable, str(script), method],
        capture_output=True,
        text=True,
        timeout=300,
        # not measured: coverage's multiprocessing support would load modules of its own
        env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    extra = set(json.loads(out.stdout.splitlines()[-1]))
    runtime = {"mpfault._runtime", "mpfault._runtime._fastrec", "mpfault._runtime.events"}
    runtime |= {"mpfault._runtime.fqueue", "mpfault._runtime.instrument"}
    runtime |= {"mpfault._runtime.layout", "mpfault._runtime.state", "mmap"}
    assert extra - runtime == set(), sorted(extra - runtime)
    assert "mpfault._runtime.instrument" in extra  # the child was instrumented
