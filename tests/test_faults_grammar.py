"""The fault spec grammar (mpfault._runtime.grammar): parsing and formatting, exact
round trips, one-line errors; no processes."""

from __future__ import annotations

import math
import pickle
import random
import signal
import struct
from typing import Any

import pytest

from faultcheck import SIGKILL, roundtrip
from mpfault._runtime import faults as F
from mpfault._runtime.faults import (
    ANY,
    OPS,
    Fault,
    FaultSpecError,
    chain,
    delay,
    drop,
    duplicate,
    empty,
    exit,
    format_plan,
    full,
    gate,
    kill,
    off,
    parse,
    pause,
    raise_,
    return_,
)

# -- the examples of the brief ------------------------------------------------------------

EXAMPLES: list[tuple[str, Fault]] = [
    ("put#3:drop", drop(op="put", nth=3)),
    ("put==None:drop", drop(op="put", item=None)),
    ("get:20%delay(1ms..20ms)", delay(0.001, 0.019, op="get", prob=0.2)),
    ("put@producer-*#5:kill(after)", kill("after", op="put", who="producer-*", nth=5)),
    ("put:kill(after,SIGTERM)", kill("after", signal.SIGTERM, op="put")),
    ("get@*PoolWorker-*#1:kill(during)", kill("during", op="get", who="*PoolWorker-*", nth=1)),
    ("send:kill(during,SIGTERM)", kill("during", signal.SIGTERM, op="send")),
    ("get@consumer-1:exit(3,after)", exit(3, "after", op="get", who="consumer-1")),
    ("put:2*delay(10ms)->full", chain(delay(0.01, op="put", times=2), full())),
    ("empty:return(False)", return_(False, op="empty")),
    (
        "put_nowait#2..4:raise(ValueError:boom)",
        raise_(ValueError("boom"), op="put_nowait", nth=range(2, 5)),
    ),
    ("*@consumer-*:pause(200ms)", pause(0.2, op="*", who="consumer-*")),
    ("put#1,3,7:duplicate", duplicate(op="put", nth={1, 3, 7})),
    ("get#5..:empty", empty(op="get", nth=[(5, None)])),
    ("put:gate(g1,after)", gate("g1", "after", op="put")),
    ("2*off->drop", chain(off(times=2), drop())),
]


@pytest.mark.parametrize(("spec", "expected"), EXAMPLES)
def test_examples_parse(spec: str, expected: Fault) -> None:
    assert parse(spec) == [expected]
    assert str(expected) == spec
    roundtrip(expected)


def test_examples_as_one_plan() -> None:
    plan = [fault for _, fault in EXAMPLES]
    text = format_plan(plan)
    assert text == "; ".join(spec for spec, _ in EXAMPLES)
    assert parse(text) == plan
    assert parse("\n".join(spec for spec, _ in EXAMPLES)) == plan


def test_example_fields() -> None:
    (f,) = parse("get:20%delay(1ms..20ms)")
    assert (f.action, f.args, f.op, f.prob) == ("delay", (0.001, 0.019), "get", 0.2)
    (f,) = parse("put:kill")
    assert f.args == ("before", SIGKILL)
    (f,) = parse("put:2*delay(10ms)->full")
    assert [t.action for t in f.terms()] == ["delay", "full"]
    assert f.times == 2
    assert f.next is not None
    assert f.next.times is None
    (f,) = parse("put_nowait#2..4:raise(ValueError:boom)")
    assert f.args == ("builtins", "ValueError", "boom")
    assert f.nth == ((2, 4),)


# -- canonical text -------------------------------------------------------------------------

