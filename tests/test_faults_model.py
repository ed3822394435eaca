"""The fault data model (mpfault._runtime.model): values, normalisation, selection;
no processes."""

from __future__ import annotations

import ast
import pickle
import queue
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

import mpfault.faults as public
from faultcheck import SIGKILL, SIGTERM
from mpfault._runtime import faults as F
from mpfault._runtime.faults import (
    ANY,
    GET_OPS,
    OPS,
    PUT_OPS,
    Fault,
    chain,
    delay,
    drop,
    duplicate,
    empty,
    full,
    gate,
    kill,
    off,
    parse,
    pause,
    raise_,
    return_,
)

# -- data model -----------------------------------------------------------------------------


def test_repr_is_the_dataclass_repr() -> None:
    assert repr(drop(op="put")) == (
        "Fault(action='drop', args=(), op='put', who=None, nth=None, times=None, prob=None,"
        " item=ANY, next=None)"
    )
    assert repr(ANY) == "ANY"


def test_constants() -> None:
    assert {"put", "put_nowait"} == PUT_OPS
    assert {"get", "get_nowait"} == GET_OPS
    ops = ["qsize", "empty", "full", "close", "join_thread", "cancel_join_thread", "task_done"]
    conn = ["send", "recv", "send_bytes", "recv_bytes", "poll"]  # instrumented connections
    assert {*PUT_OPS, *GET_OPS, *ops, "join", *conn} == OPS
    assert F.ACTIONS == (
        "delay",
        "full",
        "empty",
        "drop",
        "duplicate",
        "kill",
        "exit",
        "pause",
        "raise",
        "return",
        "off",
        "gate",
        "latency",
        "bandwidth",
        "reset",
        "partition",
    )


def test_any_is_a_picklable_singleton() -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(ANY, protocol)) is ANY
    assert drop().item is ANY
    assert drop(item=None).item is None
    assert drop(item=None) != drop()


PLAN = [
    drop(op="put", nth=3),
    delay(0.001, 0.019, op="get", prob=0.2),
    kill("after", op="put", who="producer-*", nth=5),
    chain(delay(0.01, times=2, op="put"), full()),
    return_(False, op="empty"),
    raise_(ValueError("boom"), op="put_nowait", nth=range(2, 5)),
    pause(0.2, op="*", who="consumer-*"),
    gate("g1", "after", op="put"),
    drop(op="put", item=None),
]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_faults_pickle(protocol: int) -> None:
    faults = list(PLAN)
    back = pickle.loads(pickle.dumps(faults, protocol))
    assert back == faults
    for old, new in zip(faults, back, strict=True):
        assert new.ops() == old.ops()
        assert (new.item is ANY) == (old.item is ANY)
        assert str(new) == str(old)


def test_faults_are_frozen_values() -> None:
    fault = drop(op="put", nth=3)
    with pytest.raises(AttributeError):
        fault.op = "get"  # type: ignore[misc]
    assert fault == drop(op="put", nth=[3])
    assert len({fault, drop(op="put", nth=range(3, 4)), drop()}) == 2
    assert chain(off(times=2), drop()) == parse("2*off->drop")[0]


def test_fault_constructor_normalises() -> None:
    assert Fault("drop", nth=3) == drop(nth=3)  # type: ignore[arg-type]
    assert Fault("kill").args == ("before", SIGKILL)
    assert Fault("kill", ("after",)).args == ("after", SIGKILL)
    assert Fault("exit").args == (1, "before")
    assert Fault("delay", (1,)).args == (1.0, 0.0)
    assert type(Fault("delay", (1,)).args[0]) is float
    assert Fault("gate", ["g"]).args == ("g", "before")  # type: ignore[arg-type]
    assert Fault("raise", ("_queue", "Empty")).args == ("queue", "Empty", "")
    assert Fault("raise", ("socket", "timeout", "x")).args == ("builtins", "TimeoutError", "x")
    assert Fault("drop", prob=1).prob == 1.0
    assert kill(signal=signal.SIGTERM).args == ("before", SIGTERM)
    assert type(kill(signal=signal.SIGTERM).args[1]) is int


@pytest.mark.parametrize(
    ("nth", "normalised"),
    [
        (3, ((3, 3),)),
        ({1, 2, 3}, ((1, 3),)),
        ([1, 2], ((1, 2),)),
        (range(2, 5), ((2, 4),)),
        ([(5, None), 1], ((1, 1), (5, None))),
        ([(1, 4), (2, 3)], ((1, 4),)),
        ([(1, 4), (5, 6), 9], ((1, 6), (9, 9))),
        ([(3, None), (1, 10)], ((1, None),)),
        (((2, 4), (8, None)), ((2, 4), (8, None))),
        (frozenset({7, 1}), ((1, 1), (7, 7))),
    ],
)
def test_nth_normalisation(nth: Any, normalised: Any) -> None:
    assert drop(nth=nth).nth == normalised


def test_nth_contains() -> None:
    fault = drop(nth=[1, (3, 5), (10, None)])
    assert [n for n in range(1, 13) if fault.nth_contains(n)] == [1, 3, 4, 5, 10, 11, 12]
    assert fault.nth_contains(10**18)
    assert not drop(nth=2).nth_contains(1)
    assert not drop(nth=2).nth_contains(3)
    assert all(drop().nth_contains(n) for n in (1, 2, 1000))


