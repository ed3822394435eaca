"""The fault actions: one table, one entry per action.

An :class:`Action` says everything about one action: the queue operations it applies
to (and those it applies to when a fault names none), how its arguments are
normalised, parsed from spec text and written back, its ``when`` values, whether it
acts on the whole process (such actions never fire in the test process), and how it
fires.  The data model (:mod:`.model`), the spec grammar (:mod:`.grammar`), the
interception point (:mod:`.fqueue`) and the harness read :data:`REGISTRY`; adding an
action is one entry here (plus its public constructor in :mod:`.builders`).

Standard library only (this module runs in child processes).
"""

from __future__ import annotations

import builtins
import importlib
import math
import queue as _queue
import re
import signal as _signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import netfaults as _net
from . import spectext as _t
from .errors import FaultSpecError
from .events import OPS as _EVENT_OPS

if TYPE_CHECKING:
    from .faulty import Call
    from .model import Fault

__all__ = [
    "ACTIONS",
    "GET_OPS",
    "OPS",
    "PUT_OPS",
    "REGISTRY",
    "Action",
    "action",
]

# -- operations -------------------------------------------------------------------------------

#: The queue operations, in the order of the event log's op codes.
OP_ORDER: Final[tuple[str, ...]] = _EVENT_OPS[1:]
#: Every queue operation a fault can apply to.
OPS: Final[frozenset[str]] = frozenset(OP_ORDER)
#: The operations that put an item (selected by ``op="put"``).
PUT_OPS: Final[frozenset[str]] = frozenset({"put", "put_nowait"})
#: The operations that get an item (selected by ``op="get"``).
GET_OPS: Final[frozenset[str]] = frozenset({"get", "get_nowait"})
#: The operations a ``return`` fault can make lie.
LIE_OPS: Final[frozenset[str]] = frozenset({"qsize", "empty", "full"})

WHENS: Final = ("before", "after")
#: ``kill`` also acts ``during`` an operation: inside it, holding what it holds (during.py)
KILL_WHENS: Final = ("before", "after", "during")
MAX_COUNT: Final = 2**63 - 1  # counters are int64
DEFAULT_SIGNAL: Final = int(_signal.SIGKILL)
LITERAL_KINDS: Final = "None, bool, int, float, str, bytes or a tuple of these"
_GATE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Action(NamedTuple):
    """One fault action (an entry of :data:`REGISTRY`)."""

    #: the action's name in specs and ``Fault.action``
    name: str
    #: the operations it can apply to
    applies: frozenset[str]
    #: the operations it applies to when the fault names no ``op``
    default_ops: frozenset[str]
    #: raw arguments -> normalised ``Fault.args`` (raises FaultSpecError)
    normalise: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    #: the text between the parentheses (None: none given) -> raw arguments
    parse: Callable[[str | None], tuple[Any, ...]]
    #: normalised arguments -> the text between the parentheses ("": no parentheses)
    format: Callable[[tuple[Any, ...]], str]
    #: make it happen: (the call being faulted, the plan index, the fault term)
    fire: Callable[[Call, int, Fault], None]
    #: where ``when`` is among its arguments (None: it always fires before the call)
    when: int | None = None
    #: whether it acts on the whole process (never fires in the test process)
    whole_process: bool = False
    #: whether the process does not survive it (the item of a put right before it
    #: is kept from the queue's feeder thread, so the loss is certain)
    ends_process: bool = False
    #: checks its arguments against the op of the chain it is in (None: any op)
    check: Callable[[str | None, tuple[Any, ...]], None] | None = None


# -- argument helpers -------------------------------------------------------------------------


