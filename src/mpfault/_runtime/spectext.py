"""The lexical layer of the fault spec text, shared by the grammar and the actions'
argument parsers: numbers, durations, signals, literals, names, and scanning text
outside string literals and parentheses.

Standard library only; :mod:`decimal` and :mod:`ast` load when text is parsed or a
duration formatted, not when a fault plan is unpickled.
"""

from __future__ import annotations

import math
import re
import signal as _signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from .errors import MpfaultError

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = [
    "DURATION_HINT",
    "Syntax",
    "format_decimal",
    "format_duration",
    "format_signal",
    "format_text",
    "parse_decimal",
    "parse_duration",
    "parse_int",
    "parse_literal",
    "parse_name_text",
    "parse_signal",
    "skip_string",
    "split_top",
    "string_end",
    "top_level",
]


class Syntax(MpfaultError):
    """A parse error inside one spec (the grammar turns it into a FaultSpecError
    naming the spec and its source)."""


NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DURATION: Final = re.compile(rf"({NUMBER})\s*(ns|us|µs|μs|ms|s)?", re.ASCII)
_UNIT_PLACES: Final = {None: 0, "s": 0, "ms": -3, "us": -6, "µs": -6, "μs": -6, "ns": -9}
CODE: Final = re.compile(r"[0-9]+", re.ASCII)
DURATION_HINT: Final = "a duration like 10ms, 1.5s, 200us or 2"
BARE_WHO: Final = re.compile(r"[^\s#=@'\"():;,\\]+")
BARE_MESSAGE: Final = re.compile(r"[^'\"()\\]+")


def _decimal_context() -> Any:
    import decimal

    return decimal.Context(prec=1000)  # exact for sums of float reprs


_CONTEXT: list[Any] = []


def exact() -> Any:
    """A decimal context exact for sums of float reprs."""
    if not _CONTEXT:
        _CONTEXT.append(_decimal_context())
    return _CONTEXT[0]


# -- scanning ---------------------------------------------------------------------------------


def string_end(text: str, start: int) -> int | None:
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


def skip_string(text: str, start: int) -> int:
    """Like string_end, but an unterminated literal runs to the end of the text."""
    end = string_end(text, start)
    return len(text) if end is None else end


def top_level(text: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) of the characters outside parentheses and string literals."""
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char in "'\"":
            index = skip_string(text, index)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            yield index, char
        index += 1


def split_top(text: str, separator: str) -> list[str]:
    """``text`` split at the ``separator`` characters that are at the top level."""
    parts, start = [], 0
    for index, char in top_level(text):
        if char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


# -- values -----------------------------------------------------------------------------------


def parse_literal(text: str, what: str) -> Any:
    """A Python literal (``ast.literal_eval``)."""
    import ast

    try:
        return ast.literal_eval(text)
    except Exception:
        raise Syntax(f"{what} must be a Python literal like None, 3 or 'x', got {text!r}")


def parse_name_text(text: str, what: str, bare: re.Pattern[str]) -> str:
    """A who pattern or message: a Python string literal, or bare text."""
    if text[:1] in ("'", '"'):
        value = parse_literal(text, what)
        if not isinstance(value, str):
            raise Syntax(f"{what} must be a string, got {text!r}")
        return value
    if not bare.fullmatch(text):
        raise Syntax(f"{what} {text!r} needs quotes (write it as a Python string literal)")
    return text


def format_text(text: str, bare: re.Pattern[str]) -> str:
    """``text`` bare where it reads back, else as a Python string literal."""
    if text and text.isprintable() and text == text.strip() and bare.fullmatch(text):
        return text
    return repr(text)


def parse_int(text: str, what: str) -> int:
    """A decimal integer of at most 19 digits."""
    if len(text) > 19:
        raise Syntax(f"{what} {text[:19]}... is too large")
    return int(text)


def shift(value: Decimal, places: int) -> Decimal:
    """Multiply by 10**places, exactly."""
    from decimal import Decimal

    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    return Decimal((sign, digits, exponent + places))


def float_decimal(value: float) -> Decimal:
    """The shortest decimal that reads back as ``value``."""
    from decimal import Decimal

    return Decimal(repr(value))


def parse_decimal(text: str, places: int = 0) -> Decimal:
    """The number ``text`` (matched by NUMBER) times 10**places, exactly."""
    import decimal

    try:
        return shift(decimal.Decimal(text), places)
    except decimal.DecimalException:  # an exponent beyond what decimal supports
        raise Syntax(f"number {text!r} is out of range")


def finite(value: Decimal, what: str, text: str) -> float:
    """``value`` as a float, which must be finite."""
    number = float(value)
    if not math.isfinite(number):
        raise Syntax(f"{what}: {text.strip()!r} is too large")
    return number


def format_decimal(value: Decimal) -> str:
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


# -- durations and signals --------------------------------------------------------------------


def parse_duration(text: str, what: str) -> Decimal:
    """A duration (seconds, with an optional unit) as an exact decimal of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise Syntax(f"{what}: expected {DURATION_HINT}, got {text.strip()!r}")
    return parse_decimal(match.group(1), _UNIT_PLACES[match.group(2)])


def format_duration_decimal(seconds: Decimal) -> str:
    """The text of an exact duration, in the largest unit that keeps it >= 1."""
    from decimal import Decimal

    if seconds == 0:
        return "0s"
    if seconds >= 1:
        return format_decimal(seconds) + "s"
    if seconds >= Decimal("0.001"):
        return format_decimal(shift(seconds, 3)) + "ms"
    return format_decimal(shift(seconds, 6)) + "us"


def format_duration(seconds: float) -> str:
    """The text of a duration in seconds (reads back to the same float)."""
    return format_duration_decimal(float_decimal(seconds))


def parse_signal(text: str) -> int:
    """A signal number, or name with or without ``SIG``."""
    if CODE.fullmatch(text):
        return parse_int(text, "signal")
    members = _signal.Signals.__members__
    name = text.upper()
    if name not in members:
        name = "SIG" + name
    if name not in members:
        raise Syntax(f"unknown signal {text!r} (expected a name like SIGTERM or KILL, or a number)")
    return int(members[name])


def format_signal(number: int) -> str:
    """A signal's name (``SIGTERM``), or its number where it has none."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)
