"""Timing assertions for blocking and non-blocking queue calls.

``expect_timeout`` checks that a call with a timeout raised the expected exception
no earlier than the timeout (minus a small clock slack) and no later than the
timeout plus a tolerance::

    with mpfault.expect_timeout(0.2, raises=queue.Empty) as t:
        q.get(timeout=0.2)
    print(t.elapsed, t.overshoot)

``expect_immediate`` checks that a non-blocking call (``put_nowait``, ``get(False)``
...) raised, or returned, within a small limit.  Both raise :class:`TimingError`, an
``AssertionError``, whose message states what was expected and what was observed.
The frames of this module are hidden from pytest tracebacks, so a failure points at
the test line.

The default tolerance is generous (1.0 s) because CI machines are noisy; the pytest
plugin sets it from the ini key ``mpfault_timeout_tolerance`` through
:func:`set_default_tolerance`.  This module does not import pytest.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Final

from ._runtime.errors import TimingError

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_SLACK",
    "DEFAULT_TOLERANCE",
    "ExpectImmediate",
    "ExpectTimeout",
    "TimingError",
    "expect_immediate",
    "expect_timeout",
    "get_default_tolerance",
    "set_default_tolerance",
]

#: Default seconds a timeout may overshoot before :func:`expect_timeout` fails.
DEFAULT_TOLERANCE: Final = 1.0
#: Default seconds a timeout may return early (clock granularity) before it fails.
DEFAULT_SLACK: Final = 0.001
#: Default seconds within which :func:`expect_immediate` wants the call to finish.
DEFAULT_LIMIT: Final = 0.05

_default_tolerance: float = DEFAULT_TOLERANCE

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def _check_seconds(value: float, what: str, *, positive: bool = False) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "positive" if positive else "non-negative"
        raise ValueError(f"{what} must be a finite {bound} number of seconds, got {value!r}")
    return seconds


def set_default_tolerance(seconds: float) -> None:
    """Set the overshoot tolerance :func:`expect_timeout` uses when none is given.

    The pytest plugin calls this with the ini value ``mpfault_timeout_tolerance``.

    Raises:
        ValueError: if *seconds* is not a finite, non-negative number.
    """
    global _default_tolerance
    _default_tolerance = _check_seconds(seconds, "timeout tolerance")


def get_default_tolerance() -> float:
    """Return the overshoot tolerance used when :func:`expect_timeout` is given none."""
    return _default_tolerance


def _name(types: ExceptionTypes | None) -> str:
    if types is None:
        return "no exception"
    if isinstance(types, tuple):
        return " or ".join(_name(t) for t in types)
    module = types.__module__
    if module in ("builtins", "_queue"):
        module = "queue" if module == "_queue" else ""
    return f"{module}.{types.__qualname__}" if module else types.__qualname__


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{_name(type(exc))}({text!r})" if text else _name(type(exc))


class ExpectTimeout:
    """Context manager returned by :func:`expect_timeout`.

    Attributes:
        timeout: the expected timeout in seconds.
        raises: the expected exception type(s).
        tolerance: seconds of overshoot allowed.
        slack: seconds the call may return before the timeout (clock granularity).
        elapsed: seconds the block took; ``nan`` until the block has finished.
        overshoot: ``elapsed - timeout`` (negative when early); ``nan`` until finished.
        exception: the exception the block raised, or ``None``.
    """

    def __init__(
        self, timeout: float, raises: ExceptionTypes, tolerance: float, slack: float
    ) -> None:
        self.timeout = timeout
        self.raises = raises
        self.tolerance = tolerance
        self.slack = slack
        self.elapsed = math.nan
        self.overshoot = math.nan
        self.exception: BaseException | None = None
        self._start = 0.0

    def __enter__(self) -> ExpectTimeout:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        __tracebackhide__ = True
        self.elapsed = time.perf_counter() - self._start
        self.overshoot = self.elapsed - self.timeout
        self.exception = exc
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, pytest outcomes, SystemExit: not ours
        window = (
            f"between {max(self.timeout - self.slack, 0.0):.4f} s and "
            f"{self.timeout + self.tolerance:.4f} s"
        )
        wanted = f"{_name(self.raises)} after {self.timeout:g} s ({window})"
        if exc is None:
            raise TimingError(
                f"expected {wanted}; observed no exception, the block returned "
                f"after {self.elapsed:.4f} s",
                elapsed=self.elapsed,
                expected=self.timeout,
            )
        if not isinstance(exc, self.raises):
            raise TimingError(
                f"expected {wanted}; observed {_describe(exc)} after {self.elapsed:.4f} s",
                elapsed=self.elapsed,
                expected=self.timeout,
                exception=exc,
            ) from exc
        if self.elapsed < self.timeout - self.slack:
            raise TimingError(
                f"expected {wanted}; observed {_name(type(exc))} after {self.elapsed:.4f} s, "
                f"{self.timeout - self.elapsed:.4f} s early",
                elapsed=self.elapsed,
                expected=self.timeout,
                exception=exc,
            ) from exc
        if self.overshoot > self.tolerance:
            raise TimingError(
                f"expected {wanted}; observed {_name(type(exc))} after {self.elapsed:.4f} s, "
                f"overshoot {self.overshoot:.4f} s exceeds the tolerance of "
                f"{self.tolerance:g} s",
                elapsed=self.elapsed,
                expected=self.timeout,
                exception=exc,
            ) from exc
        exc.__traceback__ = None  # suppressed: keep the exception, not its frames
        return True


class ExpectImmediate:
    """Context manager returned by :func:`expect_immediate`.

    Attributes:
        limit: seconds within which the block must finish.
        raises: the expected exception type(s), or ``None`` for a normal return.
        elapsed: seconds the block took; ``nan`` until the block has finished.
        overshoot: ``elapsed - limit`` (negative when within the limit).
        exception: the exception the block raised, or ``None``.
    """

    def __init__(self, raises: ExceptionTypes | None, limit: float) -> None:
        self.raises = raises
        self.limit = limit
        self.elapsed = math.nan
        self.overshoot = math.nan
        self.exception: BaseException | None = None
        self._start = 0.0

    def __enter__(self) -> ExpectImmediate:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        __tracebackhide__ = True
        self.elapsed = time.perf_counter() - self._start
        self.overshoot = self.elapsed - self.limit
        self.exception = exc
        if exc is not None and not isinstance(exc, Exception):
            return False
        wanted = f"{_name(self.raises)} within {self.limit:g} s"
        if self.raises is None:
            if exc is not None:
                raise TimingError(
                    f"expected a return within {self.limit:g} s; observed {_describe(exc)} "
                    f"after {self.elapsed:.4f} s",
                    elapsed=self.elapsed,
                    expected=self.limit,
                    exception=exc,
                ) from exc
        elif exc is None:
            raise TimingError(
                f"expected {wanted}; observed no exception, the block returned "
                f"after {self.elapsed:.4f} s",
                elapsed=self.elapsed,
                expected=self.limit,
            )
        elif not isinstance(exc, self.raises):
            raise TimingError(
                f"expected {wanted}; observed {_describe(exc)} after {self.elapsed:.4f} s",
                elapsed=self.elapsed,
                expected=self.limit,
                exception=exc,
            ) from exc
        if self.elapsed > self.limit:
            observed = "a return" if exc is None else _name(type(exc))
            raise TimingError(
                f"expected {wanted}; observed {observed} after {self.elapsed:.4f} s, "
                f"{self.elapsed - self.limit:.4f} s over the limit",
                elapsed=self.elapsed,
                expected=self.limit,
                exception=exc,
            ) from exc
        if exc is not None:
            exc.__traceback__ = None  # suppressed: keep the exception, not its frames
        return exc is not None


def expect_timeout(
    seconds: float,
    *,
    raises: ExceptionTypes,
    tolerance: float | None = None,
    slack: float = DEFAULT_SLACK,
) -> ExpectTimeout:
    """Assert that the block raises *raises* after about *seconds*.

    The block passes when it raises an instance of *raises* after at least
    ``seconds - slack`` and at most ``seconds + tolerance`` seconds; the exception is
    then suppressed.  Otherwise :class:`TimingError` is raised: when the block returns
    without raising, raises another exception (chained as the cause), returns early,
    or overshoots.  ``BaseException`` subclasses that are not ``Exception`` (for
    example ``KeyboardInterrupt``) propagate unchanged.

    Args:
        seconds: the timeout passed to the call under test.
        raises: the exception type, or a tuple of types, the call must raise
            (``queue.Empty`` for ``get``, ``queue.Full`` for ``put``).
        tolerance: seconds of overshoot allowed; defaults to
            :func:`get_default_tolerance` (1.0 s unless configured).
        slack: seconds the call may return before *seconds* (clock granularity;
            use about 0.02 on macOS and Windows).

    Returns:
        An :class:`ExpectTimeout` whose ``elapsed`` and ``overshoot`` are set when the
        block ends.

    Example:
        >>> import multiprocessing, queue
        >>> q = multiprocessing.Queue()
        >>> with expect_timeout(0.05, raises=queue.Empty) as t:
        ...     q.get(timeout=0.05)
        >>> t.elapsed >= 0.049
        True
    """
    seconds = _check_seconds(seconds, "timeout")
    tol = _default_tolerance if tolerance is None else _check_seconds(tolerance, "tolerance")
    return ExpectTimeout(seconds, raises, tol, _check_seconds(slack, "slack"))


def expect_immediate(
    *, raises: ExceptionTypes | None, limit: float = DEFAULT_LIMIT
) -> ExpectImmediate:
    """Assert that the block raises *raises* (or returns, if ``None``) within *limit*.

    Use it for the non-blocking forms (``put_nowait``, ``get(False)``,
    ``put(x, False, timeout)``...).  The expected exception is suppressed; anything
    else, or taking longer than *limit*, raises :class:`TimingError`.

    Args:
        raises: the exception type(s) expected, or ``None`` when the block must
            return normally.
        limit: seconds within which the block must finish.

    Returns:
        An :class:`ExpectImmediate` whose ``elapsed`` is set when the block ends.

    Example:
        >>> import multiprocessing, queue
        >>> q = multiprocessing.Queue()
        >>> with expect_immediate(raises=queue.Empty):
        ...     q.get_nowait()
    """
    return ExpectImmediate(raises, _check_seconds(limit, "limit", positive=True))