CANONICAL = [
    ("put:kill(before,SIGKILL)", "put:kill"),
    ("put:kill(SIGTERM,after)", "put:kill(after,SIGTERM)"),
    ("put:kill(15)", "put:kill(SIGTERM)"),
    ("put:kill(term)", "put:kill(SIGTERM)"),
    ("put:kill(KILL)", "put:kill"),
    ("get:kill(SIGKILL,during)", "get:kill(during)"),
    ("get:exit(after,1)", "get:exit(after)"),
    ("get:exit(1,before)", "get:exit"),
    ("get:exit(0)", "get:exit(0)"),
    ("  put : 2 * delay( 0.010s )  ", "put:2*delay(10ms)"),
    ("put:delay(1.5s)", "put:delay(1.5s)"),
    ("put:delay(0.0002s)", "put:delay(200us)"),
    ("put:delay(1ms..1ms)", "put:delay(1ms)"),
    ("put:delay(1000000ns)", "put:delay(1ms)"),
    ("put:delay(1e3ms)", "put:delay(1s)"),
    ("put:delay(1μs)", "put:delay(1us)"),
    ("put:delay(0ms)", "put:delay(0s)"),
    ("put:delay(.5s..1.5s)", "put:delay(500ms..1.5s)"),
    ("put:50.0%drop", "put:50%drop"),
    ("put:100%drop", "put:100%drop"),
    ("put:33.3%3*drop", "put:33.3%3*drop"),
    ("put:02*drop", "put:2*drop"),
    ("put#3,1,2:drop", "put#1..3:drop"),
    ("put#5..,7:drop", "put#5..:drop"),
    ("put#1,3..4,4..6:drop", "put#1,3..6:drop"),
    ("put#2..2:drop", "put#2:drop"),
    ("put:raise(socket.timeout)", "put:raise(TimeoutError)"),
    ("get:raise(Empty)", "get:raise(queue.Empty)"),
    ("put:raise(Full)", "put:raise(queue.Full)"),
    ("put:raise(_queue.Empty)", "put:raise(queue.Empty)"),
    ("put:raise(json.JSONDecodeError)", "put:raise(json.decoder.JSONDecodeError)"),
    ("put:raise(ValueError:'boom')", "put:raise(ValueError:boom)"),
    ("put:raise(ValueError:  two words )", "put:raise(ValueError:two words)"),
    ("put:raise(ValueError:a:b, c; d -> e)", "put:raise(ValueError:a:b, c; d -> e)"),
    ('put:raise(ValueError:"it\'s")', 'put:raise(ValueError:"it\'s")'),
    ("put:raise(ValueError:' x')", "put:raise(ValueError:' x')"),
    ("put:drop()", "put:drop"),
    ("put==(1,'a'):drop", "put==(1, 'a'):drop"),
    ("put=='a:b;c':drop", "put=='a:b;c':drop"),
    ('put@"w":drop', "put@w:drop"),
    ("put@'my worker':drop", "put@'my worker':drop"),
    ("put@w-[13]?*:drop", "put@w-[13]?*:drop"),
    ("empty:return( False )", "empty:return(False)"),
    ("qsize:return(0x10)", "qsize:return(16)"),
    ("qsize:return(-1)", "qsize:return(-1)"),
    (":drop", "drop"),
    ("*:drop", "*:drop"),
    ("drop", "drop"),
    ("@w:kill", "@w:kill"),
    ("#3:drop", "#3:drop"),
    ("==b'x':drop", "==b'x':drop"),
    ("put:gate(g1,before)", "put:gate(g1)"),
    ("put:2*off->3*delay(1ms)->full", "put:2*off->3*delay(1ms)->full"),
    ("empty:2*off->return(True)", "empty:2*off->return(True)"),
    ("put # 3 == None : drop", "put#3==None:drop"),
]


