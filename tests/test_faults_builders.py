"""The Python constructors of faults (mpfault._runtime.builders) and their validation;
no processes."""

from __future__ import annotations

import json
import math
import queue
import signal
import socket
from collections.abc import Callable

import pytest

from faultcheck import roundtrip
from mpfault._runtime.builders import (
    chain,
    delay,
    drop,
    duplicate,
    empty,
    exit,
    full,
    gate,
    kill,
    off,
    pause,
    raise_,
    return_,
)
from mpfault._runtime.errors import FaultSpecError
from mpfault._runtime.grammar import parse
from mpfault._runtime.model import Fault

# -- constructors ---------------------------------------------------------------------------


def test_chain() -> None:
    fault = chain(delay(0.01, op="put", who="p-*", nth=[(2, None)], times=2), full(prob=0.5))
    assert str(fault) == "put@p-*#2..:2*delay(10ms)->50%full"
    assert chain(chain(off(times=1), drop(times=1)), full()) == parse("1*off->1*drop->full")[0]
    assert chain(drop()) == drop()
    # a later term may repeat the first term's op (return_ needs one)
    lie = chain(off(op="empty", times=2), return_(True, op="empty"))
    assert str(lie) == "empty:2*off->return(True)"
    assert lie.next is not None
    assert lie.next.op is None


def test_raise_stores_module_and_qualname() -> None:
    assert raise_(ValueError).args == ("builtins", "ValueError", "")
    assert raise_(queue.Empty).args == ("queue", "Empty", "")
    assert raise_(socket.timeout("t")).args  # noqa: UP041 (the alias is the point) == ("builtins", "TimeoutError", "t")
    assert raise_(json.JSONDecodeError).args == ("json.decoder", "JSONDecodeError", "")
    assert raise_(KeyError("k")).args == ("builtins", "KeyError", "k")
    assert raise_(OSError(2, "gone")).args == ("builtins", "FileNotFoundError", "[Errno 2] gone")
    assert raise_(KeyboardInterrupt).args == ("builtins", "KeyboardInterrupt", "")


# -- constructor validation -----------------------------------------------------------------


class _Local(Exception):
    pass


def _local_exception_class() -> type[Exception]:
    class Inner(Exception):
        pass

    return Inner


