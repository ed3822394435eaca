"""Network faults between programs and a served queue: the actions' arguments, and the
proxy's view of a fault.

A network fault is a :class:`~mpfault.Fault` whose op is ``net`` (plain picklable data,
in the spec grammar like every fault)::

    net[@who][#nth]:action[(args)]

``who`` is a glob on the client's name (the program's name), ``nth`` the index
(1-based; ``N``, ``N..``, ``N..M``) of the client's queue call from which the fault
applies, counted by the proxy across the client's connections (default: from the
first byte).  Actions, in the spirit of Toxiproxy's toxics:

``latency(D)`` / ``latency(D..D2)``
    every message, both directions, is held ``D`` (plus a seeded jitter up to ``D2``).
``bandwidth(RATE)``
    at most ``RATE`` bytes a second each way (``64KB``, ``1MB``, ``500B``).
``reset`` / ``reset(NB)``
    the connection is reset (TCP RST), at once or after ``N`` more bytes.
``partition(D)`` / ``partition``
    a blackhole: nothing passes either way for ``D`` (without one: until the test
    heals it), then everything held passes, as TCP delivers after a partition heals.

The action entries are in :data:`mpfault._runtime.actions.REGISTRY`; this module
holds their argument handling.  A network fault fires in the served queue's proxy,
never at a queue operation.  Standard library and ``mpfault._runtime`` only.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from . import spectext as _t
from .errors import FaultSpecError

if TYPE_CHECKING:
    from .faulty import Call
    from .model import Fault

__all__ = ["NET_ACTIONS", "NET_OPS", "NetFault", "as_net"]

#: the pseudo-operation network faults select (no queue operation is one)
NET_OPS: Final[frozenset[str]] = frozenset({"net"})
NET_ACTIONS: Final = ("latency", "bandwidth", "reset", "partition")

_SIZE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>B|KB|MB|GB)\s*$")
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _seconds(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultSpecError(f"{what} must be a number of seconds, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise FaultSpecError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return v


def _bytes(what: str, value: object, positive: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise FaultSpecError(f"{what} must be an int of bytes >= {int(positive)}, got {value!r}")
    return int(value)


def _parse_size(text: str, what: str) -> int:
    m = _SIZE.match(text)
    if m is None:
        raise _t.Syntax(f"{what}: {text.strip()!r} is not a size (500B, 64KB, 1MB)")
    from decimal import Decimal

    return int(Decimal(m["n"]) * _SIZES[m["unit"]])


def _format_size(n: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if n >= _SIZES[unit] and n % _SIZES[unit] == 0:
            return f"{n // _SIZES[unit]}{unit}"
    return f"{n}B"


def _arity(action: str, args: tuple[Any, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise FaultSpecError(f"{action} takes {low} to {high} arguments, got {args!r}")


# -- latency(seconds, jitter=0) -----------------------------------------------------------------
def normalise_latency(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(seconds, jitter)``."""
    _arity("latency", args, 1, 2)
    jitter = args[1] if len(args) > 1 else 0.0
    return (_seconds("latency: seconds", args[0]), _seconds("latency: jitter", jitter))


def parse_latency(text: str | None) -> tuple[Any, ...]:
    """``50ms`` or ``10ms..80ms`` (exact, as ``delay`` is)."""
    import decimal

    if text is None or not text.strip():
        raise _t.Syntax(f"latency needs {_t.DURATION_HINT}, as in latency(50ms)")
    low_text, dots, high_text = text.strip().partition("..")
    low = _t.parse_duration(low_text, "latency")
    seconds = _t.finite(low, "latency", low_text)
    if not dots:
        return (seconds, 0.0)
    high = _t.parse_duration(high_text, "latency upper bound")
    if high < low:
        raise _t.Syntax(f"latency range {text.strip()!r} ends before it starts")
    try:
        jitter = _t.exact().subtract(high, low)
    except decimal.DecimalException:
        raise _t.Syntax(f"latency range {text.strip()!r} is too large") from None
    return (seconds, _t.finite(jitter, "latency range", text))