@pytest.mark.parametrize(("spec", "canonical"), CANONICAL)
def test_canonical_text(spec: str, canonical: str) -> None:
    (fault,) = parse(spec)
    assert str(fault) == canonical
    assert parse(canonical) == [fault]
    roundtrip(fault)


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        (drop(), "drop"),
        (drop(op="put"), "put:drop"),
        (kill(), "kill"),
        (kill(op="put"), "put:kill"),
        (kill(signal=signal.SIGTERM, op="*"), "*:kill(SIGTERM)"),
        (kill(signal=40), "kill(40)" if 40 not in set(signal.Signals) else "kill"),
        (exit(), "exit"),
        (delay(0.01, 0.005), "delay(10ms..15ms)"),
        (delay(0.1, 0.2), "delay(100ms..300ms)"),
        (delay(2), "delay(2s)"),
        (delay(1e-7), "delay(0.1us)"),
        (delay(5e-324), "delay(5e-318us)"),
        (delay(1e300), "delay(1e300s)"),
        (delay(-0.0), "delay(0s)"),
        (pause(1.5), "pause(1.5s)"),
        (drop(prob=1 / 3), "33.33333333333333%drop"),
        (drop(prob=5e-324), "5e-322%drop"),
        (drop(who="a b"), "@'a b':drop"),
        (drop(who="x\ny"), "@'x\\ny':drop"),
        (drop(item="x"), "=='x':drop"),
        (drop(item=(None, -0.0, b"\x00")), "==(None, -0.0, b'\\x00'):drop"),
        (drop(nth=[(1, 2), (4, None)]), "#1..2,4..:drop"),
        (raise_(ValueError), "raise(ValueError)"),
        (raise_(KeyError("k")), "raise(KeyError:k)"),
        (raise_(ValueError("a\nb")), "raise(ValueError:'a\\nb')"),
        (raise_(ValueError("(x)")), "raise(ValueError:'(x)')"),
        (gate("g.1-x_2"), "gate(g.1-x_2)"),
        (return_(3, op="qsize"), "qsize:return(3)"),
    ],
)
def test_str(fault: Fault, text: str) -> None:
    assert str(fault) == text
    roundtrip(fault)


# -- exact float round trips ----------------------------------------------------------------

TRICKY_FLOATS = [
    0.0,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    0.1,
    0.2,
    0.1 + 0.2,
    1 / 3,
    2 / 3,
    1e-7,
    1e-6,
    0.000999,
    0.001,
    0.9999999999999999,
    1.0,
    1.0000000000000002,
    123456789.12345679,
    9007199254740993.0,
    1e22,
    1e23,
]


@pytest.mark.parametrize("x", TRICKY_FLOATS)
def test_float_durations_round_trip_exactly(x: float) -> None:
    for fault in (delay(x), pause(x), delay(x, x), delay(0.001, x), delay(x, 0.001)):
        roundtrip(fault)
        (back,) = parse(str(fault))
        assert back.args == fault.args
        assert all(type(a) is float for a in back.args)


@pytest.mark.parametrize("p", [x for x in TRICKY_FLOATS if 0 < x <= 1])
def test_float_probabilities_round_trip_exactly(p: float) -> None:
    fault = drop(prob=p)
    roundtrip(fault)
    assert parse(str(fault))[0].prob == p


def test_delay_range_text_keeps_the_jitter_exact() -> None:
    (f,) = parse("delay(0.1s..0.3s)")
    assert f.args == (0.1, 0.2)  # not 0.3 - 0.1 == 0.19999999999999998
    (f,) = parse("delay(1.7e308s..3.4e308s)")  # the upper bound is no float
    assert f.args == (1.7e308, 1.7e308)
    roundtrip(f)


# -- generated faults -----------------------------------------------------------------------

_WEIRD = "abcXYZ019-_*?[]!@#:;=,.()'\" \\\n\té\u2028/>"
_SPECIAL_FLOATS = [*TRICKY_FLOATS, 0.5, 0.25, 1e-9, 1e-3, 1e3]


def _rand_float(rng: random.Random) -> float:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(_SPECIAL_FLOATS)
    if kind == 1:
        x: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return abs(x) if math.isfinite(x) else 1.5
    if kind == 2:
        return rng.random() * 10.0 ** rng.randint(-12, 12)
    if kind == 3:
        return rng.randint(0, 10**6) / float(10 ** rng.randint(0, 9))
    if kind == 4:
        return round(rng.random() * 100, rng.randint(0, 4)) / 1000
    return float(rng.randint(0, 1000))


def _rand_prob(rng: random.Random) -> float:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice([1.0, 0.5, 0.1, 1 / 3, 5e-324, 2.220446049250313e-16, 0.9999999999999999])
    if kind == 1:
        return rng.randint(1, 100) / 100
    if kind == 2:
        return rng.random() ** rng.randint(1, 60) or 1.0
    return rng.random() or 1.0


def _rand_text(rng: random.Random, low: int, high: int) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice("abc-_*?0") for _ in range(max(low, rng.randint(low, high))))
    return "".join(rng.choice(_WEIRD) for _ in range(rng.randint(low, high)))