def is_int(value: object) -> bool:
    """True for ints that are not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_literal(value: object) -> bool:
    """True for values whose repr reads back equal with ast.literal_eval (and hashable)."""
    kind = type(value)
    if isinstance(value, int) and kind is int:
        return value.bit_length() <= 10_000  # str() of larger ints is refused
    if value is None or kind in (bool, str, bytes):
        return True
    if isinstance(value, float) and kind is float:
        return math.isfinite(value)
    if isinstance(value, tuple) and kind is tuple:
        return all(is_literal(part) for part in value)
    return False


def _seconds(what: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise FaultSpecError(f"{what} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise FaultSpecError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _when(action: str, value: object, whens: tuple[str, ...] = WHENS) -> str:
    if value not in whens:
        wanted = " or ".join(repr(w) for w in whens)
        if len(whens) > 2:
            wanted = ", ".join(repr(w) for w in whens[:-1]) + f" or {whens[-1]!r}"
        raise FaultSpecError(f"{action}: when must be {wanted}, got {value!r}")
    return str(value)


def _arity(action: str, args: tuple[Any, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        if low == high:
            wanted = f"{low} argument{'s' if low != 1 else ''}"
        else:
            wanted = f"{low} to {high} arguments"
        raise FaultSpecError(f"{action} takes {wanted}, got {len(args)}: {args!r}")


def _parts(action: str, text: str) -> list[str]:
    """The comma-separated arguments of ``action(text)``, none of them empty."""
    parts = [part.strip() for part in _t.split_top(text, ",")]
    if "" in parts:
        raise _t.Syntax(f"{action}({text}) has an empty argument")
    return parts


def _needs(text: str | None, message: str) -> str:
    if text is None or not text.strip():
        raise _t.Syntax(message)
    return text


# -- actions without arguments ----------------------------------------------------------------


def _no_args(name: str) -> dict[str, Any]:
    def normalise(args: tuple[Any, ...]) -> tuple[Any, ...]:
        if args:
            raise FaultSpecError(f"{name} takes no arguments, got {args!r}")
        return ()

    def parse(text: str | None) -> tuple[Any, ...]:
        if text is None or not text.strip():
            return ()
        _parts(name, text)
        raise _t.Syntax(f"{name} takes no arguments, got ({text})")

    return {"normalise": normalise, "parse": parse, "format": lambda args: ""}


# -- delay, pause ------------------------------------------------------------------------------


def _normalise_delay(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("delay", args, 1, 2)
    jitter = args[1] if len(args) > 1 else 0.0
    return (_seconds("delay: seconds", args[0]), _seconds("delay: jitter", jitter))


def _duration_args(action: str, text: str | None) -> tuple[float, Any, str | None, str]:
    """(seconds, exact seconds, the upper bound's text or None, the argument text)."""
    text = _needs(text, f"{action} needs {_t.DURATION_HINT}, as in {action}(10ms)")
    parts = _parts(action, text)
    low_text, dots, high_text = parts[0].partition("..")
    if len(parts) != 1 or (dots and action == "pause"):
        wanted = "a duration or a range like 1ms..20ms" if action == "delay" else "one duration"
        raise _t.Syntax(f"{action} takes {wanted}, got {text.strip()!r}")
    low = _t.parse_duration(low_text, action)
    return _t.finite(low, action, low_text), low, high_text if dots else None, parts[0]


def _parse_delay(text: str | None) -> tuple[Any, ...]:
    import decimal

    seconds, low, high_text, part = _duration_args("delay", text)
    if high_text is None:
        return (seconds, 0.0)
    high = _t.parse_duration(high_text, "delay upper bound")
    if high < low:
        raise _t.Syntax(f"delay range {part!r} ends before it starts (each bound has its own unit)")
    try:
        jitter = _t.exact().subtract(high, low)
    except decimal.DecimalException:
        raise _t.Syntax(f"delay range {part!r} is too large")
    return (seconds, _t.finite(jitter, "delay range", part))


def _format_delay(args: tuple[Any, ...]) -> str:
    seconds, jitter = args
    if jitter == 0:
        return _t.format_duration(seconds)
    low = _t.float_decimal(seconds)
    high = _t.exact().add(low, _t.float_decimal(jitter))
    return f"{_t.format_duration_decimal(low)}..{_t.format_duration_decimal(high)}"


def _fire_delay(call: Call, index: int, term: Fault) -> None:
    seconds, jitter = term.args
    if jitter:
        seconds += call.st.rng(call.name, index).uniform(0.0, jitter)
    call.note(index, term, f"delay {seconds * 1000:.3g} ms")
    time.sleep(seconds)


def _normalise_pause(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("pause", args, 1, 1)
    return (_seconds("pause: seconds", args[0]),)


def _parse_pause(text: str | None) -> tuple[Any, ...]:
    return (_duration_args("pause", text)[0],)


def _fire_pause(call: Call, index: int, term: Fault) -> None:
    call.note(index, term, f"pause {term.args[0] * 1000:.3g} ms")
    call.rec.mark("pause", call.name, str(term.args[0]), index)
    call.st.pause_self(term.args[0])
    call.rec.mark("resume", call.name, "", index)


# -- full, empty, drop, duplicate, off --------------------------------------------------------


def _fire_forced(call: Call, index: int, term: Fault) -> None:
    block, timeout = call.block_timeout()
    call.note(index, term, f"forced {term.action}")
    if block and timeout is not None and timeout > 0:
        time.sleep(timeout)  # "as if" the queue stayed full/empty
    raise _queue.Full() if term.action == "full" else _queue.Empty()


def _fire_drop(call: Call, index: int, term: Fault) -> None:
    call.note(index, term, "drop")
    if call.has_item:
        call.calls = 0
    else:
        call.drop_get = True


def _fire_duplicate(call: Call, index: int, term: Fault) -> None:
    call.note(index, term, "duplicate")
    call.calls = 2


def _fire_nothing(call: Call, index: int, term: Fault) -> None:
    pass


# -- kill, exit --------------------------------------------------------------------------------


def _signal_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _signal.NSIG:
        raise FaultSpecError(
            f"kill: signal must be a signal number in 1..{_signal.NSIG - 1}, got {value!r}"
        )
    return int(value)


def _normalise_kill(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("kill", args, 0, 2)
    when = args[0] if args else "before"
    number = args[1] if len(args) > 1 else DEFAULT_SIGNAL
    return (_when("kill", when, KILL_WHENS), _signal_number(number))


def _when_and(
    action: str,
    text: str,
    is_other: Callable[[str], object],
    parse: Callable[[str], Any],
    error: str,
    whens: tuple[str, ...] = WHENS,
) -> tuple[str, Any]:
    """(when, the other argument or None) of ``action(text)``: the two in either order."""
    when: str | None = None
    other: Any = None
    for part in _parts(action, text):
        if part in whens and when is None:
            when = part
        elif is_other(part) and other is None:
            other = parse(part)
        else:
            raise _t.Syntax(error)
    return when or "before", other


def _parse_kill(text: str | None) -> tuple[Any, ...]:
    if text is None or not text.strip():
        return ()
    error = f"kill takes at most one of before/after/during and one signal, got {text!r}"
    when, number = _when_and(
        "kill", text, lambda p: p not in KILL_WHENS, _t.parse_signal, error, KILL_WHENS
    )
    return (when, DEFAULT_SIGNAL if number is None else number)


def _format_kill(args: tuple[Any, ...]) -> str:
    when, number = args
    parts = [] if when == "before" else [when]
    if number != DEFAULT_SIGNAL:
        parts.append(_t.format_signal(number))
    return ",".join(parts)


def _fire_kill(call: Call, index: int, term: Fault) -> None:
    when, sig = term.args
    try:
        signame = _signal.Signals(sig).name
    except ValueError:
        signame = f"signal {sig}"
    if when == "during":  # inside the operation, as far as it blocks or takes a lock
        from .during import enter

        when = f"during, {enter(call)}"
    call.rec.mark("fault", call.name, f"{call.op}: kill {signame} ({when}) [{term}]", index)
    call.rec.mark("kill", call.name, signame, index)
    call.st.kill_self(sig)


def _normalise_exit(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("exit", args, 0, 2)
    code = args[0] if args else 1
    when = args[1] if len(args) > 1 else "before"
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise FaultSpecError(f"exit: code must be an int in 0..255, got {code!r}")
    return (int(code), _when("exit", when))


def _parse_exit(text: str | None) -> tuple[Any, ...]:
    if text is None or not text.strip():
        return ()
    error = f"exit takes an exit code 0..255 and/or before/after, got {text.strip()!r}"
    when, code = _when_and(
        "exit", text, _t.CODE.fullmatch, lambda p: _t.parse_int(p, "exit code"), error
    )
    return (1 if code is None else code, when)


def _format_exit(args: tuple[Any, ...]) -> str:
    code, when = args
    parts = [] if code == 1 else [str(code)]
    if when != "before":
        parts.append(when)
    return ",".join(parts)


def _fire_exit(call: Call, index: int, term: Fault) -> None:
    code, when = term.args
    call.rec.mark("fault", call.name, f"{call.op}: exit {code} ({when}) [{term}]", index)
    call.rec.mark("exit", call.name, str(code), index)
    call.st.exit_self(code)


# -- raise ---------------------------------------------------------------------------------------

_MISSING: Final = object()


def _lookup(module: str, qualname: str) -> object:
    """Return module.qualname, or _MISSING; import errors other than absence propagate."""
    try:
        obj: object = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            return _MISSING
        raise
    for part in qualname.split("."):
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def exception_class(module: str, qualname: str) -> type[BaseException]:
    """The exception class ``module.qualname`` (a FaultSpecError if there is none)."""
    name = qualname if module == "builtins" else f"{module}.{qualname}"
    try:
        obj = _lookup(module, qualname)
    except Exception as error:
        raise FaultSpecError(f"raise: importing {module!r} failed: {type(error).__name__}: {error}")
    if obj is _MISSING:
        raise FaultSpecError(f"raise: exception {name!r} not found")
    if not isinstance(obj, type) or not issubclass(obj, BaseException):
        raise FaultSpecError(f"raise: {name!r} is not an exception class")
    return obj


def exception_name(cls: type[BaseException]) -> tuple[str, str]:
    """The canonical (module, qualname) of an exception class, checked to import back."""
    module, qualname = cls.__module__, cls.__qualname__
    if module.startswith("_"):  # _queue.Empty is queue.Empty
        try:
            if _lookup(module[1:], qualname) is cls:
                module = module[1:]
        except Exception:
            pass
    try:
        found = _lookup(module, qualname)
    except Exception:
        found = _MISSING
    if found is not cls:
        raise FaultSpecError(
            f"raise: exception class {cls!r} cannot be imported back as {module}.{qualname}"
        )
    return module, qualname


def _resolve_exception(name: str) -> type[BaseException]:
    """Resolve a spec's exception name: a builtin, Full, Empty, or a dotted path."""
    unknown = FaultSpecError(
        f"unknown exception {name!r} (expected a builtin exception name like ValueError,"
        f" Full, Empty, or module.Name)"
    )
    if "." not in name:
        obj = getattr(builtins, name, None)
        if obj is None and name in ("Full", "Empty"):
            obj = getattr(_queue, name)
        if obj is None:
            raise unknown
        if not isinstance(obj, type) or not issubclass(obj, BaseException):
            raise FaultSpecError(f"{name!r} is not an exception class")
        return obj
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module, qualname = ".".join(parts[:split]), ".".join(parts[split:])
        try:
            if _lookup(module, qualname) is _MISSING:
                continue
        except Exception as error:
            raise FaultSpecError(
                f"importing {module!r} for {name!r} failed: {type(error).__name__}: {error}"
            )
        return exception_class(module, qualname)
    raise unknown


_EXCEPTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _normalise_raise(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("raise", args, 2, 3)
    module, qualname = args[0], args[1]
    message = args[2] if len(args) > 2 else ""
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise FaultSpecError(
            f"raise: module and qualname must be strings, got {module!r}, {qualname!r}"
        )
    if not isinstance(message, str):
        raise FaultSpecError(f"raise: message must be a string, got {message!r}")
    module, qualname = exception_name(exception_class(module, qualname))
    return (module, qualname, message)


def _parse_raise(text: str | None) -> tuple[Any, ...]:
    text = _needs(text, "raise needs an exception, as in raise(ValueError:boom)")
    name, colon, message = text.partition(":")
    name = name.strip()
    if not _EXCEPTION_NAME.fullmatch(name):
        raise _t.Syntax(
            f"raise needs an exception name like ValueError or module.Name, got {name!r}"
        )
    module, qualname = exception_name(_resolve_exception(name))
    message = message.strip()
    if colon and not message:
        raise _t.Syntax(f"raise({name}:) has an empty message")
    if message:
        message = _t.parse_name_text(message, "raise message", _t.BARE_MESSAGE)
    return (module, qualname, message)


def _format_raise(args: tuple[Any, ...]) -> str:
    module, qualname, message = args
    name = qualname if module == "builtins" else f"{module}.{qualname}"
    return f"{name}:{_t.format_text(message, _t.BARE_MESSAGE)}" if message else name


def _fire_raise(call: Call, index: int, term: Fault) -> None:
    exc = term.make_exception()
    call.note(index, term, f"raise {type(exc).__name__}")
    raise exc


# -- return --------------------------------------------------------------------------------------


def _normalise_return(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("return", args, 1, 1)
    if not is_literal(args[0]):
        raise FaultSpecError(f"return: value must be {LITERAL_KINDS}, got {args[0]!r}")
    return (args[0],)


def _parse_return(text: str | None) -> tuple[Any, ...]:
    text = _needs(text, "return needs a value, as in empty:return(False)")
    return (_t.parse_literal(text.strip(), "return value"),)


def _check_return(op: str | None, args: tuple[Any, ...]) -> None:
    if op not in LIE_OPS:
        got = "no op" if op is None else f"op {op!r}"
        raise FaultSpecError(
            f"return needs op qsize, empty or full (as in empty:return(False)), got {got}"
        )
    value = args[0]
    if op == "qsize" and not is_int(value):
        raise FaultSpecError(f"return on qsize needs an int, got {value!r}")
    if op != "qsize" and type(value) is not bool:
        raise FaultSpecError(f"return on {op} needs a bool (True or False), got {value!r}")


def _fire_return(call: Call, index: int, term: Fault) -> None:
    call.note(index, term, f"return {term.args[0]!r}")
    call.result = term.args[0]


# -- gate ----------------------------------------------------------------------------------------


def _gate_name(value: object) -> str:
    if not isinstance(value, str) or not _GATE_NAME.fullmatch(value):
        raise FaultSpecError(
            f"gate: name must be letters, digits, '_', '.' or '-' (not starting with"
            f" '.' or '-'), got {value!r}"
        )
    return value


def _normalise_gate(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("gate", args, 1, 2)
    when = args[1] if len(args) > 1 else "before"
    return (_gate_name(args[0]), _when("gate", when))


def _parse_gate(text: str | None) -> tuple[Any, ...]:
    text = _needs(text, "gate needs a name, as in gate(g1)")
    parts = _parts("gate", text)
    if len(parts) > 2 or (len(parts) == 2 and parts[1] not in WHENS):
        raise _t.Syntax(f"gate takes a name and optionally before/after, got {text.strip()!r}")
    return tuple(parts)


def _format_gate(args: tuple[Any, ...]) -> str:
    name, when = args
    return name if when == "before" else f"{name},{when}"


def _fire_gate(call: Call, index: int, term: Fault) -> None:
    gate, when = term.args
    call.rec.mark("fault", call.name, f"gate {gate} ({when}) [{term}]", index)
    call.rec.mark("gate-wait", call.name, gate, index)
    call.st.wait_gate(gate)
    call.rec.mark("gate-pass", call.name, gate, index)


# -- the table -------------------------------------------------------------------------------

#: Every action by name, in documentation order.
REGISTRY: Final[dict[str, Action]] = {
    a.name: a
    for a in (
        Action("delay", OPS, OPS, _normalise_delay, _parse_delay, _format_delay, _fire_delay),
        Action("full", PUT_OPS, PUT_OPS, fire=_fire_forced, **_no_args("full")),
        Action("empty", GET_OPS, GET_OPS, fire=_fire_forced, **_no_args("empty")),
        Action("drop", PUT_OPS | GET_OPS, PUT_OPS, fire=_fire_drop, **_no_args("drop")),
        Action("duplicate", PUT_OPS, PUT_OPS, fire=_fire_duplicate, **_no_args("duplicate")),
        Action(
            "kill",
            OPS,
            OPS,
            _normalise_kill,
            _parse_kill,
            _format_kill,
            _fire_kill,
            when=0,
            whole_process=True,
            ends_process=True,
        ),
        Action(
            "exit",
            OPS,
            OPS,
            _normalise_exit,
            _parse_exit,
            _format_exit,
            _fire_exit,
            when=1,
            whole_process=True,
            ends_process=True,
        ),
        Action(
            "pause",
            OPS,
            OPS,
            _normalise_pause,
            _parse_pause,
            lambda args: _t.format_duration(args[0]),
            _fire_pause,
            whole_process=True,
        ),
        Action("raise", OPS, OPS, _normalise_raise, _parse_raise, _format_raise, _fire_raise),
        Action(
            "return",
            LIE_OPS,
            frozenset(),
            _normalise_return,
            _parse_return,
            lambda args: repr(args[0]),
            _fire_return,
            check=_check_return,
        ),
        Action("off", OPS, OPS, fire=_fire_nothing, **_no_args("off")),
        Action(
            "gate",
            OPS,
            OPS,
            _normalise_gate,
            _parse_gate,
            _format_gate,
            _fire_gate,
            when=1,
            whole_process=True,
        ),
        # network faults (op ``net``): they fire in a served queue's proxy (netfaults.py)
        *(
            Action(
                name,
                _net.NET_OPS,
                _net.NET_OPS,
                getattr(_net, f"normalise_{name}"),
                getattr(_net, f"parse_{name}"),
                getattr(_net, f"format_{name}"),
                _net.fire_never,
            )
            for name in _net.NET_ACTIONS
        ),
    )
}

#: Every action, in documentation order.
ACTIONS: Final[tuple[str, ...]] = tuple(REGISTRY)
ACTION_NAMES: Final = ", ".join(ACTIONS)


def action(name: str) -> Action:
    """The entry of action ``name`` (a FaultSpecError naming the known ones if none)."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise FaultSpecError(f"unknown action {name!r} (expected one of: {ACTION_NAMES})")
    return entry
