"""The harness, used through the `mpfault` fixture under every start method."""

from __future__ import annotations

import os
import pathlib
import queue
import signal
import sys

import pytest

from mpfault import Child, ChildError, FaultQueue, Hang, Harness, MpfaultError, SpawnError


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def boom(msg: str) -> None:
    raise ValueError(msg)


def kill_self(sig: int) -> None:
    os.kill(os.getpid(), sig)


def exit_with(code: int) -> None:
    os._exit(code)


def blocked_get(ready: FaultQueue, q: FaultQueue) -> object:
    ready.put("ready")
    return q.get()  # the line a Hang must point at


def start_blocked(h: Harness) -> tuple[Child, FaultQueue]:
    """A child blocked in get(); returns once it has reported it is about to block."""
    ready, q = h.queue(), h.queue()
    c = h.spawn(blocked_get, ready, q)
    assert ready.get(timeout=60) == "ready"
    return c, q


def hang_in_get(c: Child) -> Hang:
    """The Hang of ``c.result()`` once ``c`` is inside ``q.get()``."""
    from procs import hang_showing

    e = hang_showing(c, "return q.get()")
    assert isinstance(e, Hang)
    return e


def get_one(q: FaultQueue) -> object:
    return q.get(timeout=30)


def talk(text: str) -> str:
    print(f"out:{text}")
    print(f"err:{text}", file=sys.stderr)
    return text


def producer(q: FaultQueue, n: int) -> int:
    for i in range(n):
        q.put(i)
    q.put(None)
    return n


def consumer(q: FaultQueue) -> list[object]:
    got = []
    while True:
        item = q.get()
        if item is None:
            return got
        got.append(item)


def whoami() -> tuple[str, int, int]:
    import multiprocessing

    return multiprocessing.current_process().name, os.getpid(), os.getpgid(0)


def test_result_and_kwargs(mpfault: Harness) -> None:
    c = mpfault.spawn(add, 2, 3, scale=10)
    assert c.result(timeout=60) == 50
    assert c.join(timeout=60) == 0
    assert c.exitcode == 0
    assert mpfault.ctx.get_start_method() == mpfault.start_method


def test_child_names_and_process_groups(mpfault: Harness) -> None:
    a = mpfault.spawn(whoami)
    b = mpfault.spawn(whoami, name="worker")
    name_a, pid_a, pgid_a = a.result(timeout=60)
    name_b, pid_b, pgid_b = b.result(timeout=60)
    assert (name_a, name_b) == ("whoami-1", "worker")
    assert (pid_a, pid_b) == (a.pid, b.pid)
    # each child leads its own group, so teardown can kill its descendants
    assert (pgid_a, pgid_b) == (pid_a, pid_b)
    with pytest.raises(MpfaultError, match="already exists"):
        mpfault.spawn(whoami, name="worker")


def test_child_exception_carries_its_traceback(mpfault: Harness) -> None:
    c = mpfault.spawn(boom, "bad things")
    with pytest.raises(ChildError) as info:
        c.result(timeout=60)
    err = info.value
    assert err.exc_type == "ValueError"
    assert err.exc_message == "bad things"
    assert err.child_traceback is not None
    assert "raise ValueError(msg)" in err.child_traceback
    assert "in boom" in str(err)
    assert isinstance(err.exception, ValueError)
    assert c.join(timeout=60) == 1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_child_killed_by_a_signal(mpfault: Harness, sig: int) -> None:
    c = mpfault.spawn(kill_self, sig)
    with pytest.raises(ChildError, match=f"was killed by {signal.Signals(sig).name}") as info:
        c.result(timeout=60)
    assert info.value.signal == signal.Signals(sig).name
    assert info.value.exitcode == -sig


def test_child_os_exit(mpfault: Harness) -> None:
    c = mpfault.spawn(exit_with, 7)
    with pytest.raises(ChildError, match="exited with code 7 before returning a result"):
        c.result(timeout=60)
    c = mpfault.spawn(exit_with, 255)
    with pytest.raises(ChildError, match="exited with code 255") as info:
        c.result(timeout=60)
    # under forkserver 255 is also what a lost exit status reads: the message says so
    lost = "the fork server lost the child's exit status" in str(info.value)
    assert lost is (mpfault.start_method == "forkserver")


