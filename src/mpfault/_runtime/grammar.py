"""The fault spec grammar: the text form of faults (format and parse).

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
    get@worker-1:kill(during)     worker-1 dies inside its get, holding the read lock
    put:2*delay(10ms)->full       the first two puts are slow, then the queue is "full"
    empty:return(False)           empty() lies
    put_nowait#2..4:raise(ValueError:boom)
    *@consumer-*:pause(200ms)     consumers are stopped for 200 ms on every operation
    put:gate(g1,after)            after a put, the process waits until the test opens gate g1

A comment line starts with ``#`` not followed by a digit (``#3:drop`` is a spec:
the third call of the fault's default operations).  Durations need a unit
(``ns``, ``us``, ``ms``, ``s``: ``10ms``; a bare ``10`` is an error); ``delay(a..b)``
sleeps uniformly between ``a`` and ``b``.  Items and ``return`` values are Python
literals; a ``who`` pattern or an exception message that is not a plain word may be
written as a Python string literal (``put@'my worker':drop``, ``raise(ValueError:'a (b)')``).

Each action's arguments are parsed and written by its entry in :mod:`.actions`;
this module handles the rest: separators, targets, terms and chains.  Standard
library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Final

from . import spectext as _t
from .actions import ACTION_NAMES, REGISTRY
from .errors import FaultSpecError
from .model import ANY, OP_SELECTOR_NAMES, SELECTS, Fault, Nth, make_tail, normalise_nth
from .spectext import BARE_WHO, Syntax

__all__ = ["format_fault", "format_plan", "format_term", "parse"]

_NTH_PART: Final = re.compile(r"\s*([0-9]+)(?:\s*(\.\.)\s*([0-9]+)?)?\s*", re.ASCII)
_OP_NAME: Final = re.compile(r"\*|[A-Za-z_][A-Za-z0-9_]*")
_TERM_HEAD: Final = re.compile(
    rf"\s*(?:({_t.NUMBER})\s*%\s*)?(?:([0-9]+)\s*\*\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*", re.ASCII
)

# -- formatting -------------------------------------------------------------------------------


def format_fault(fault: Fault) -> str:
    """The canonical spec text of a fault (``str(fault)``)."""
    target = _format_target(fault)
    terms = "->".join(format_term(term) for term in fault.terms())
    return f"{target}:{terms}" if target else terms


def format_term(term: Fault) -> str:
    """The text of one term of a chain (its probability, count, action and arguments)."""
    text = ""
    if term.prob is not None:
        text += _t.format_decimal(_t.shift(_t.float_decimal(term.prob), 2)) + "%"
    if term.times is not None:
        text += f"{term.times}*"
    args = REGISTRY[term.action].format(term.args)
    return f"{text}{term.action}({args})" if args else f"{text}{term.action}"


def _format_nth(nth: Nth) -> str:
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
        text += "@" + _t.format_text(fault.who, BARE_WHO)
    if fault.nth is not None:
        text += "#" + _format_nth(fault.nth)
    if fault.item is not ANY:
        text += "==" + repr(fault.item)
    return text


def format_plan(faults: Iterable[Fault]) -> str:
    """Return the specs of ``faults`` joined with ``'; '`` (:func:`parse` reads it back)."""
    return "; ".join(str(fault) for fault in faults)


# -- parsing ----------------------------------------------------------------------------------


def _entries(text: str) -> Iterator[str]:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped[1:2] not in tuple("0123456789"):
            continue
        for entry in _t.split_top(stripped, ";"):
            entry = entry.strip()
            if entry:
                yield entry


def _parse_nth(text: str) -> Nth:
    pairs: list[tuple[int, int | None]] = []
    for part in text.split(","):
        match = _NTH_PART.fullmatch(part)
        if not match:
            raise Syntax(
                f"nth must be N, N..M, N.. or a list of those like 1,3,5.. (1-based), got {text!r}"
            )
        lo = _t.parse_int(match.group(1), "nth call index")
        hi = _t.parse_int(match.group(3), "nth call index") if match.group(3) else None
        hi = hi if hi is not None or match.group(2) else lo
        if lo < 1:
            raise Syntax(f"nth call indexes start at 1, got {text!r}")
        if hi is not None and hi < lo:
            raise Syntax(f"nth range {part.strip()!r} is empty")
        pairs.append((lo, hi))
    return normalise_nth(pairs) or ()


def _parse_target(text: str) -> dict[str, Any]:
    selectors: dict[str, Any] = {}
    text = text.strip()
    index = 0
    match = _OP_NAME.match(text)
    if match:
        op = match.group()
        if op not in SELECTS:
            raise Syntax(f"unknown op {op!r} (expected one of: {OP_SELECTOR_NAMES})")
        selectors["op"] = op
        index = match.end()
    rest = text[index:].lstrip()
    if rest.startswith("@"):
        rest = rest[1:].lstrip()
        if rest[:1] in ("'", '"'):
            end = _t.skip_string(rest, 0)
        else:
            found = re.match(r"[^\s#=]*", rest)
            end = found.end() if found else 0
        if end == 0:
            raise Syntax("expected a process name pattern after '@'")
        selectors["who"] = _t.parse_name_text(rest[:end], "who", BARE_WHO)
        rest = rest[end:].lstrip()
    if rest.startswith("#"):
        end = rest.find("==")
        end = len(rest) if end < 0 else end
        selectors["nth"] = _parse_nth(rest[1:end])
        rest = rest[end:]
    if rest.startswith("=="):
        item_text = rest[2:].strip()
        if not item_text:
            raise Syntax("expected an item literal after '=='")
        selectors["item"] = _t.parse_literal(item_text, "item")
        rest = ""
    if rest:
        raise Syntax(
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
            raise Syntax(f"expected a term like drop, 2*delay(10ms) or 50%full {where}, got {got}")
        pct, count, action = match.groups()
        if action not in REGISTRY:
            hint = f"; a spec is op:action, as in {action}:drop" if action in SELECTS else ""
            raise Syntax(f"unknown action {action!r} (expected one of: {ACTION_NAMES}){hint}")
        prob = None
        if pct is not None:
            prob_decimal = _t.parse_decimal(pct, -2)
            prob = float(prob_decimal)
            if not (0 < prob_decimal <= 1 and prob > 0):
                raise Syntax(f"a probability must be above 0% and at most 100%, got {pct}%")
        times = None
        if count is not None:
            times = _t.parse_int(count, "count")
            if times < 1:
                raise Syntax(f"a count must be at least 1, got {count}*")
        index = match.end()
        args_text = None
        if text.startswith("(", index):
            close = None
            depth = 0
            position = index
            while position < len(text):
                char = text[position]
                if char in "'\"":
                    position = _t.skip_string(text, position)
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
                raise Syntax(f"unclosed '(' after {action}")
            args_text = text[index + 1 : close]
            index = close + 1
        terms.append((action, REGISTRY[action].parse(args_text), times, prob))
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return terms
        if not text.startswith("->", index):
            raise Syntax(
                f"unexpected {text[index:]!r} after {action} (expected '->' or the end of the spec)"
            )
        index += 2


def _check_quotes(spec: str) -> None:
    index = 0
    while index < len(spec):
        if spec[index] in "'\"":
            end = _t.string_end(spec, index)
            if end is None:
                raise Syntax(f"unterminated string literal {spec[index:]!r}")
            index = end
        else:
            index += 1


def _parse_spec(spec: str) -> Fault:
    _check_quotes(spec)
    colon = next((index for index, char in _t.top_level(spec) if char == ":"), -1)
    selectors = _parse_target(spec[:colon]) if colon >= 0 else {}
    terms = _parse_terms(spec[colon + 1 :])
    tail: Fault | None = None
    for action, args, times, prob in reversed(terms[1:]):
        tail = make_tail(action, args, times, prob, tail)
    action, args, times, prob = terms[0]
    return Fault(action, args, times=times, prob=prob, next=tail, **selectors)


def parse(text: str, source: str = "string") -> list[Fault]:
    """Parse fault specs (see the module documentation for the grammar).

    ``text`` holds specs separated by ``;`` or newlines; blank entries and comment
    lines are ignored.  ``source`` names where the text comes from (an option, an ini
    key, a marker) in error messages.  Raises :class:`FaultSpecError`, one line naming
    the source and the spec, on any syntax or semantic error.
    """
    __tracebackhide__ = True  # a bad spec is the caller's line, not the parser's
    if not isinstance(text, str):
        raise TypeError(f"fault specs must be a str, got {type(text).__name__}")
    faults = []
    for spec in _entries(text):
        try:
            faults.append(_parse_spec(spec))
        except (Syntax, FaultSpecError) as error:
            reason = error.reason if isinstance(error, FaultSpecError) else str(error)
            raise FaultSpecError(reason, spec, source) from None
    return faults
