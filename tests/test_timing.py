"""Tests of mpfault._timing: expect_timeout / expect_immediate."""

from __future__ import annotations

import math
import multiprocessing
import queue
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mpfault import _timing
from mpfault._timing import (
    TimingError,
    expect_immediate,
    expect_timeout,
    get_default_tolerance,
    set_default_tolerance,
)


@pytest.fixture(autouse=True)
def _restore_tolerance() -> Iterator[None]:
    before = get_default_tolerance()
    yield
    set_default_tolerance(before)


@pytest.fixture
def q() -> Iterator[multiprocessing.queues.Queue[object]]:
    q: multiprocessing.queues.Queue[object] = multiprocessing.get_context("spawn").Queue(1)
    yield q
    q.cancel_join_thread()
    q.close()


def test_get_timeout_on_empty_queue_passes(q: multiprocessing.queues.Queue[object]) -> None:
    with expect_timeout(0.05, raises=queue.Empty) as t:
        q.get(timeout=0.05)
    assert t.elapsed >= 0.049
    assert t.overshoot == pytest.approx(t.elapsed - 0.05)
    assert isinstance(t.exception, queue.Empty)


def test_put_timeout_on_full_queue_passes(q: multiprocessing.queues.Queue[object]) -> None:
    q.put("a")
    with expect_timeout(0.05, raises=queue.Full) as t:
        q.put("b", timeout=0.05)
    assert t.elapsed >= 0.049


def test_attributes_are_nan_before_the_block_ends() -> None:
    t = expect_timeout(0.1, raises=queue.Empty)
    assert math.isnan(t.elapsed)
    assert math.isnan(t.overshoot)


def test_no_exception_fails() -> None:
    with (
        pytest.raises(TimingError, match=r"expected queue\.Empty after 0\.1 s .*no exception"),
        expect_timeout(0.1, raises=queue.Empty),
    ):
        pass


def test_early_return_fails_with_observed_time() -> None:
    with (
        pytest.raises(TimingError, match=r"observed queue\.Empty after 0\.0\d+ s, 0\.\d+ s early"),
        expect_timeout(0.2, raises=queue.Empty),
    ):
        raise queue.Empty
    # The same within the clock slack passes.
    with expect_timeout(0.0005, raises=queue.Empty):
        raise queue.Empty


def test_overshoot_beyond_tolerance_fails(q: multiprocessing.queues.Queue[object]) -> None:
    with (
        pytest.raises(TimingError, match=r"overshoot \d+\.\d+ s exceeds the tolerance of 0 s") as e,
        expect_timeout(0.01, raises=queue.Empty, tolerance=0.0),
    ):
        q.get(timeout=0.05)
    assert e.value.elapsed >= 0.049
    assert e.value.expected == 0.01


def test_default_tolerance_is_used_and_settable(q: multiprocessing.queues.Queue[object]) -> None:
    assert _timing.DEFAULT_TOLERANCE == 1.0  # the ini key may have changed the current one
    set_default_tolerance(0.0)
    assert expect_timeout(1.0, raises=queue.Empty).tolerance == 0.0
    with (
        pytest.raises(TimingError, match="tolerance of 0 s"),
        expect_timeout(0.01, raises=queue.Empty),
    ):
        q.get(timeout=0.05)
    assert expect_timeout(1.0, raises=queue.Empty, tolerance=2.5).tolerance == 2.5


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "soon"])
def test_set_default_tolerance_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout tolerance"):
        set_default_tolerance(bad)  # type: ignore[arg-type]


def test_wrong_exception_fails_and_chains() -> None:
    with (
        pytest.raises(
            TimingError, match=r"expected queue\.Full .*observed ValueError\('boom'\)"
        ) as e,
        expect_timeout(0.1, raises=queue.Full),
    ):
        raise ValueError("boom")
    assert isinstance(e.value.__cause__, ValueError)


def test_tuple_of_exceptions() -> None:
    with expect_timeout(0.0, raises=(queue.Empty, queue.Full)):
        raise queue.Full


def test_base_exceptions_propagate_unchanged() -> None:
    with pytest.raises(KeyboardInterrupt), expect_timeout(0.1, raises=queue.Empty):
        raise KeyboardInterrupt


def test_expect_immediate(q: multiprocessing.queues.Queue[object]) -> None:
    # A generous limit: this checks the outcome; the limit itself is tested below.
    with expect_immediate(raises=queue.Empty, limit=1.0) as t:
        q.get_nowait()
    assert t.elapsed < 1.0
    with expect_immediate(raises=None, limit=1.0):
        q.put_nowait("a")
    with expect_immediate(raises=queue.Full, limit=1.0):
        q.put("b", False, 5.0)


def test_expect_immediate_failures(q: multiprocessing.queues.Queue[object]) -> None:
    with (
        pytest.raises(
            TimingError, match=r"queue\.Empty within 0\.01 s; observed queue\.Empty after"
        ),
        expect_immediate(raises=queue.Empty, limit=0.01),
    ):
        q.get(timeout=0.05)
    with (
        pytest.raises(TimingError, match="observed no exception"),
        expect_immediate(raises=queue.Empty),
    ):
        pass
    with (
        pytest.raises(TimingError, match=r"expected a return within 0\.05 s; observed queue\.Full"),
        expect_immediate(raises=None),
    ):
        raise queue.Full
    with pytest.raises(ValueError, match="limit"):
        expect_immediate(raises=None, limit=0)


def test_failures_point_at_the_test_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import queue
        from mpfault._timing import expect_timeout

        def test_it():
            with expect_timeout(0.2, raises=queue.Empty):
                raise queue.Empty
        """
    )
    result = pytester.runpytest("-p", "no:mpfault", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*with expect_timeout(0.2, raises=queue.Empty):*", "*early*"])
    result.stdout.no_fnmatch_line("*_timing.py*")


def test_module_does_not_import_pytest() -> None:
    code = "import sys, mpfault._timing; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