def test_hang_shows_the_blocked_line(mpfault: Harness) -> None:
    c, _ = start_blocked(mpfault)
    hang = hang_in_get(c)
    msg = str(hang)
    assert "result(timeout=0.5) of child 'blocked_get-1'" in msg
    assert "return q.get()  # the line a Hang must point at" in msg
    assert c.name in next(iter(hang.stacks))
    assert c.is_alive()


def test_join_timeout_is_a_hang(mpfault: Harness) -> None:
    c, _ = start_blocked(mpfault)
    with pytest.raises(Hang, match=r"join\(timeout=0.2\) of child 'blocked_get-1'"):
        c.join(timeout=0.2)


def test_stack_of_a_paused_child(mpfault: Harness) -> None:
    c, q = start_blocked(mpfault)
    hang_in_get(c)
    assert "return q.get()" in c.stack()
    c.pause()
    assert "stopped by SIGSTOP" in c.stack()
    c.resume()
    q.put("x")
    assert c.result(timeout=60) == "x"


def test_output_is_captured_per_child(mpfault: Harness) -> None:
    c = mpfault.spawn(talk, "hello")
    assert c.result(timeout=60) == "hello"
    c.join(timeout=60)
    out, err = c.output()
    assert out == "out:hello\n"
    assert err == "err:hello\n"


def test_producer_consumer(mpfault: Harness) -> None:
    q = mpfault.queue()
    cons = mpfault.spawn(consumer, q)
    prod = mpfault.spawn(producer, q, 10)
    assert prod.result(timeout=60) == 10
    assert cons.result(timeout=60) == list(range(10))
    h = mpfault.history
    assert h.put_items() == [*map(str, range(10)), "None"]
    assert sorted(h.got_items(), key=lambda s: (s == "None", s)) == sorted(
        h.put_items(), key=lambda s: (s == "None", s)
    )
    h.assert_no_loss()
    h.assert_no_duplicates()
    h.assert_fifo_per_producer()


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue", "ManagerQueue"])
def test_queue_kinds(mpfault: Harness, kind: str) -> None:
    q = mpfault.queue(kind=kind)
    cons = mpfault.spawn(consumer, q)
    prod = mpfault.spawn(producer, q, 3)
    assert prod.result(timeout=60) == 3
    assert cons.result(timeout=60) == [0, 1, 2]
    assert not hasattr(q, "qsize") if kind == "SimpleQueue" else hasattr(q, "qsize")


def test_queue_behaves_like_the_wrapped_one(mpfault: Harness) -> None:
    q = mpfault.queue(maxsize=1)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put_nowait(2)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.01)
    assert q.get(timeout=10) == 1
    with pytest.raises(queue.Empty):
        q.get_nowait()
    events = mpfault.history.ops(queue=q.name)
    assert [(e.op, e.outcome, e.exc) for e in events] == [
        ("put", "ok", None),
        ("put_nowait", "raised", "Full"),
        ("put", "raised", "Full"),
        ("get", "ok", None),
        ("get_nowait", "raised", "Empty"),
    ]


def local_targets_fail_at_once() -> None:
    pass


def test_unpicklable_targets_fail_at_once(mpfault: Harness) -> None:
    def inner() -> None:
        pass

    if mpfault.start_method == "fork":
        assert mpfault.spawn(inner).result(timeout=60) is None
        return
    with pytest.raises(SpawnError, match="defined inside a function"):
        mpfault.spawn(inner)
    with pytest.raises(SpawnError, match="lambda"):
        mpfault.spawn(lambda: None)
    with pytest.raises(SpawnError, match="could not start"):
        mpfault.spawn(add, 1, lambda: 2)


def test_harness_without_pytest() -> None:
    with Harness(start_method="fork", deadline=30) as h:
        q = h.queue()
        c = h.spawn(producer, q, 2)
        assert [q.get(timeout=10) for _ in range(3)] == [0, 1, None]
        assert c.result(timeout=10) == 2
        run_dir = h.run_dir
    assert not os.path.exists(run_dir)
    with pytest.raises(MpfaultError, match="closed"):
        h.queue()