def test_ops() -> None:
    assert drop().ops() == PUT_OPS
    assert drop(op="get").ops() == GET_OPS
    assert drop(op="get_nowait").ops() == {"get_nowait"}
    assert drop(op="*").ops() == PUT_OPS | GET_OPS
    assert full().ops() == full(op="*").ops() == PUT_OPS
    assert empty().ops() == GET_OPS
    assert duplicate(op="put_nowait").ops() == {"put_nowait"}
    assert delay(1).ops() == OPS
    assert kill(op="*").ops() == OPS
    assert kill(op="close").ops() == {"close"}
    assert return_(False, op="full").ops() == {"full"}
    assert delay(1, item=None).ops() == PUT_OPS
    assert delay(1, op="*", item=None).ops() == PUT_OPS
    assert chain(off(times=2), drop()).ops() == PUT_OPS
    assert chain(off(op="*", times=2), drop()).ops() == PUT_OPS | GET_OPS
    assert chain(delay(1, times=2), kill()).ops() == OPS
    assert chain(off(op="*", times=1), full()).ops() == PUT_OPS
    tail = chain(off(times=1), drop()).next
    assert tail is not None
    assert tail.ops() == frozenset()


def test_matches() -> None:
    fault = drop(op="put", who="producer-*")
    assert fault.matches("put", "producer-1", 1, True)
    assert fault.matches("put_nowait", "producer-2", 1, True)
    assert not fault.matches("get", "producer-1", None, False)
    assert not fault.matches("put", "consumer-1", 1, True)
    assert not fault.matches("put", "Producer-1", 1, True)  # case matters
    assert not fault.matches("nonsense", "producer-1", 1, True)
    assert drop().matches("put", "anyone", object(), True)
    assert delay(1, who="w-[13]").matches("qsize", "w-3", None, False)
    assert not delay(1, who="w-[13]").matches("qsize", "w-2", None, False)

    sentinel = drop(item=None)
    assert sentinel.matches("put", "p", None, True)
    assert not sentinel.matches("put", "p", 0, True)
    assert not sentinel.matches("put", "p", None, False)
    assert not sentinel.matches("get", "p", None, True)
    assert drop(item=("stop", 1)).matches("put", "p", ("stop", 1), True)
    assert not drop(item=("stop", 1)).matches("put", "p", ["stop", 1], True)

    class RaisingEq:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing")

        __hash__ = object.__hash__

    class ArrayLike:
        def __eq__(self, other: object) -> Any:
            return self

        def __bool__(self) -> bool:
            raise ValueError("ambiguous truth value")

        __hash__ = object.__hash__

    assert not drop(item=1).matches("put", "p", RaisingEq(), True)
    assert not drop(item=1).matches("put", "p", ArrayLike(), True)


def test_needs_counter_and_terms() -> None:
    assert not drop().needs_counter
    assert not drop(prob=0.5, who="x").needs_counter
    assert drop(nth=3).needs_counter
    assert drop(times=1).needs_counter
    fault = chain(off(times=2), delay(0.001, times=3), drop())
    assert fault.needs_counter
    assert [(t.action, t.times) for t in fault.terms()] == [
        ("off", 2),
        ("delay", 3),
        ("drop", None),
    ]
    assert [t.op for t in fault.terms()] == [None, None, None]
    assert list(drop().terms()) == [drop()]


def test_make_exception() -> None:
    error = raise_(ValueError("boom")).make_exception()
    assert type(error) is ValueError
    assert error.args == ("boom",)
    assert type(raise_(queue.Full).make_exception()) is queue.Full
    assert raise_(queue.Full).make_exception().args == ()
    assert type(parse("get:raise(Empty:x)")[0].make_exception()) is queue.Empty
    with pytest.raises(TypeError, match="fault 'put:drop' does not raise an exception"):
        drop(op="put").make_exception()


# -- modules --------------------------------------------------------------------------------


def test_public_module_reexports_the_runtime_names() -> None:
    assert set(public.__all__) == set(F.__all__)
    for name in public.__all__:
        assert getattr(public, name) is getattr(F, name)
    for name in public.__all__:
        if callable(getattr(public, name)):
            assert getattr(public, name).__doc__, name


@pytest.mark.parametrize(
    "module",
    ["faults", "model", "actions", "grammar", "builders", "spectext", "errors", "layout", "procfs"],
)
def test_runtime_module_imports_only_the_standard_library(module: str) -> None:
    """Only the stdlib and sibling runtime modules: never the rest of mpfault, never pytest."""
    source = (Path(F.__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level in (0, 1), "only sibling modules of mpfault._runtime"
            if node.level == 1:
                continue
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    imported.discard("__future__")
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_docstrings_of_public_names() -> None:
    for name in F.__all__:
        obj = getattr(F, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    for method in ("terms", "ops", "matches", "nth_contains", "make_exception"):
        assert getattr(Fault, method).__doc__, method
    assert Fault.needs_counter.__doc__
