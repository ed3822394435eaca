"""Instrumentation's hot path: the patched methods in C (``_fastrec.Method``) and the
pure-Python ones they stand for (no C module, or ``MPFAULT_PURE_PYTHON=1``) behave alike."""

from __future__ import annotations

import inspect
import multiprocessing
import multiprocessing.connection
import multiprocessing.queues
import threading
from pathlib import Path
from typing import Any

import pytest

from mpfault import Harness
from mpfault._runtime import events
from mpfault._runtime import instrument as _ins

needs_c = pytest.mark.skipif(_ins._C is None, reason="the C module is not used here")

#: the tests of tests/test_instrument.py run again in pure Python (fork only: the
#: start methods are the same code there)
PURE_SUBSET = (
    "objects_stay or subclass_with_its_own_iter or pool_map_is_recorded or restored or "
    "outlives or pipe_is_recorded or harness_queues or address_match or got_kills or "
    "own_use_of_its_pipe"
)


def test_instrumentation_in_pure_python(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MPFAULT_PURE_PYTHON set the patched methods are Python functions, and the
    instrumentation tests pass with them."""
    monkeypatch.setenv(events.PURE_ENV, "1")
    tests = pytester.mkdir("tests")
    text = Path(__file__).with_name("test_instrument.py").read_text(encoding="utf-8")
    check = (
        "\n\ndef test_the_methods_are_python() -> None:\n"
        "    import types\n"
        "    from mpfault._runtime import events\n"
        "    assert events._fastrec is None and _ins._C is None\n"
        "    with Harness(start_method='fork', deadline=None, instrument=True):\n"
        "        put = multiprocessing.queues.SimpleQueue.__dict__['put']\n"
        "        send = multiprocessing.connection._ConnectionBase.__dict__['send']\n"
        "        assert isinstance(put, types.FunctionType) and put.__wrapped__ is not None\n"
        "        assert isinstance(send, types.FunctionType)\n"
    )
    (tests / "test_instrument.py").write_text(text + check, encoding="utf-8")
    res = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--mpfault-start-methods=fork",
        "-k",
        f"{PURE_SUBSET} or methods_are_python",
        "tests/test_instrument.py",
    )
    res.assert_outcomes(passed=11)


@needs_c
def test_the_patched_methods_are_c_descriptors(mpfault: Harness) -> None:
    """Where the C module is there, the classes get ``_fastrec.Method``s: bound like
    functions, named and documented like the originals, showing their signature."""
    orig_put = multiprocessing.queues.SimpleQueue.__dict__["put"]
    orig_send = multiprocessing.connection._ConnectionBase.__dict__["send"]
    with mpfault.instrument():
        put = multiprocessing.queues.SimpleQueue.__dict__["put"]
        send = multiprocessing.connection._ConnectionBase.__dict__["send"]
        assert type(put) is type(send) is _ins._C.Method
        assert put.__wrapped__ is orig_put
        assert send.__wrapped__ is orig_send
        assert (put.__name__, put.__qualname__, put.__doc__) == (
            "put",
            orig_put.__qualname__,
            orig_put.__doc__,
        )
        assert "SimpleQueue.put" in repr(put)
        q = mpfault.ctx.SimpleQueue()
        assert inspect.signature(q.put) == inspect.signature(orig_put.__get__(q))
        bound = q.put
        assert bound.__self__ is q
        assert bound.__func__ is put
        assert multiprocessing.queues.SimpleQueue.put is put  # from the class: itself
        bound(1)
        assert multiprocessing.queues.SimpleQueue.get(q) == 1  # called unbound
        q.put(2)
        assert q.get() == 2
    assert _ins.shadow_of(q) is None  # the session is over
    hist = mpfault.history
    assert [e.op for e in hist.events if e.queue.startswith("SimpleQueue@")] == [
        "put",
        "get",
        "put",
        "get",
    ]
    hist.assert_no_loss()


@needs_c
def test_the_c_methods_count_calls_in_flight(tmp_path: Any) -> None:
    """A recorded call blocked when the test ends keeps the log open; the log closes
    when it returns (the C count of calls in flight, and on_idle)."""
    entered = threading.Event()
    results: list[Any] = []

    def reader(q: Any) -> None:
        entered.set()
        results.append(q.get())  # recorded, blocked across the end of the session

    with Harness(start_method="fork", tmpdir=str(tmp_path), deadline=None) as h:
        with h.instrument():
            q = h.ctx.SimpleQueue()
            q.put(0)  # this process's log and the queue's operations are made
            assert q.get() == 0
            t = threading.Thread(target=reader, args=(q,))
            t.start()
            entered.wait(10)
            while _ins._C.inflight() == 0:  # the get has begun
                t.join(0.001)
            assert _ins._C.inflight() == 1
        assert _ins._PENDING  # the session ended with the get in flight: its log stays open
        q.put("late")  # plain now: the class is restored
        t.join(30)
        assert results == ["late"]
        assert _ins._C.inflight() == 0
        assert not _ins._PENDING  # closed by on_idle when the get returned
        # the get began while recording and ended as it began: recorded, with its item
        assert [(e.op, e.value) for e in h.history.events] == [
            ("put", "0"),
            ("get", "0"),
            ("get", "'late'"),
        ]


@needs_c
def test_a_c_method_outside_a_session_is_the_original(tmp_path: Any) -> None:
    """A bound method kept from a session (``pool._quick_put``) behaves plainly after it,
    and a queue made outside a session is never recorded."""
    with Harness(start_method="fork", tmpdir=str(tmp_path), deadline=None) as h:
        before = h.ctx.SimpleQueue()
        with h.instrument():
            q = h.ctx.SimpleQueue()
            put, get = q.put, q.get
            before.put(0)
            assert before.get() == 0
            put(1)
            assert get() == 1
        put(2)
        assert get() == 2
        ops = [e.op for e in h.history.events]
    assert ops == ["put", "get"]