def test_teardown_kills_children_and_descendants() -> None:
    from procs import wait_gone

    with Harness(start_method="fork", deadline=30, grace=0.2) as h:
        q = h.queue()
        c = h.spawn(spawn_grandchild_then_block, q)
        grandchild = q.get(timeout=30)
        pids = [c.pid, grandchild]
    assert wait_gone(pids, 10) == []


def ignore_term_and_block(q: FaultQueue) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    q.put(os.getpid())
    q.get()


def spawn_grandchild_then_block(q: FaultQueue) -> None:
    import multiprocessing

    p = multiprocessing.get_context("fork").Process(target=ignore_term_and_block, args=(q,))
    p.start()
    q.get()


def test_no_deadline_and_no_timeout_waits_until_done() -> None:
    with Harness(start_method="fork", deadline=None) as h:
        assert h.spawn(add, 1, 2).result() == 3
        g = h.gate("put", who="producer-*")
        q = h.queue(faults=[g])
        c = h.spawn(producer, q, 1)
        assert g.wait_reached().process == c.name
        g.release()
        assert c.result() == 1


@pytest.mark.mpfault(start_methods=["fork"])
def test_items_whose_repr_fails_are_still_recorded(mpfault: Harness) -> None:
    q = mpfault.queue()
    huge = 10**5000  # beyond the int-to-str digit limit
    q.put(huge)
    assert q.get(timeout=10) == huge
    (put,) = mpfault.history.ops("put")
    assert put.item is not None
    assert put.item.startswith("<int of ")
    mpfault.history.assert_no_loss()


def test_run_files_go_to_the_directory_given(tmp_path: pathlib.Path) -> None:
    """``Harness(tmpdir=...)`` holds the run directory (history logs of every process
    included); close() removes it; a bad directory is an error naming the argument,
    and a plan refused at creation leaves no directory behind."""
    with Harness("fork", tmpdir=str(tmp_path)) as h:
        assert os.path.dirname(h.run_dir) == str(tmp_path)
        q = h.queue()
        assert h.spawn(producer, q, 1).result(timeout=30) == 1
        assert [q.get(timeout=30) for _ in range(2)] == [0, None]
        assert len(os.listdir(os.path.join(h.run_dir, "events"))) == 2  # child and test
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MpfaultError, match=r"'/nonexistent/x' from Harness\(tmpdir=...\)"):
        Harness("fork", tmpdir="/nonexistent/x")
    with pytest.raises(MpfaultError, match="the test process itself"):
        Harness("fork", tmpdir=str(tmp_path), faults=["put@MainProcess:kill"])
    assert list(tmp_path.iterdir()) == []


def test_default_run_files_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$MPFAULT_TMPDIR, checked; else the system's temporary directory (None)."""
    from mpfault import _harness

    monkeypatch.delenv("MPFAULT_TMPDIR", raising=False)
    assert _harness.default_tmpdir() is None
    monkeypatch.setenv("MPFAULT_TMPDIR", str(tmp_path))
    assert _harness.default_tmpdir() == str(tmp_path)
    with Harness("fork") as h:
        assert os.path.dirname(h.run_dir) == str(tmp_path)
    monkeypatch.setenv("MPFAULT_TMPDIR", str(tmp_path / "none"))
    with pytest.raises(MpfaultError, match="from env MPFAULT_TMPDIR is not a directory"):
        Harness("fork")


def test_history_reads_again_what_changed_and_only_that(mpfault: Harness) -> None:
    q = mpfault.queue()
    q.put(1)
    first = mpfault.history
    assert [e.item for e in first.ops("put")] == ["1"]
    again = mpfault.history  # nothing changed: the logs are not parsed again
    assert again.events == first.events
    assert again.events[0] is first.events[0]
    q.put(2)  # a log that changed is read again
    assert [e.item for e in mpfault.history.ops("put")] == ["1", "2"]
    mpfault.spawn(get_one, q).result(timeout=60)  # and a new process's log
    assert [e.result for e in mpfault.history.ops("get", outcome="ok")] == ["1"]