CONSTRUCTOR_ERRORS: list[tuple[Callable[[], object], str]] = [
    (lambda: delay(-1), "delay: seconds must be a finite number of seconds >= 0, got -1"),
    (lambda: delay(math.nan), "delay: seconds must be a finite number of seconds >= 0, got nan"),
    (lambda: delay(math.inf), "delay: seconds must be a finite number of seconds >= 0, got inf"),
    (lambda: delay(10**400), "delay: seconds must be a finite number of seconds >= 0, got 1000"),
    (lambda: delay(1, -0.5), "delay: jitter must be a finite number of seconds >= 0, got -0.5"),
    (lambda: delay("1"), "delay: seconds must be a number of seconds, got '1'"),  # type: ignore[arg-type]
    (lambda: delay(True), "delay: seconds must be a number of seconds, got True"),
    (lambda: pause(-0.5), "pause: seconds must be a finite number of seconds >= 0, got -0.5"),
    (lambda: kill("later"), "kill: when must be 'before', 'after' or 'during', got 'later'"),
    (lambda: kill(signal=0), "kill: signal must be a signal number in 1..64, got 0"),
    (lambda: exit(256), "exit: code must be an int in 0..255, got 256"),
    (lambda: exit(True), "exit: code must be an int in 0..255, got True"),
    (lambda: exit(1, "now"), "exit: when must be 'before' or 'after', got 'now'"),
    (lambda: gate("a b"), "gate: name must be letters, digits"),
    (lambda: gate("-x"), "gate: name must be letters, digits"),
    (lambda: gate("g", "soon"), "gate: when must be 'before' or 'after', got 'soon'"),
    (lambda: drop(prob=0), "prob must be a number in (0, 1], got 0"),
    (lambda: drop(prob=1.5), "prob must be a number in (0, 1], got 1.5"),
    (lambda: drop(prob=math.nan), "prob must be a number in (0, 1], got nan"),
    (lambda: drop(prob=True), "prob must be a number in (0, 1], got True"),
    (lambda: drop(times=0), "times must be an int in 1..2**63-1, got 0"),
    (lambda: drop(times=1.5), "times must be an int in 1..2**63-1, got 1.5"),  # type: ignore[arg-type]
    (lambda: drop(times=2**63), "times must be an int in 1..2**63-1, got 9223372036854775808"),
    (lambda: drop(who=""), "who must be a non-empty process name pattern, got ''"),
    (lambda: drop(op="pt"), "unknown op 'pt' (expected one of: put, put_nowait, get"),
    (lambda: drop(op="qsize"), "action 'drop' does not apply to op 'qsize'"),
    (lambda: full(op="get"), "action 'full' does not apply to op 'get'"),
    (lambda: empty(op="put"), "action 'empty' does not apply to op 'put'"),
    (lambda: duplicate(op="get"), "action 'duplicate' does not apply to op 'get'"),
    (lambda: drop(item=[1]), "item must be ANY or None, bool, int, float, str, bytes or a tuple"),
    (lambda: drop(item=math.nan), "item must be ANY or None, bool, int, float, str, bytes"),
    (lambda: drop(item=(1, [2])), "item must be ANY or None, bool, int, float, str, bytes"),
    (lambda: drop(item=signal.SIGTERM), "item must be ANY or None, bool, int, float, str, bytes"),
    (lambda: drop(item=10**4000), "item must be ANY or None, bool, int, float, str, bytes"),
    (lambda: drop(op="get", item=1), "an item selector (==1) only applies to put ops"),
    (lambda: drop(nth=0), "nth: call indexes start at 1, got 0"),
    (lambda: drop(nth=[]), "nth: selects no call (empty)"),
    (lambda: drop(nth=range(3, 3)), "nth: a range must be non-empty with step 1, got range(3, 3)"),
    (lambda: drop(nth=range(1, 9, 2)), "nth: a range must be non-empty with step 1"),
    (lambda: drop(nth="3"), "nth: expected an int, a range, or call indexes"),  # type: ignore[arg-type]
    (lambda: drop(nth=True), "nth: expected an int, a range, or call indexes"),
    (lambda: drop(nth=[(3, 1)]), "nth: interval (3, 1) is empty"),
    (lambda: drop(nth=[1.5]), "nth: expected call indexes (int) or (lo, hi) intervals, got 1.5"),  # type: ignore[list-item]
    (lambda: return_(True), "return needs op qsize, empty or full"),
    (lambda: return_([1], op="empty"), "return: value must be None, bool, int, float, str"),
    (lambda: return_(1, op="empty"), "return on empty needs a bool (True or False), got 1"),
    (lambda: return_(True, op="qsize"), "return on qsize needs an int, got True"),
    (lambda: raise_(42), "raise: expected an exception class or instance, got 42"),  # type: ignore[arg-type]
    (lambda: raise_(int), "raise: expected an exception class or instance, got <class 'int'>"),  # type: ignore[arg-type]
    (lambda: raise_(_local_exception_class()), "raise: exception class <class"),
    (lambda: Fault("nope"), "unknown action 'nope' (expected one of: delay, full"),
    (lambda: Fault("drop", (1,)), "drop takes no arguments, got (1,)"),
    (lambda: Fault("delay", ()), "delay takes 1 to 2 arguments, got 0: ()"),
    (lambda: Fault("raise", ("builtins", "Nope")), "raise: exception 'Nope' not found"),
    (lambda: Fault("raise", ("nosuchmodule", "X")), "raise: exception 'nosuchmodule.X' not found"),
    (lambda: Fault("raise", ("os", "sep")), "raise: 'os.sep' is not an exception class"),
    (lambda: Fault("raise", ("builtins", "ValueError", 3)), "raise: message must be a string"),
    (lambda: chain(drop(), full()), "chain term 'drop' needs a count (like '2*drop')"),
    (lambda: chain(off(times=1), drop(who="x")), "chain: only the first term may have op, who"),
    (lambda: chain(off(times=1), drop(op="get")), "chain: only the first term may have op, who"),
    (lambda: chain(off(times=1), drop(nth=2)), "chain: only the first term may have op, who"),
    (lambda: chain(off(times=1), drop(item=1)), "chain: only the first term may have an item"),
    (lambda: chain(full(times=1), empty()), "the actions full, empty have no default op"),
    (lambda: chain(off(op="get", times=1), full()), "action 'full' does not apply to op 'get'"),
    (
        lambda: Fault("off", times=1, next=drop(op="put")),
        "only the first term of a chain may have op, who, nth or item selectors, not 'drop'",
    ),
]


@pytest.mark.parametrize(("make", "message"), CONSTRUCTOR_ERRORS)
def test_constructor_errors(make: Callable[[], object], message: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        make()
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert info.value.spec is None


def test_module_level_exception_classes_are_accepted() -> None:
    fault = raise_(_Local("x"))
    assert fault.args[1:] == ("_Local", "x")
    roundtrip(fault)