def _rand_literal(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 2 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-5, 5)
    if kind == 3:
        return _rand_float(rng) * rng.choice([1, -1])
    if kind == 4:
        return _rand_text(rng, 0, 6)
    if kind == 5:
        return _rand_text(rng, 0, 4).encode("utf-8")
    if kind == 6:
        return ()
    return tuple(_rand_literal(rng, depth + 1) for _ in range(rng.randint(1, 3)))


_EXCEPTIONS: list[tuple[str, str]] = [
    ("builtins", "ValueError"),
    ("builtins", "KeyboardInterrupt"),
    ("builtins", "OSError"),
    ("queue", "Full"),
    ("queue", "Empty"),
    ("json.decoder", "JSONDecodeError"),
]
_SELECTORS = [None, "*", *sorted(OPS), "net"]


def _rand_term(rng: random.Random, op: str | None) -> Fault:
    action = rng.choice(F.ACTIONS)
    kw: dict[str, Any] = {}
    if rng.random() < 0.3:
        kw["prob"] = _rand_prob(rng)
    if rng.random() < 0.5:
        kw["times"] = rng.randint(1, 5) if rng.random() < 0.9 else rng.randint(1, 2**63 - 1)
    when = rng.choice(["before", "after"])
    if action == "delay":
        return delay(_rand_float(rng), _rand_float(rng) if rng.random() < 0.5 else 0.0, **kw)
    if action == "pause":
        return pause(_rand_float(rng), **kw)
    if action == "kill":
        return kill(rng.choice([when, "during"]), rng.randint(1, signal.NSIG - 1), **kw)
    if action == "exit":
        return exit(rng.randint(0, 255), when, **kw)
    if action == "gate":
        return gate(rng.choice(["g1", "g.2", "a-b_c", "0"]), when, **kw)
    if action == "raise":
        module, qualname = rng.choice(_EXCEPTIONS)
        return Fault("raise", (module, qualname, _rand_text(rng, 0, 8)), **kw)
    if action == "return":
        value = rng.randint(-3, 2**40) if op == "qsize" else rng.random() < 0.5
        return return_(value, op=op, **kw)
    if action == "latency":  # network faults (op net: only as the first term)
        jitter = _rand_float(rng) if rng.random() < 0.5 else 0.0
        return Fault(action, (_rand_float(rng), jitter), op="net", **kw)
    if action in ("bandwidth", "reset"):
        return Fault(action, (rng.randint(action == "bandwidth", 2**40),), op="net", **kw)
    if action == "partition":
        seconds = None if rng.random() < 0.3 else _rand_float(rng)
        return Fault(action, (seconds,), op="net", **kw)
    return Fault(action, (), **kw)


def random_fault(rng: random.Random) -> Fault:
    """A random valid fault (invalid combinations are drawn again)."""
    while True:
        op = rng.choice(_SELECTORS)
        try:
            terms = [_rand_term(rng, op) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
            for term in terms[:-1]:
                if term.times is None:
                    terms[terms.index(term)] = Fault(
                        term.action, term.args, op=term.op, times=1, prob=term.prob
                    )
            selectors: dict[str, Any] = {"op": op}
            if rng.random() < 0.4:
                selectors["who"] = _rand_text(rng, 1, 8)
            if rng.random() < 0.4:
                selectors["nth"] = rng.choice(
                    [
                        rng.randint(1, 9),
                        range(rng.randint(1, 5), rng.randint(6, 9)),
                        {rng.randint(1, 20) for _ in range(rng.randint(1, 4))},
                        [(rng.randint(1, 9), None), rng.randint(1, 20)],
                    ]
                )
            if rng.random() < 0.3:
                selectors["item"] = _rand_literal(rng)
            first = terms[0]
            head = Fault(first.action, first.args, times=first.times, prob=first.prob, **selectors)
            return chain(head, *terms[1:])
        except FaultSpecError:
            continue


def test_generated_faults_round_trip() -> None:
    rng = random.Random(20240611)
    faults = [random_fault(rng) for _ in range(3000)]
    actions = {term.action for fault in faults for term in fault.terms()}
    assert actions == set(F.ACTIONS)
    assert sum(fault.next is not None for fault in faults) > 300
    assert sum(fault.item is not ANY for fault in faults) > 100
    for fault in faults:
        roundtrip(fault)
    assert parse(format_plan(faults)) == faults
    assert pickle.loads(pickle.dumps(faults)) == faults


_TOKENS = [
    *["put", "get", "put_nowait", "empty", "qsize", "*", "@", "#", "==", ":", "->", "(", ")"],
    *["drop", "delay", "full", "kill", "exit", "raise", "return", "gate", "off", "pause"],
    *["1", "3", "0", "10ms", "..", ",", "%", "*", "'", '"', "None", "after", "SIGTERM", "KILL"],
    *[";", "\n", " ", "x", "2", "ValueError", "g1", "5", ".", "e", "-", "#c", "(1, 2)", "\\"],
]


def test_random_text_only_ever_raises_fault_spec_error() -> None:
    rng = random.Random(7)
    parsed = 0
    for _ in range(20000):
        text = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 9)))
        try:
            faults = parse(text, source="fuzz")
        except FaultSpecError as error:
            message = str(error)
            assert "\n" not in message
            assert message.startswith("bad fault spec ")
            assert " from fuzz: " in message
            continue
        parsed += 1
        assert parse(format_plan(faults)) == faults, text
    assert parsed > 100


