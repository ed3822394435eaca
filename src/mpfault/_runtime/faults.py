"""Fault plans: which queue operations misbehave, how, and their text form.

A fault is plain data: a frozen, picklable :class:`Fault` that says *what* happens
(the action: ``delay``, ``drop``, ``kill`` ...) and *when* (the selectors: which
queue operation, in which process, on which call, how often, for which item).
Faults are built with the constructors of this module (:func:`drop`,
:func:`delay` ...) or parsed from text with :func:`parse`; ``str(fault)`` gives the
canonical text, and ``parse(str(fault)) == [fault]`` holds for every fault.

The text grammar is modelled on FreeBSD's fail(9) and the fail-rs crate::

    specs  := spec ( ';' | newline ) spec ...    blank entries and '#' comment lines are ignored
    spec   := [ target ':' ] terms
    target := [op] ['@' who] ['#' nth] ['==' item]
    nth    := part ( ',' part )*                 part := N | N '..' M | N '..'   (1-based)
    terms  := term ( '->' term )*
    term   := [pct '%'] [cnt '*'] action ['(' args ')']

Examples::

    put#3:drop                    drop the 3rd item put
    put==None:drop                drop the sentinel
    get:20%delay(1ms..20ms)       one get in five sleeps 1 to 20 ms first
    put@producer-*#5:kill(after)  producers SIGKILL themselves right after their 5th put
    put:2*delay(10ms)->full       the first two puts are slow, then the queue is "full"
    empty:return(False)           empty() lies
    put_nowait#2..4:raise(ValueError:boom)
    *@consumer-*:pause(200ms)     consumers are stopped for 200 ms on every operation
    put:gate(g1,after)            after a put, the process waits until the test opens gate g1

A comment line starts with ``#`` not followed by a digit (``#3:drop`` is a spec:
the third call of the fault's default operations).  Durations are seconds with an
optional unit (``ns``, ``us``, ``ms``, ``s``); ``delay(a..b)`` sleeps uniformly
between ``a`` and ``b``.  Items and ``return`` values are Python literals; a ``who``
pattern or an exception message that is not a plain word may be written as a Python
string literal (``put@'my worker':drop``, ``raise(ValueError:'a (b)')``).

This module runs in child processes: it uses the standard library only.
"""

from __future__ import annotations

import ast
import builtins
import decimal
import enum
import importlib
import math
import queue
import re
import signal as _signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any, Final, TypeAlias

from .events import OPS as _EVENT_OPS

__all__ = [
    "ACTIONS",
    "ANY",
    "GET_OPS",
    "OPS",
    "PUT_OPS",
    "Fault",
    "FaultSpecError",
    "chain",
    "delay",
    "drop",
    "duplicate",
    "empty",
    "exit",
    "format_plan",
    "full",
    "gate",
    "kill",
    "off",
    "parse",
    "pause",
    "raise_",
    "return_",
]


class _AnyItem(enum.Enum):
    """Type of :data:`ANY` (an enum member, so pickling keeps it a singleton)."""

    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


#: The item selector meaning "any item" (the default).  ``item=None`` means
#: "only when the item is None".
ANY: Final = _AnyItem.ANY

# ---------------------------------------------------------------------------------------------
# Operations and actions

#: The queue operations, in the order of the event log's op codes.
_OP_ORDER: Final[tuple[str, ...]] = _EVENT_OPS[1:]

#: Every queue operation a fault can apply to.
OPS: Final[frozenset[str]] = frozenset(_OP_ORDER)
#: The operations that put an item (selected by ``op="put"``).
PUT_OPS: Final[frozenset[str]] = frozenset({"put", "put_nowait"})
#: The operations that get an item (selected by ``op="get"``).
GET_OPS: Final[frozenset[str]] = frozenset({"get", "get_nowait"})

_LIE_OPS: Final[frozenset[str]] = frozenset({"qsize", "empty", "full"})

# What an ``op`` selector selects, before the action's applicability is applied.
_SELECTS: Final[dict[str, frozenset[str]]] = {
    "*": OPS,
    "put": PUT_OPS,
    "get": GET_OPS,
    **{op: frozenset({op}) for op in _OP_ORDER if op not in ("put", "get")},
}
_OP_SELECTOR_NAMES: Final = ", ".join((*_OP_ORDER, "*"))

#: Every action, in documentation order.
ACTIONS: Final[tuple[str, ...]] = (
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
)
_ACTION_NAMES: Final = ", ".join(ACTIONS)

# The operations each action can apply to, and those it applies to when no op is given.
_APPLIES: Final[dict[str, frozenset[str]]] = {
    "delay": OPS,
    "full": PUT_OPS,
    "empty": GET_OPS,
    "drop": PUT_OPS | GET_OPS,
    "duplicate": PUT_OPS,
    "kill": OPS,
    "exit": OPS,
    "pause": OPS,
    "raise": OPS,
    "return": _LIE_OPS,
    "off": OPS,
    "gate": OPS,
}
_DEFAULT_OPS: Final[dict[str, frozenset[str]]] = {
    **_APPLIES,
    "drop": PUT_OPS,
    "return": frozenset(),
}

_WHENS: Final = ("before", "after")
_MAX_COUNT: Final = 2**63 - 1  # counters are int64
_DEFAULT_SIGNAL: Final = int(_signal.SIGKILL)

#: What ``nth=`` accepts: a call index, a ``range`` (step 1), an iterable of call
#: indexes and ``(lo, hi)`` intervals (``hi`` None: open), or None (every call).
NthSelector: TypeAlias = "int | range | Iterable[int | tuple[int, int | None]] | None"
_Nth: TypeAlias = "tuple[tuple[int, int | None], ...]"


