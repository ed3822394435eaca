"""The fault data model: :class:`Fault`, a frozen, picklable value, and its validation.

A fault says *what* happens (the action, an entry of :mod:`.actions`) and *when* (the
selectors: which queue operation, in which process, on which call, how often, for
which item).  Constructing a ``Fault`` checks and normalises it; ``str(fault)`` is its
canonical spec text (:mod:`.grammar`, loaded on first use).

Standard library only (this module runs in child processes, to unpickle plans).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, TypeAlias

from .actions import (
    GET_OPS,
    LITERAL_KINDS,
    MAX_COUNT,
    OP_ORDER,
    OPS,
    PUT_OPS,
    exception_class,
    is_int,
    is_literal,
)
from .actions import (
    action as action_entry,
)
from .errors import FaultSpecError
from .netfaults import NET_OPS

__all__ = ["ANY", "GET_OPS", "OPS", "PUT_OPS", "Fault", "NthSelector", "make_tail"]


class _AnyItem(enum.Enum):
    """Type of :data:`ANY` (an enum member, so pickling keeps it a singleton)."""

    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


#: The item selector meaning "any item" (the default).  ``item=None`` means
#: "only when the item is None".
ANY: Final = _AnyItem.ANY


# What an ``op`` selector selects, before the action's applicability is applied.
SELECTS: Final[dict[str, frozenset[str]]] = {
    "*": OPS,
    "put": PUT_OPS,
    "get": GET_OPS,
    # gets counted when they return an item (not when they begin: a poll that ends in
    # Empty, or a get still blocked, is not "the 3rd task"); the actions act after them
    "got": GET_OPS,
    **{op: frozenset({op}) for op in OP_ORDER if op not in ("put", "get")},
    "net": NET_OPS,  # a served queue's network (mpfault._runtime.netfaults); not in "*"
}
OP_SELECTOR_NAMES: Final = ", ".join((*OP_ORDER, "got", "*", "net"))
#: the actions (and their ``when``) a ``got`` fault may have: after the get returned
_AFTER_ONLY: Final = frozenset({"kill", "exit", "gate", "off"})

#: What ``nth=`` accepts: a call index, a ``range`` (step 1), an iterable of call
#: indexes and ``(lo, hi)`` intervals (``hi`` None: open), or None (every call).
NthSelector: TypeAlias = "int | range | Iterable[int | tuple[int, int | None]] | None"
Nth: TypeAlias = "tuple[tuple[int, int | None], ...]"


def _format_term(term: Fault) -> str:
    from .grammar import format_term

    return format_term(term)


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
        from .grammar import format_fault

        return format_fault(self)

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

    @property
    def completed(self) -> bool:
        """True for a ``got`` fault: gets are counted, and it acts, when they return."""
        return self.op == "got"

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
        cls = exception_class(module, qualname)
        return cls(message) if message else cls()


Fault.__module__ = "mpfault"  # its public name (pickles as mpfault.Fault)


def _nth_pair(element: object) -> tuple[int, int | None]:
    if isinstance(element, int) and not isinstance(element, bool):
        return (int(element), int(element))
    if isinstance(element, tuple) and len(element) == 2:
        lo, hi = element
        if is_int(lo) and (hi is None or is_int(hi)):
            return (int(lo), None if hi is None else int(hi))
    raise FaultSpecError(f"nth: expected call indexes (int) or (lo, hi) intervals, got {element!r}")


def normalise_nth(value: object) -> Nth | None:
    if value is None:
        return None
    pairs: list[tuple[int, int | None]]
    if is_int(value):
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
        if max(lo, hi or 0) > MAX_COUNT:
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
    entry = action_entry(action)
    args = fault.args
    if not isinstance(args, (tuple, list)):
        raise FaultSpecError(f"{action}: args must be a tuple, got {args!r}")
    fields: dict[str, object] = {"args": entry.normalise(tuple(args))}
    op = fault.op
    if op is not None and op not in SELECTS:
        raise FaultSpecError(f"unknown op {op!r} (expected one of: {OP_SELECTOR_NAMES})")
    who = fault.who
    if who is not None and (not isinstance(who, str) or not who):
        raise FaultSpecError(f"who must be a non-empty process name pattern, got {who!r}")
    fields["nth"] = normalise_nth(fault.nth)
    times = fault.times
    if times is not None and (not is_int(times) or not 1 <= times <= MAX_COUNT):
        raise FaultSpecError(f"times must be an int in 1..2**63-1, got {times!r}")
    prob = fault.prob
    if prob is not None:
        if not isinstance(prob, (int, float)) or isinstance(prob, bool) or not 0 < prob <= 1:
            raise FaultSpecError(f"prob must be a number in (0, 1], got {prob!r}")
        fields["prob"] = float(prob)
    if fault.item is not ANY and not is_literal(fault.item):
        raise FaultSpecError(f"item must be ANY or {LITERAL_KINDS}, got {fault.item!r}")
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
    for term in terms:
        check = action_entry(term.action).check
        if check is not None:
            check(head.op, term.args)
        if head.op == "got":
            when = action_entry(term.action).when
            if term.action not in _AFTER_ONLY or (when is not None and term.args[when] != "after"):
                raise FaultSpecError(
                    f"op 'got' counts the gets that returned an item, so its actions act"
                    f" after them: kill(after), exit(code,after), gate(name,after) or off,"
                    f" not {_format_term(term)!r}"
                )
    if head.op is None or head.op == "*":
        ops = OPS
        for term in terms:
            entry = action_entry(term.action)
            ops &= entry.default_ops if head.op is None else entry.applies
        if not ops:
            names = ", ".join(term.action for term in terms)
            if head.op is None:
                raise FaultSpecError(
                    f"the actions {names} have no default op in common: give an op"
                )
            raise FaultSpecError(f"the actions {names} apply to no op in common")
    else:
        ops = SELECTS[head.op]
        for term in terms:
            applies = action_entry(term.action).applies
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
    return ", ".join(op for op in (*OP_ORDER, "net") if op in ops)


def make_tail(
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