# -- errors -----------------------------------------------------------------------------------

ERRORS = [
    ("put:dorp", f"unknown action 'dorp' (expected one of: {', '.join(F.ACTIONS)})"),
    (
        "put",
        f"unknown action 'put' (expected one of: {', '.join(F.ACTIONS)});"
        " a spec is op:action, as in put:drop",
    ),
    (
        "pt:drop",
        "unknown op 'pt' (expected one of: put, put_nowait, get, get_nowait, qsize, empty, full,"
        " close, join_thread, cancel_join_thread, task_done, join, send, recv, send_bytes,"
        " recv_bytes, poll, got, *, net)",
    ),
    ("get:full", "action 'full' does not apply to op 'get' (it applies to: put, put_nowait)"),
    (
        "get:duplicate",
        "action 'duplicate' does not apply to op 'get' (it applies to: put, put_nowait)",
    ),
    ("put:empty", "action 'empty' does not apply to op 'put' (it applies to: get, get_nowait)"),
    (
        "qsize:drop",
        "action 'drop' does not apply to op 'qsize' (it applies to: put, put_nowait, get,"
        " get_nowait)",
    ),
    ("2*full->empty", "the actions full, empty have no default op in common: give an op"),
    ("*:2*full->empty", "the actions full, empty apply to no op in common"),
    (
        "put:",
        "expected a term like drop, 2*delay(10ms) or 50%full (an action with optional pct% and"
        " cnt*), got nothing",
    ),
    ("put:2*drop->", "expected a term like drop, 2*delay(10ms) or 50%full after '->', got nothing"),
    (
        "put:drop->full",
        "chain term 'drop' needs a count (like '2*drop'): without one the terms after it never"
        " apply",
    ),
    ("put:drop junk", "unexpected 'junk' after drop (expected '->' or the end of the spec)"),
    ("put:delay(1ms", "unclosed '(' after delay"),
    (
        "put:delay",
        "delay needs a duration with a unit, like 10ms, 1.5s or 200us, as in delay(10ms)",
    ),
    (
        "put:delay(-1ms)",
        "delay: expected a duration with a unit, like 10ms, 1.5s or 200us, got '-1ms'",
    ),
    (
        "put:delay(10xs)",
        "delay: expected a duration with a unit, like 10ms, 1.5s or 200us, got '10xs'",
    ),
    ("put:delay(10ms,5ms)", "delay takes a duration or a range like 1ms..20ms, got '10ms,5ms'"),
    (
        "put:delay(1s..20ms)",
        "delay range '1s..20ms' ends before it starts (each bound has its own unit)",
    ),
    (
        "put:delay(10)",
        "delay: the duration 10 needs a unit: write 10ms or 10s (units: ns, us, ms, s)",
    ),
    ("get:pause(2)", "pause: the duration 2 needs a unit: write 2ms or 2s (units: ns, us, ms, s)"),
    (
        "put:delay(1..20ms)",
        "delay: the duration 1 needs a unit: write 1ms or 1s (units: ns, us, ms, s)",
    ),
    ("put:delay(1e400s)", "delay: '1e400s' is too large"),
    ("put:delay(1e99999999999999999999s)", "number '1e99999999999999999999' is out of range"),
    ("put:pause(1ms..2ms)", "pause takes one duration, got '1ms..2ms'"),
    (
        "put:pause()",
        "pause needs a duration with a unit, like 10ms, 1.5s or 200us, as in pause(10ms)",
    ),
    (
        "put:kill(SIGFOO)",
        "unknown signal 'SIGFOO' (expected a name like SIGTERM or KILL, or a number)",
    ),
    (
        "put:kill(after,before)",
        "kill takes at most one of before/after/during and one signal, got 'after,before'",
    ),
    (
        "get:kill(during,during)",
        "kill takes at most one of before/after/during and one signal, got 'during,during'",
    ),
    (
        "got:kill(during)",
        "op 'got' counts the gets that returned an item, so its actions act after them:"
        " kill(after), exit(code,after), gate(name,after) or off, not 'kill(during)'",
    ),
    ("put:exit(during)", "exit takes an exit code 0..255 and/or before/after, got 'during'"),
    ("put:kill(0)", f"kill: signal must be a signal number in 1..{signal.NSIG - 1}, got 0"),
    ("put:exit(256)", "exit: code must be an int in 0..255, got 256"),
    ("put:exit(-1)", "exit takes an exit code 0..255 and/or before/after, got '-1'"),
    ("put:exit(1,)", "exit(1,) has an empty argument"),
    ("put:drop(1)", "drop takes no arguments, got (1)"),
    ("put:gate()", "gate needs a name, as in gate(g1)"),
    ("put:gate(g,later)", "gate takes a name and optionally before/after, got 'g,later'"),
    (
        "put:gate(a b)",
        "gate: name must be letters, digits, '_', '.' or '-' (not starting with '.' or '-'),"
        " got 'a b'",
    ),
    (
        "put:raise(Nope)",
        "unknown exception 'Nope' (expected a builtin exception name like ValueError, Full,"
        " Empty, or module.Name)",
    ),
    (
        "put:raise(nosuchmodule.Oops)",
        "unknown exception 'nosuchmodule.Oops' (expected a builtin exception name like"
        " ValueError, Full, Empty, or module.Name)",
    ),
    ("put:raise(os.path)", "raise: 'os.path' is not an exception class"),
    ("put:raise(len)", "'len' is not an exception class"),
    ("put:raise(ValueError:)", "raise(ValueError:) has an empty message"),
    ("put:raise(1x)", "raise needs an exception name like ValueError or module.Name, got '1x'"),
    ("put:raise(ValueError:it's)", 'unterminated string literal "\'s)"'),
    (
        "put:return(1)",
        "return needs op qsize, empty or full (as in empty:return(False)), got op 'put'",
    ),
    (
        "return(False)",
        "return needs op qsize, empty or full (as in empty:return(False)), got no op",
    ),
    (
        "*:return(True)",
        "return needs op qsize, empty or full (as in empty:return(False)), got op '*'",
    ),
    ("qsize:return(True)", "return on qsize needs an int, got True"),
    ("empty:return(3)", "return on empty needs a bool (True or False), got 3"),
    ("empty:2*off->return(3)", "return on empty needs a bool (True or False), got 3"),
    (
        "empty:return(foo)",
        "return value must be a Python literal like None, 3 or 'x', got 'foo'",
    ),
    (
        "qsize:return([1])",
        "return: value must be None, bool, int, float, str, bytes or a tuple of these, got [1]",
    ),
    ("put#0:drop", "nth call indexes start at 1, got '0'"),
    ("put#3..1:drop", "nth range '3..1' is empty"),
    (
        "put#x:drop",
        "nth must be N, N..M, N.. or a list of those like 1,3,5.. (1-based), got 'x'",
    ),
    ("put#9223372036854775808:drop", "nth: call indexes end at 2**63-1, got 9223372036854775808"),
    ("put:0*drop", "a count must be at least 1, got 0*"),
    ("put:99999999999999999999*drop", "count 9999999999999999999... is too large"),
    ("put:0%drop", "a probability must be above 0% and at most 100%, got 0%"),
    ("put:150%drop", "a probability must be above 0% and at most 100%, got 150%"),
    (
        "get==1:drop",
        "an item selector (==1) only applies to put ops, and the ops of 'get' include none",
    ),
    (
        "==1:empty",
        "an item selector (==1) only applies to put ops, and the default ops of this fault"
        " include none",
    ),
    (
        "put==[1]:drop",
        "item must be ANY or None, bool, int, float, str, bytes or a tuple of these, got [1]",
    ),
    ("put==foo:drop", "item must be a Python literal like None, 3 or 'x', got 'foo'"),
    ("put==:drop", "expected an item literal after '=='"),
    ("put@:drop", "expected a process name pattern after '@'"),
    ("put@w@x:drop", "who 'w@x' needs quotes (write it as a Python string literal)"),
    ("put@'':drop", "who must be a non-empty process name pattern, got ''"),
    ("put@a'b:drop", 'unterminated string literal "\'b:drop"'),
    (
        "put x:drop",
        "unexpected 'x' in the target (expected op[@who][#nth][==item] before ':')",
    ),
    (
        "put::drop",
        "expected a term like drop, 2*delay(10ms) or 50%full (an action with optional pct% and"
        " cnt*), got ':drop'",
    ),
]