def format_latency(args: tuple[Any, ...]) -> str:
    """The text between the parentheses."""
    seconds, jitter = args
    if not jitter:
        return _t.format_duration(seconds)
    low = _t.float_decimal(seconds)
    high = _t.exact().add(low, _t.float_decimal(jitter))
    return f"{_t.format_duration_decimal(low)}..{_t.format_duration_decimal(high)}"


# -- bandwidth(bytes_per_second) ----------------------------------------------------------------
def normalise_bandwidth(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(bytes_per_second,)``."""
    _arity("bandwidth", args, 1, 1)
    return (_bytes("bandwidth: rate", args[0], True),)


def parse_bandwidth(text: str | None) -> tuple[Any, ...]:
    """``64KB`` (bytes a second)."""
    if text is None or not text.strip():
        raise _t.Syntax("bandwidth needs a rate in bytes a second, as in bandwidth(64KB)")
    return (_parse_size(text, "bandwidth"),)


def format_bandwidth(args: tuple[Any, ...]) -> str:
    """The text between the parentheses."""
    return _format_size(args[0])


# -- reset(after_bytes=0) -------------------------------------------------------------------------
def normalise_reset(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(bytes_first,)``."""
    _arity("reset", args, 0, 1)
    return (_bytes("reset: bytes", args[0] if args else 0, False),)


def parse_reset(text: str | None) -> tuple[Any, ...]:
    """Nothing, or ``1KB`` (the bytes let through first)."""
    if text is None or not text.strip():
        return (0,)
    return (_parse_size(text, "reset"),)


def format_reset(args: tuple[Any, ...]) -> str:
    """The text between the parentheses ("" for none)."""
    return _format_size(args[0]) if args[0] else ""


# -- partition(seconds=None) ----------------------------------------------------------------------
def normalise_partition(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(seconds or None,)``."""
    _arity("partition", args, 0, 1)
    seconds = args[0] if args else None
    return (None if seconds is None else _seconds("partition: seconds", seconds),)


def parse_partition(text: str | None) -> tuple[Any, ...]:
    """Nothing (until healed), or ``2s``."""
    if text is None or not text.strip():
        return (None,)
    return (_t.finite(_t.parse_duration(text, "partition"), "partition", text),)


def format_partition(args: tuple[Any, ...]) -> str:
    """The text between the parentheses ("" for none)."""
    return "" if args[0] is None else _t.format_duration(args[0])


def fire_never(call: Call, index: int, term: Fault) -> None:  # pragma: no cover
    """A network fault never fires at a queue operation (no operation is ``net``)."""


# -- the proxy's view -----------------------------------------------------------------------------
@dataclass(frozen=True)
class NetFault:
    """A network fault as the proxy applies it (made from a ``Fault`` by :func:`as_net`)."""

    action: str
    args: tuple[Any, ...]
    who: str | None
    #: ``(lo, hi)`` call index intervals (hi None: open); empty: from the first byte
    nth: tuple[tuple[int, int | None], ...]
    spec: str

    def __str__(self) -> str:
        return self.spec

    def selects(self, client: str) -> bool:
        """Whether the fault applies to the client named ``client``."""
        return self.who is None or fnmatch.fnmatchcase(client, self.who)

    @property
    def first(self) -> int | None:
        """The call index it starts at (None: the first byte)."""
        return min(lo for lo, _ in self.nth) if self.nth else None

    def active_at(self, call: int) -> bool:
        """Whether a shaping fault (latency, bandwidth) applies after ``call`` calls."""
        if not self.nth:
            return True
        return any(call >= lo and (hi is None or call <= hi) for lo, hi in self.nth)

    @property
    def one_shot(self) -> bool:
        """Whether it fires once (reset, partition) rather than shaping traffic."""
        return self.action in ("reset", "partition")


def as_net(fault: Fault) -> NetFault:
    """The proxy's view of network fault ``fault``; a FaultSpecError if it chains terms
    or has a probability or count (which the proxy does not apply)."""
    terms = list(fault.terms())
    if len(terms) != 1 or fault.prob is not None or fault.times is not None:
        raise FaultSpecError(
            f"network fault '{fault}': one action, without a probability or a count"
        )
    nth = tuple(fault.nth or ())
    return NetFault(fault.action, tuple(fault.args), fault.who, nth, str(fault))