class FaultSpecError(ValueError):
    """A fault, or fault spec text, is invalid.

    The message is one line.  For text given to :func:`parse` it names the source and
    the offending spec: ``bad fault spec 'put:dorp' from --mpfault: unknown action
    'dorp' (expected one of: ...)``.  ``reason`` is the part after the colon; ``spec``
    and ``source`` are None for faults built in Python.
    """

    def __init__(self, reason: str, spec: str | None = None, source: str | None = None) -> None:
        reason = " ".join(reason.splitlines())
        self.reason = reason
        self.spec = spec
        self.source = source
        if spec is not None:
            shown = spec if len(spec) <= 200 else spec[:200] + "..."
            reason_in_spec = f"bad fault spec {shown!r} from {source}: {reason}"
            super().__init__(reason_in_spec)
        else:
            super().__init__(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.spec, self.source))


# ---------------------------------------------------------------------------------------------
# The data model


@dataclass(frozen=True)
class Fault:
    """One fault of a plan: an action, the operations it applies to, and a chain.

    Build faults with the constructors (:func:`drop`, :func:`delay`, ...,
    :func:`chain`) or :func:`parse`; constructing ``Fault`` directly is also validated
    and normalised.  Faults are immutable, compare and hash by value, pickle with the
    standard pickle, and ``str(fault)`` is the canonical spec text.

    Fields:

    ``action``
        One of :data:`ACTIONS`.
    ``args``
        The action's normalised arguments (see the constructors): ``delay``
        ``(seconds, jitter)``, ``kill`` ``(when, signal)``, ``exit`` ``(code, when)``,
        ``pause`` ``(seconds,)``, ``raise`` ``(module, qualname, message)``, ``return``
        ``(value,)``, ``gate`` ``(name, when)``, the others ``()``.
    ``op``
        The operation selector: an operation (``put`` also selects ``put_nowait``,
        ``get`` also selects ``get_nowait``), ``*`` (every operation the action applies
        to) or None (the action's default operations: puts for ``drop``, ``full`` and
        ``duplicate``, gets for ``empty``, every operation for the others).
    ``who``
        An :func:`fnmatch.fnmatchcase` pattern on the process name, or None (any).
    ``nth``
        1-based call-index intervals ``((lo, hi), ...)`` (``hi`` None: no end), sorted
        and merged; the calls counted are the matching ones.  None: every call.
    ``times``
        Fire at most this many times.  None: no limit.
    ``prob``
        Fire with this probability, in (0, 1].  None: always.
    ``item``
        Fire only on puts of an item equal to this literal; :data:`ANY` for any item.
    ``next``
        The rest of a chain (``->``): once this term has fired ``times`` times, the
        next term applies.  Selectors other than ``times`` and ``prob`` live on the
        first term only; the terms after it describe actions.
    """

    action: str
    args: tuple[Any, ...] = ()
    op: str | None = None
    who: str | None = None
    nth: tuple[tuple[int, int | None], ...] | None = None
    times: int | None = None
    prob: float | None = None
    item: Any = ANY
    next: Fault | None = None

    def __post_init__(self) -> None:
        _normalise_term(self)
        object.__setattr__(self, "_ops", _check_plan(self))

    def __str__(self) -> str:
        target = _format_target(self)
        terms = "->".join(_format_term(term) for term in self.terms())
        return f"{target}:{terms}" if target else terms

    def terms(self) -> Iterator[Fault]:
        """Iterate over the terms of the chain, starting with this fault."""
        term: Fault | None = self
        while term is not None:
            yield term
            term = term.next

    def ops(self) -> frozenset[str]:
        """Return the concrete operations this fault can fire on.

        The ``op`` selector resolved against the actions of every term of the chain,
        and restricted to put operations when an item selector is set.  Terms after the
        first of a chain select nothing: their ``ops()`` is empty.
        """
        ops: frozenset[str] = self.__dict__["_ops"]
        return ops

    def matches(self, op: str, process: str, item: object, has_item: bool) -> bool:
        """Tell whether an operation is selected by ``op``, ``who`` and ``item``.

        ``process`` is the process name; ``item`` is the item put when ``has_item`` is
        true.  Counting (``nth``, ``times``) and ``prob`` are left to the caller.
        """
        if op not in self.__dict__["_ops"]:
            return False
        who = self.who
        if who is not None and not fnmatchcase(process, who):
            return False
        wanted = self.item
        if wanted is ANY:
            return True
        if not has_item:
            return False
        try:
            return bool(item == wanted)
        except Exception:
            return False

    def nth_contains(self, n: int) -> bool:
        """Tell whether the ``n``-th (1-based) matching call is selected by ``nth``."""
        nth = self.nth
        if nth is None:
            return True
        for lo, hi in nth:
            if n < lo:
                return False
            if hi is None or n <= hi:
                return True
        return False

    @property
    def needs_counter(self) -> bool:
        """True if some term of the chain has ``nth`` or ``times`` (calls must be counted)."""
        return any(term.nth is not None or term.times is not None for term in self.terms())

    def make_exception(self) -> BaseException:
        """Return the exception a ``raise`` fault raises (a new instance each call)."""
        if self.action != "raise":
            raise TypeError(f"fault {str(self)!r} does not raise an exception")
        module, qualname, message = self.args
        cls = _exception_class(module, qualname)
        return cls(message) if message else cls()


# ---------------------------------------------------------------------------------------------
# Validation and normalisation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_literal(value: object) -> bool:
    """True for values whose repr reads back equal with ast.literal_eval (and hashable)."""
    kind = type(value)
    if isinstance(value, int) and kind is int:
        return value.bit_length() <= 10_000  # str() of larger ints is refused
    if value is None or kind in (bool, str, bytes):
        return True
    if isinstance(value, float) and kind is float:
        return math.isfinite(value)
    if isinstance(value, tuple) and kind is tuple:
        return all(_is_literal(part) for part in value)
    return False


_LITERAL_KINDS: Final = "None, bool, int, float, str, bytes or a tuple of these"


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