@pytest.mark.parametrize(("spec", "reason"), ERRORS)
def test_errors(spec: str, reason: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse(f"get:empty; {spec}\nput:drop", source="--mpfault")
    error = info.value
    assert str(error) == f"bad fault spec {spec!r} from --mpfault: {reason}"
    assert (error.reason, error.spec, error.source) == (reason, spec, "--mpfault")
    assert isinstance(error, ValueError)
    assert "\n" not in str(error)


def test_error_default_source_and_long_spec() -> None:
    with pytest.raises(FaultSpecError, match=r"^bad fault spec 'put:dorp' from string: "):
        parse("put:dorp")
    long = "put:" + "x" * 300
    with pytest.raises(FaultSpecError) as info:
        parse(long)
    assert str(info.value).startswith(f"bad fault spec {long[:200] + '...'!r} from string: ")
    assert info.value.spec == long


def test_fault_spec_error_pickles() -> None:
    with pytest.raises(FaultSpecError) as info:
        parse("put:dorp", source="ini mpfault_faults")
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value)
    assert (back.reason, back.spec, back.source) == (
        info.value.reason,
        "put:dorp",
        "ini mpfault_faults",
    )


def test_parse_needs_a_string() -> None:
    with pytest.raises(TypeError, match="fault specs must be a str, got bytes"):
        parse(b"put:drop")  # type: ignore[arg-type]


# -- separators and comments --------------------------------------------------------------


def test_separators_blank_entries_and_comments() -> None:
    text = """
    # a comment, with an unbalanced ' quote
    put#3:drop ; get:empty
    ;;

      # indented comment
    #
    #3:drop
    #x: comments start with '#' not followed by a digit
    put:raise(ValueError:a;b); put==';':drop
    """
    assert parse(text, source="ini mpfault_faults") == [
        drop(op="put", nth=3),
        empty(op="get"),
        drop(nth=3),
        raise_(ValueError("a;b"), op="put"),
        drop(op="put", item=";"),
    ]
    assert parse("") == []
    assert parse(" ; \n ;") == []
    assert parse("# only a comment") == []


def test_format_plan() -> None:
    plan = [drop(op="put", nth=3), delay(0.01, op="get", prob=0.2)]
    assert format_plan(plan) == "put#3:drop; get:20%delay(10ms)"
    assert format_plan([]) == ""
    assert parse(format_plan(plan)) == plan


def test_regexes_are_not_catastrophic() -> None:
    # a long run of digits and dots must fail fast, not backtrack
    text = "put:delay(" + "1." * 5000 + ")"
    with pytest.raises(FaultSpecError):
        parse(text)