def _when(action: str, value: object) -> str:
    if value not in _WHENS:
        raise FaultSpecError(f"{action}: when must be 'before' or 'after', got {value!r}")
    return str(value)


def _signal_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _signal.NSIG:
        raise FaultSpecError(
            f"kill: signal must be a signal number in 1..{_signal.NSIG - 1}, got {value!r}"
        )
    return int(value)


def _gate_name(value: object) -> str:
    if not isinstance(value, str) or not _GATE_NAME.fullmatch(value):
        raise FaultSpecError(
            f"gate: name must be letters, digits, '_', '.' or '-' (not starting with"
            f" '.' or '-'), got {value!r}"
        )
    return value


def _arity(action: str, args: tuple[Any, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        if low == high:
            wanted = f"{low} argument{'s' if low != 1 else ''}"
        else:
            wanted = f"{low} to {high} arguments"
        raise FaultSpecError(f"{action} takes {wanted}, got {len(args)}: {args!r}")


def _args_delay(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("delay", args, 1, 2)
    jitter = args[1] if len(args) > 1 else 0.0
    return (_seconds("delay: seconds", args[0]), _seconds("delay: jitter", jitter))


def _args_pause(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("pause", args, 1, 1)
    return (_seconds("pause: seconds", args[0]),)


def _args_kill(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("kill", args, 0, 2)
    when = args[0] if args else "before"
    number = args[1] if len(args) > 1 else _DEFAULT_SIGNAL
    return (_when("kill", when), _signal_number(number))


def _args_exit(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("exit", args, 0, 2)
    code = args[0] if args else 1
    when = args[1] if len(args) > 1 else "before"
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise FaultSpecError(f"exit: code must be an int in 0..255, got {code!r}")
    return (int(code), _when("exit", when))


def _args_raise(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("raise", args, 2, 3)
    module, qualname = args[0], args[1]
    message = args[2] if len(args) > 2 else ""
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise FaultSpecError(
            f"raise: module and qualname must be strings, got {module!r}, {qualname!r}"
        )
    if not isinstance(message, str):
        raise FaultSpecError(f"raise: message must be a string, got {message!r}")
    module, qualname = _exception_name(_exception_class(module, qualname))
    return (module, qualname, message)


def _args_return(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("return", args, 1, 1)
    if not _is_literal(args[0]):
        raise FaultSpecError(f"return: value must be {_LITERAL_KINDS}, got {args[0]!r}")
    return (args[0],)


def _args_gate(args: tuple[Any, ...]) -> tuple[Any, ...]:
    _arity("gate", args, 1, 2)
    when = args[1] if len(args) > 1 else "before"
    return (_gate_name(args[0]), _when("gate", when))


def _no_args(action: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def normalise(args: tuple[Any, ...]) -> tuple[Any, ...]:
        if args:
            raise FaultSpecError(f"{action} takes no arguments, got {args!r}")
        return ()

    return normalise


_ARGS: Final[dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]]] = {
    "delay": _args_delay,
    "full": _no_args("full"),
    "empty": _no_args("empty"),
    "drop": _no_args("drop"),
    "duplicate": _no_args("duplicate"),
    "kill": _args_kill,
    "exit": _args_exit,
    "pause": _args_pause,
    "raise": _args_raise,
    "return": _args_return,
    "off": _no_args("off"),
    "gate": _args_gate,
}


def _nth_pair(element: object) -> tuple[int, int | None]:
    if isinstance(element, int) and not isinstance(element, bool):
        return (int(element), int(element))
    if isinstance(element, tuple) and len(element) == 2:
        lo, hi = element
        if _is_int(lo) and (hi is None or _is_int(hi)):
            return (int(lo), None if hi is None else int(hi))
    raise FaultSpecError(f"nth: expected call indexes (int) or (lo, hi) intervals, got {element!r}")


def _normalise_nth(value: object) -> _Nth | None:
    if value is None:
        return None
    pairs: list[tuple[int, int | None]]
    if _is_int(value):
        pairs = [_nth_pair(value)]
    elif isinstance(value, range):
        if value.step != 1 or not value:
            raise FaultSpecError(f"nth: a range must be non-empty with step 1, got {value!r}")
        pairs = [(value.start, value.stop - 1)]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes, bool)):
        pairs = [_nth_pair(element) for element in value]
        if not pairs:
            raise FaultSpecError("nth: selects no call (empty)")
    else:
        raise FaultSpecError(
            f"nth: expected an int, a range, or call indexes and (lo, hi) intervals, got {value!r}"
        )
    for lo, hi in pairs:
        if lo < 1:
            raise FaultSpecError(f"nth: call indexes start at 1, got {lo}")
        if max(lo, hi or 0) > _MAX_COUNT:
            raise FaultSpecError(f"nth: call indexes end at 2**63-1, got {max(lo, hi or 0)}")
        if hi is not None and hi < lo:
            raise FaultSpecError(f"nth: interval ({lo}, {hi}) is empty")
    merged: list[tuple[int, int | None]] = []
    for lo, hi in sorted(pairs, key=lambda pair: pair[0]):
        if merged:
            last_lo, last_hi = merged[-1]
            if last_hi is None:
                continue
            if lo <= last_hi + 1:
                merged[-1] = (last_lo, None if hi is None else max(last_hi, hi))
                continue
        merged.append((lo, hi))
    return tuple(merged)


def _normalise_term(fault: Fault) -> None:
    """Check and normalise the fields of one term, whatever its place in a chain."""
    action = fault.action
    if action not in _ARGS:
        raise FaultSpecError(f"unknown action {action!r} (expected one of: {_ACTION_NAMES})")
    args = fault.args
    if not isinstance(args, (tuple, list)):
        raise FaultSpecError(f"{action}: args must be a tuple, got {args!r}")
    fields: dict[str, object] = {"args": _ARGS[action](tuple(args))}
    op = fault.op
    if op is not None and op not in _SELECTS:
        raise FaultSpecError(f"unknown op {op!r} (expected one of: {_OP_SELECTOR_NAMES})")
    who = fault.who
    if who is not None and (not isinstance(who, str) or not who):
        raise FaultSpecError(f"who must be a non-empty process name pattern, got {who!r}")
    fields["nth"] = _normalise_nth(fault.nth)
    times = fault.times
    if times is not None and (not _is_int(times) or not 1 <= times <= _MAX_COUNT):
        raise FaultSpecError(f"times must be an int in 1..2**63-1, got {times!r}")
    prob = fault.prob
    if prob is not None:
        if not isinstance(prob, (int, float)) or isinstance(prob, bool) or not 0 < prob <= 1:
            raise FaultSpecError(f"prob must be a number in (0, 1], got {prob!r}")
        fields["prob"] = float(prob)
    if fault.item is not ANY and not _is_literal(fault.item):
        raise FaultSpecError(f"item must be ANY or {_LITERAL_KINDS}, got {fault.item!r}")
    if fault.next is not None and not isinstance(fault.next, Fault):
        raise FaultSpecError(f"next must be a Fault or None, got {fault.next!r}")
    for name, value in fields.items():
        object.__setattr__(fault, name, value)


def _op_label(op: str | None) -> str:
    return "the default ops of this fault" if op is None else f"the ops of {op!r}"


def _check_plan(head: Fault) -> frozenset[str]:
    """Check a fault as the first term of a chain; return the ops it fires on."""
    terms = list(head.terms())
    for term in terms[1:]:
        if (term.op, term.who, term.nth) != (None, None, None) or term.item is not ANY:
            raise FaultSpecError(
                f"only the first term of a chain may have op, who, nth or item selectors,"
                f" not {_format_term(term)!r}"
            )
    for term in terms[:-1]:
        if term.times is None:
            text = _format_term(term)
            raise FaultSpecError(
                f"chain term {text!r} needs a count (like '2*{text}'):"
                f" without one the terms after it never apply"
            )
    returns = [term for term in terms if term.action == "return"]
    if returns and head.op not in _LIE_OPS:
        got = "no op" if head.op is None else f"op {head.op!r}"
        raise FaultSpecError(
            f"return needs op qsize, empty or full (as in empty:return(False)), got {got}"
        )
    for term in returns:
        value = term.args[0]
        if head.op == "qsize" and not _is_int(value):
            raise FaultSpecError(f"return on qsize needs an int, got {value!r}")
        if head.op != "qsize" and type(value) is not bool:
            raise FaultSpecError(f"return on {head.op} needs a bool (True or False), got {value!r}")
    if head.op is None:
        ops = OPS
        for term in terms:
            ops &= _DEFAULT_OPS[term.action]
        if not ops:
            names = ", ".join(term.action for term in terms)
            raise FaultSpecError(f"the actions {names} have no default op in common: give an op")
    elif head.op == "*":
        ops = OPS
        for term in terms:
            ops &= _APPLIES[term.action]
        if not ops:
            names = ", ".join(term.action for term in terms)
            raise FaultSpecError(f"the actions {names} apply to no op in common")
    else:
        ops = _SELECTS[head.op]
        for term in terms:
            applies = _APPLIES[term.action]
            if not ops <= applies:
                raise FaultSpecError(
                    f"action {term.action!r} does not apply to op {head.op!r}"
                    f" (it applies to: {_op_names(applies)})"
                )
    if head.item is not ANY:
        ops &= PUT_OPS
        if not ops:
            raise FaultSpecError(
                f"an item selector (=={head.item!r}) only applies to put ops,"
                f" and {_op_label(head.op)} include none"
            )
    return ops


def _op_names(ops: frozenset[str]) -> str:
    if ops == OPS:
        return "every op"
    return ", ".join(op for op in _OP_ORDER if op in ops)


def _make_tail(
    action: str, args: tuple[Any, ...], times: int | None, prob: float | None, next: Fault | None
) -> Fault:
    """Build a term after the first of a chain (checked later, with its first term)."""
    term = object.__new__(Fault)
    values = {
        "action": action,
        "args": args,
        "op": None,
        "who": None,
        "nth": None,
        "times": times,
        "prob": prob,
        "item": ANY,
        "next": next,
    }
    for name, value in values.items():
        object.__setattr__(term, name, value)
    _normalise_term(term)
    object.__setattr__(term, "_ops", frozenset())
    return term


# ---------------------------------------------------------------------------------------------
# Exceptions by name

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


def _exception_class(module: str, qualname: str) -> type[BaseException]:
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


def _exception_name(cls: type[BaseException]) -> tuple[str, str]:
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
            obj = getattr(queue, name)
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
        return _exception_class(module, qualname)
    raise unknown


# ---------------------------------------------------------------------------------------------
# Constructors


def _build(
    action: str,
    args: tuple[Any, ...],
    op: str | None,
    who: str | None,
    nth: NthSelector,
    times: int | None,
    prob: float | None,
    item: object,
) -> Fault:
    return Fault(
        action,
        args,
        op=op,
        who=who,
        nth=nth,  # type: ignore[arg-type]  # normalised by Fault.__post_init__
        times=times,
        prob=prob,
        item=item,
    )


def delay(
    seconds: float,
    jitter: float = 0.0,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Sleep before the operation, uniformly between ``seconds`` and ``seconds + jitter``.

    Applies to every operation (spec: ``delay(10ms)``, ``delay(1ms..20ms)``).

    The selector keywords, common to every constructor: ``op`` (an operation, ``put``
    or ``get`` for both their blocking and ``_nowait`` forms, ``*``, or None for the
    action's default operations), ``who`` (fnmatch pattern on the process name),
    ``nth`` (1-based call index, ``range``, or iterable of indexes and ``(lo, hi)``
    intervals), ``times`` (fire at most this often), ``prob`` (fire with this
    probability, in (0, 1]) and ``item`` (fire only on puts of an item equal to this
    literal; :data:`ANY` by default).
    """
    return _build("delay", (seconds, jitter), op, who, nth, times, prob, item)


def full(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make a put raise :class:`queue.Full`, as if the queue were full (spec: ``full``).

    Applies to put operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("full", (), op, who, nth, times, prob, item)


def empty(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make a get raise :class:`queue.Empty`, as if the queue were empty (spec: ``empty``).

    Applies to get operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("empty", (), op, who, nth, times, prob, item)


def drop(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Lose the item (spec: ``drop``).

    On a put, the put returns normally but nothing is enqueued; on a get (``op="get"``),
    the item got is discarded.  Applies to puts (the default) and gets.  Selector
    keywords: see :func:`delay`.
    """
    return _build("drop", (), op, who, nth, times, prob, item)


def duplicate(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Put the item twice (spec: ``duplicate``).

    Applies to put operations only.  Selector keywords: see :func:`delay`.
    """
    return _build("duplicate", (), op, who, nth, times, prob, item)


def kill(
    when: str = "before",
    signal: int = _signal.SIGKILL,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the calling process kill itself with ``signal``, right before or after the op.

    Spec: ``kill``, ``kill(after)``, ``kill(after,SIGTERM)``.  Applies to every
    operation.  Selector keywords: see :func:`delay`.
    """
    return _build("kill", (when, signal), op, who, nth, times, prob, item)


def exit(
    code: int = 1,
    when: str = "before",
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the calling process end with :func:`os._exit` ``(code)``, before or after the op.

    Spec: ``exit``, ``exit(3)``, ``exit(3,after)``.  ``code`` is in 0..255.  Applies to
    every operation.  Selector keywords: see :func:`delay`.
    """
    return _build("exit", (code, when), op, who, nth, times, prob, item)


def pause(
    seconds: float,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Stop the whole calling process (SIGSTOP) for ``seconds``, then resume it.

    Spec: ``pause(200ms)``.  Applies to every operation.  Selector keywords: see
    :func:`delay`.
    """
    return _build("pause", (seconds,), op, who, nth, times, prob, item)


def raise_(
    exc: type[BaseException] | BaseException,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the operation raise ``exc`` (an exception class, or an instance for its message).

    The class is stored by module and qualified name, so it must be importable as such
    (not defined inside a function); an instance contributes its message (its single
    string argument, else ``str(exc)``).  Spec: ``raise(ValueError)``,
    ``raise(ValueError:boom)``, ``raise(queue.Full)``, ``raise(mypkg.errors.Oops:msg)``.
    Applies to every operation.  Selector keywords: see :func:`delay`.
    """
    if isinstance(exc, BaseException):
        cls: type[BaseException] = type(exc)
        if not exc.args:
            message = ""
        elif len(exc.args) == 1 and isinstance(exc.args[0], str):
            message = exc.args[0]
        else:
            message = str(exc)
    elif isinstance(exc, type) and issubclass(exc, BaseException):
        cls, message = exc, ""
    else:
        raise FaultSpecError(f"raise: expected an exception class or instance, got {exc!r}")
    module, qualname = _exception_name(cls)
    return _build("raise", (module, qualname, message), op, who, nth, times, prob, item)


def return_(
    value: object,
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Make the operation return ``value`` without calling the queue: make it lie.

    Applies to ``qsize`` (an int), ``empty`` and ``full`` (a bool), and needs that op
    (spec: ``empty:return(False)``, ``qsize:return(0)``).  Selector keywords: see
    :func:`delay`.
    """
    return _build("return", (value,), op, who, nth, times, prob, item)


def off(
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Do nothing (spec: ``off``); useful in chains: ``put:2*off->drop``.

    Applies to every operation.  Selector keywords: see :func:`delay`.
    """
    return _build("off", (), op, who, nth, times, prob, item)


def gate(
    name: str,
    when: str = "before",
    *,
    op: str | None = None,
    who: str | None = None,
    nth: NthSelector = None,
    times: int | None = None,
    prob: float | None = None,
    item: object = ANY,
) -> Fault:
    """Stop the calling process, before or after the op, until the test opens gate ``name``.

    ``name`` is letters, digits, ``_``, ``.`` and ``-``.  Spec: ``gate(g1)``,
    ``put:gate(g1,after)``.  Applies to every operation.  Selector keywords: see
    :func:`delay`.
    """
    return _build("gate", (name, when), op, who, nth, times, prob, item)


def chain(first: Fault, *rest: Fault) -> Fault:
    """Chain faults (spec: ``->``): each term applies once the previous one is exhausted.

    Every term but the last needs ``times`` (``chain(off(times=2), drop())`` is
    ``2*off->drop``: the first two puts pass, the following ones are dropped).  The
    selectors ``op``, ``who``, ``nth`` and ``item`` belong to the first term; a later
    term may only repeat the first term's ``op`` (``return_`` needs one).  Every action
    of the chain must apply to the chain's operations.  Chains given as terms are
    flattened.
    """
    terms = [term for fault in (first, *rest) for term in fault.terms()]
    head = terms[0]
    for term in terms[1:]:
        if term.op not in (None, head.op) or term.who is not None or term.nth is not None:
            raise FaultSpecError(
                f"chain: only the first term may have op, who or nth selectors, not {str(term)!r}"
            )
        if term.item is not ANY:
            raise FaultSpecError(
                f"chain: only the first term may have an item selector, not {str(term)!r}"
            )
    tail: Fault | None = None
    for term in reversed(terms[1:]):
        tail = _make_tail(term.action, term.args, term.times, term.prob, tail)
    return Fault(
        head.action,
        head.args,
        op=head.op,
        who=head.who,
        nth=head.nth,
        times=head.times,
        prob=head.prob,
        item=head.item,
        next=tail,
    )


# ---------------------------------------------------------------------------------------------
# Text form: formatting

_DECIMAL: Final = decimal.Context(prec=1000)  # exact for sums of float reprs
_BARE_WHO: Final = re.compile(r"[^\s#=@'\"():;,\\]+")
_BARE_MESSAGE: Final = re.compile(r"[^'\"()\\]+")
_GATE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _float_decimal(value: float) -> Decimal:
    return Decimal(repr(value))  # the shortest decimal that reads back as value


def _shift(value: Decimal, places: int) -> Decimal:
    """Multiply by 10**places, exactly."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return Decimal((sign, digits, exponent + places))


def _format_decimal(value: Decimal) -> str:
    """Shortest plain (or, for extreme magnitudes, scientific) text for a finite decimal."""
    sign, digit_tuple, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    if digits == [0]:
        return "0"
    text = "".join(map(str, digits))
    prefix = "-" if sign else ""
    point = len(text) + exponent
    if 0 <= exponent <= 6:
        return prefix + text + "0" * exponent
    if exponent < 0 < point:
        return f"{prefix}{text[:point]}.{text[point:]}"
    if exponent < 0 and point > -6:
        return f"{prefix}0.{'0' * -point}{text}"
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{prefix}{mantissa}e{point - 1}"


def _format_duration_decimal(seconds: Decimal) -> str:
    if seconds == 0:
        return "0s"
    if seconds >= 1:
        return _format_decimal(seconds) + "s"
    if seconds >= Decimal("0.001"):
        return _format_decimal(_shift(seconds, 3)) + "ms"
    return _format_decimal(_shift(seconds, 6)) + "us"


def _format_duration(seconds: float) -> str:
    return _format_duration_decimal(_float_decimal(seconds))


def _format_signal(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)


def _format_text(text: str, bare: re.Pattern[str]) -> str:
    if text and text.isprintable() and text == text.strip() and bare.fullmatch(text):
        return text
    return repr(text)


def _format_args(term: Fault) -> str:
    action, args = term.action, term.args
    if action == "delay":
        seconds, jitter = args
        if jitter == 0:
            return _format_duration(seconds)
        low = _float_decimal(seconds)
        high = _DECIMAL.add(low, _float_decimal(jitter))
        return f"{_format_duration_decimal(low)}..{_format_duration_decimal(high)}"
    if action == "pause":
        return _format_duration(args[0])
    if action == "kill":
        when, number = args
        parts = [] if when == "before" else [when]
        if number != _DEFAULT_SIGNAL:
            parts.append(_format_signal(number))
        return ",".join(parts)
    if action == "exit":
        code, when = args
        parts = [] if code == 1 else [str(code)]
        if when != "before":
            parts.append(when)
        return ",".join(parts)
    if action == "raise":
        module, qualname, message = args
        name = qualname if module == "builtins" else f"{module}.{qualname}"
        return f"{name}:{_format_text(message, _BARE_MESSAGE)}" if message else name
    if action == "return":
        return repr(args[0])
    if action == "gate":
        name, when = args
        return name if when == "before" else f"{name},{when}"
    return ""


def _format_term(term: Fault) -> str:
    text = ""
    if term.prob is not None:
        text += _format_decimal(_shift(_float_decimal(term.prob), 2)) + "%"
    if term.times is not None:
        text += f"{term.times}*"
    args = _format_args(term)
    return f"{text}{term.action}({args})" if args else f"{text}{term.action}"


def _format_nth(nth: _Nth) -> str:
    parts = []
    for lo, hi in nth:
        if hi is None:
            parts.append(f"{lo}..")
        elif hi == lo:
            parts.append(str(lo))
        else:
            parts.append(f"{lo}..{hi}")
    return ",".join(parts)


def _format_target(fault: Fault) -> str:
    text = fault.op or ""
    if fault.who is not None:
        text += "@" + _format_text(fault.who, _BARE_WHO)
    if fault.nth is not None:
        text += "#" + _format_nth(fault.nth)
    if fault.item is not ANY:
        text += "==" + repr(fault.item)
    return text


def format_plan(faults: Iterable[Fault]) -> str:
    """Return the specs of ``faults`` joined with ``'; '`` (:func:`parse` reads it back)."""
    return "; ".join(str(fault) for fault in faults)


# ---------------------------------------------------------------------------------------------
# Text form: parsing

_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DURATION: Final = re.compile(rf"({_NUMBER})\s*(ns|us|µs|μs|ms|s)?", re.ASCII)
_UNIT_PLACES: Final = {None: 0, "s": 0, "ms": -3, "us": -6, "µs": -6, "μs": -6, "ns": -9}
_OP_NAME: Final = re.compile(r"\*|[A-Za-z_][A-Za-z0-9_]*")
_NTH_PART: Final = re.compile(r"\s*([0-9]+)(?:\s*(\.\.)\s*([0-9]+)?)?\s*", re.ASCII)
_TERM_HEAD: Final = re.compile(
    rf"\s*(?:({_NUMBER})\s*%\s*)?(?:([0-9]+)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*", re.ASCII
)
_EXCEPTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_CODE: Final = re.compile(r"[0-9]+", re.ASCII)
_DURATION_HINT: Final = "a duration like 10ms, 1.5s, 200us or 2"


class _Syntax(Exception):
    """A parse error inside one spec (turned into FaultSpecError with the spec)."""


def _string_end(text: str, start: int) -> int | None:
    """Index just after the string literal whose quote is at ``start``; None if unterminated."""
    quote = text[start]
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
        elif char == quote:
            return index + 1
        else:
            index += 1
    return None


def _skip_string(text: str, start: int) -> int:
    """Like _string_end, but an unterminated literal runs to the end of the text."""
    end = _string_end(text, start)
    return len(text) if end is None else end


def _top_level(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) of the characters outside parentheses and string literals."""
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char in "'\"":
            index = _skip_string(text, index)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            yield index, char
        index += 1


def _split_top(text: str, separator: str) -> list[str]:
    parts, start = [], 0
    for index, char in _top_level(text):
        if char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _entries(text: str) -> Iterator[str]:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped[1:2] not in tuple("0123456789"):
            continue
        for entry in _split_top(stripped, ";"):
            entry = entry.strip()
            if entry:
                yield entry


def _parse_literal(text: str, what: str) -> Any:
    try:
        return ast.literal_eval(text)
    except Exception:
        raise _Syntax(f"{what} must be a Python literal like None, 3 or 'x', got {text!r}")


def _parse_name_text(text: str, what: str, bare: re.Pattern[str]) -> str:
    """A who pattern or message: a Python string literal, or bare text."""
    if text[:1] in ("'", '"'):
        value = _parse_literal(text, what)
        if not isinstance(value, str):
            raise _Syntax(f"{what} must be a string, got {text!r}")
        return value
    if not bare.fullmatch(text):
        raise _Syntax(f"{what} {text!r} needs quotes (write it as a Python string literal)")
    return text


def _parse_decimal(text: str, places: int = 0) -> Decimal:
    """The number ``text`` (matched by _NUMBER) times 10**places, exactly."""
    try:
        return _shift(Decimal(text), places)
    except decimal.DecimalException:  # an exponent beyond what decimal supports
        raise _Syntax(f"number {text!r} is out of range")


def _parse_int(text: str, what: str) -> int:
    if len(text) > 19:
        raise _Syntax(f"{what} {text[:19]}... is too large")
    return int(text)


def _finite(value: Decimal, what: str, text: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise _Syntax(f"{what}: {text.strip()!r} is too large")
    return number


def _parse_duration_decimal(text: str, what: str) -> Decimal:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise _Syntax(f"{what}: expected {_DURATION_HINT}, got {text.strip()!r}")
    return _parse_decimal(match.group(1), _UNIT_PLACES[match.group(2)])


def _parse_args(action: str, text: str | None) -> tuple[Any, ...]:
    if text is None or not text.strip():
        if action in ("delay", "pause"):
            raise _Syntax(f"{action} needs {_DURATION_HINT}, as in {action}(10ms)")
        if action == "gate":
            raise _Syntax("gate needs a name, as in gate(g1)")
        if action == "return":
            raise _Syntax("return needs a value, as in empty:return(False)")
        if action == "raise":
            raise _Syntax("raise needs an exception, as in raise(ValueError:boom)")
        return ()
    if action == "return":
        return (_parse_literal(text.strip(), "return value"),)
    if action == "raise":
        name, colon, message = text.partition(":")
        name = name.strip()
        if not _EXCEPTION_NAME.fullmatch(name):
            raise _Syntax(
                f"raise needs an exception name like ValueError or module.Name, got {name!r}"
            )
        cls = _resolve_exception(name)
        module, qualname = _exception_name(cls)
        message = message.strip()
        if colon and not message:
            raise _Syntax(f"raise({name}:) has an empty message")
        if message:
            message = _parse_name_text(message, "raise message", _BARE_MESSAGE)
        return (module, qualname, message)
    parts = [part.strip() for part in _split_top(text, ",")]
    if "" in parts:
        raise _Syntax(f"{action}({text}) has an empty argument")
    if action in ("delay", "pause"):
        low_text, dots, high_text = parts[0].partition("..")
        if len(parts) != 1 or (dots and action == "pause"):
            wanted = "a duration or a range like 1ms..20ms" if action == "delay" else "one duration"
            raise _Syntax(f"{action} takes {wanted}, got {text.strip()!r}")
        low = _parse_duration_decimal(low_text, action)
        seconds = _finite(low, action, low_text)
        if not dots:
            return (seconds,) if action == "pause" else (seconds, 0.0)
        high = _parse_duration_decimal(high_text, "delay upper bound")
        if high < low:
            raise _Syntax(
                f"delay range {parts[0]!r} ends before it starts"
                f" (each bound has its own unit; a bare number is seconds)"
            )
        try:
            jitter = _DECIMAL.subtract(high, low)
        except decimal.DecimalException:
            raise _Syntax(f"delay range {parts[0]!r} is too large")
        return (seconds, _finite(jitter, "delay range", parts[0]))
    if action == "kill":
        when: str | None = None
        number: int | None = None
        for part in parts:
            if part in _WHENS and when is None:
                when = part
            elif part not in _WHENS and number is None:
                number = _parse_signal(part)
            else:
                raise _Syntax(
                    f"kill takes at most one of before/after and one signal, got {text!r}"
                )
        return (when or "before", _DEFAULT_SIGNAL if number is None else number)
    if action == "exit":
        when = None
        code: int | None = None
        for part in parts:
            if part in _WHENS and when is None:
                when = part
            elif _CODE.fullmatch(part) and code is None:
                code = _parse_int(part, "exit code")
            else:
                raise _Syntax(
                    f"exit takes an exit code 0..255 and/or before/after, got {text.strip()!r}"
                )
        return (1 if code is None else code, when or "before")
    if action == "gate":
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in _WHENS):
            raise _Syntax(f"gate takes a name and optionally before/after, got {text.strip()!r}")
        return tuple(parts)
    raise _Syntax(f"{action} takes no arguments, got ({text})")


def _parse_signal(text: str) -> int:
    if _CODE.fullmatch(text):
        return _parse_int(text, "signal")
    members = _signal.Signals.__members__
    name = text.upper()
    if name not in members:
        name = "SIG" + name
    if name not in members:
        raise _Syntax(
            f"unknown signal {text!r} (expected a name like SIGTERM or KILL, or a number)"
        )
    return int(members[name])


def _parse_nth(text: str) -> _Nth:
    pairs: list[tuple[int, int | None]] = []
    for part in text.split(","):
        match = _NTH_PART.fullmatch(part)
        if not match:
            raise _Syntax(
                f"nth must be N, N..M, N.. or a list of those like 1,3,5.. (1-based), got {text!r}"
            )
        lo = _parse_int(match.group(1), "nth call index")
        hi = _parse_int(match.group(3), "nth call index") if match.group(3) else None
        hi = hi if hi is not None or match.group(2) else lo
        if lo < 1:
            raise _Syntax(f"nth call indexes start at 1, got {text!r}")
        if hi is not None and hi < lo:
            raise _Syntax(f"nth range {part.strip()!r} is empty")
        pairs.append((lo, hi))
    return _normalise_nth(pairs) or ()


def _parse_target(text: str) -> dict[str, Any]:
    selectors: dict[str, Any] = {}
    text = text.strip()
    index = 0
    match = _OP_NAME.match(text)
    if match:
        op = match.group()
        if op not in _SELECTS:
            raise _Syntax(f"unknown op {op!r} (expected one of: {_OP_SELECTOR_NAMES})")
        selectors["op"] = op
        index = match.end()
    rest = text[index:].lstrip()
    if rest.startswith("@"):
        rest = rest[1:].lstrip()
        if rest[:1] in ("'", '"'):
            end = _skip_string(rest, 0)
        else:
            found = re.match(r"[^\s#=]*", rest)
            end = found.end() if found else 0
        if end == 0:
            raise _Syntax("expected a process name pattern after '@'")
        selectors["who"] = _parse_name_text(rest[:end], "who", _BARE_WHO)
        rest = rest[end:].lstrip()
    if rest.startswith("#"):
        end = rest.find("==")
        end = len(rest) if end < 0 else end
        selectors["nth"] = _parse_nth(rest[1:end])
        rest = rest[end:]
    if rest.startswith("=="):
        item_text = rest[2:].strip()
        if not item_text:
            raise _Syntax("expected an item literal after '=='")
        selectors["item"] = _parse_literal(item_text, "item")
        rest = ""
    if rest:
        raise _Syntax(
            f"unexpected {rest!r} in the target (expected op[@who][#nth][==item] before ':')"
        )
    return selectors


def _parse_terms(text: str) -> list[tuple[str, tuple[Any, ...], int | None, float | None]]:
    terms: list[tuple[str, tuple[Any, ...], int | None, float | None]] = []
    index = 0
    while True:
        match = _TERM_HEAD.match(text, index)
        if not match:
            rest = text[index:].strip()
            got = repr(rest) if rest else "nothing"
            where = "after '->'" if terms else "(an action with optional pct% and cnt*)"
            raise _Syntax(f"expected a term like drop, 2*delay(10ms) or 50%full {where}, got {got}")
        pct, count, action = match.groups()
        if action not in _ARGS:
            hint = f"; a spec is op:action, as in {action}:drop" if action in _SELECTS else ""
            raise _Syntax(f"unknown action {action!r} (expected one of: {_ACTION_NAMES}){hint}")
        prob = None
        if pct is not None:
            prob_decimal = _parse_decimal(pct, -2)
            prob = float(prob_decimal)
            if not (0 < prob_decimal <= 1 and prob > 0):
                raise _Syntax(f"a probability must be above 0% and at most 100%, got {pct}%")
        times = None
        if count is not None:
            times = _parse_int(count, "count")
            if times < 1:
                raise _Syntax(f"a count must be at least 1, got {count}*")
        index = match.end()
        args_text = None
        if text.startswith("(", index):
            close = None
            depth = 0
            position = index
            while position < len(text):
                char = text[position]
                if char in "'\"":
                    position = _skip_string(text, position)
                    continue
                if char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth == 0:
                        close = position
                        break
                position += 1
            if close is None:
                raise _Syntax(f"unclosed '(' after {action}")
            args_text = text[index + 1 : close]
            index = close + 1
        terms.append((action, _parse_args(action, args_text), times, prob))
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return terms
        if not text.startswith("->", index):
            raise _Syntax(
                f"unexpected {text[index:]!r} after {action} (expected '->' or the end of the spec)"
            )
        index += 2


def _check_quotes(spec: str) -> None:
    index = 0
    while index < len(spec):
        if spec[index] in "'\"":
            end = _string_end(spec, index)
            if end is None:
                raise _Syntax(f"unterminated string literal {spec[index:]!r}")
            index = end
        else:
            index += 1


def _parse_spec(spec: str) -> Fault:
    _check_quotes(spec)
    colon = next((index for index, char in _top_level(spec) if char == ":"), -1)
    selectors = _parse_target(spec[:colon]) if colon >= 0 else {}
    terms = _parse_terms(spec[colon + 1 :])
    tail: Fault | None = None
    for action, args, times, prob in reversed(terms[1:]):
        tail = _make_tail(action, args, times, prob, tail)
    action, args, times, prob = terms[0]
    return Fault(action, args, times=times, prob=prob, next=tail, **selectors)


def parse(text: str, source: str = "string") -> list[Fault]:
    """Parse fault specs (see the module documentation for the grammar).

    ``text`` holds specs separated by ``;`` or newlines; blank entries and comment
    lines are ignored.  ``source`` names where the text comes from (an option, an ini
    key, a marker) in error messages.  Raises :class:`FaultSpecError`, one line naming
    the source and the spec, on any syntax or semantic error.
    """
    if not isinstance(text, str):
        raise TypeError(f"fault specs must be a str, got {type(text).__name__}")
    faults = []
    for spec in _entries(text):
        try:
            faults.append(_parse_spec(spec))
        except (_Syntax, FaultSpecError) as error:
            reason = error.reason if isinstance(error, FaultSpecError) else str(error)
            raise FaultSpecError(reason, spec, source) from None
    return faults
