"""Network faults between programs and a served queue: the model and its spec grammar.

A network fault is plain, picklable data, like a queue fault.  Its string form::

    net[@who][#nth]:action[(args)]

``who`` is a glob on the client's name (the program's name), ``nth`` the index
(1-based, an int or ``N..`` / ``N..M``) of the client's queue call from which the
fault applies (counted by the proxy across the client's connections; default: from
the first byte).  Actions, in the spirit of Toxiproxy's toxics:

``latency(D)`` / ``latency(D..D2)``
    every message, both directions, is held ``D`` (plus a seeded jitter up to ``D2``).
``bandwidth(RATE)``
    at most ``RATE`` bytes a second each way (``64KB``, ``1MB``, ``500B``).
``reset`` / ``reset(NB)``
    the connection is reset (TCP RST), at once or after ``N`` more bytes.
``partition(D)`` / ``partition``
    a blackhole: nothing passes either way for ``D`` (forever: until the test heals
    it), then everything held passes, as TCP delivers after a partition heals.

This module imports nothing outside ``mpfault._runtime`` and never pytest.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["NET_ACTIONS", "NetFault", "NetFaultError", "is_net_spec", "parse_net"]

#: action -> (what its argument is, whether it takes one)
NET_ACTIONS: dict[str, str] = {
    "latency": "a duration or a range of durations (latency(50ms), latency(10ms..80ms))",
    "bandwidth": "a rate in bytes per second (bandwidth(64KB))",
    "reset": "nothing, or the bytes to let through first (reset, reset(1KB))",
    "partition": "nothing (until healed), or a duration (partition(2s))",
}

_SPEC = re.compile(
    r"^\s*net(?:@(?P<who>[^#:\s]+))?(?:#(?P<nth>\d+(?:\.\.\d*)?))?\s*:\s*"
    r"(?P<action>[a-z_]+)\s*(?:\((?P<args>[^()]*)\))?\s*$"
)
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s)\s*$")
_SIZE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>B|KB|MB|GB)\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_SIZES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


class NetFaultError(ValueError):
    """A malformed network fault spec (the message names the spec and what is wrong)."""


def is_net_spec(spec: str) -> bool:
    """Whether ``spec`` is a network fault (its target is ``net``)."""
    s = spec.strip()
    return s == "net" or s.startswith(("net@", "net#", "net:"))


def _duration(text: str, spec: str) -> float:
    m = _DURATION.match(text)
    if m is None:
        raise NetFaultError(f"bad network fault {spec!r}: {text!r} is not a duration (50ms, 2s)")
    return float(m["n"]) * _UNITS[m["unit"]]


def _size(text: str, spec: str) -> int:
    m = _SIZE.match(text)
    if m is None:
        raise NetFaultError(f"bad network fault {spec!r}: {text!r} is not a size (500B, 64KB)")
    return int(float(m["n"]) * _SIZES[m["unit"]])


def _fmt_duration(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        n = seconds / scale
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    return f"{seconds * 1000:g}ms"


def _fmt_size(n: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if n >= _SIZES[unit] and n % _SIZES[unit] == 0:
            return f"{n // _SIZES[unit]}{unit}"
    return f"{n}B"


@dataclass(frozen=True)
class NetFault:
    """One network fault: what happens to a client's traffic (see the module docstring).

    ``args``: latency ``(seconds, jitter)``; bandwidth ``(bytes_per_second,)``;
    reset ``(bytes_first,)``; partition ``(seconds or None,)``.
    """

    action: str
    args: tuple[Any, ...] = ()
    who: str | None = None
    nth: int | None = None
    #: the last call index (inclusive) of ``nth..M``; None: no end
    nth_end: int | None = None
    nth_open: bool = False

    def __str__(self) -> str:
        target = "net"
        if self.who is not None:
            target += f"@{self.who}"
        if self.nth is not None:
            target += f"#{self.nth}"
            if self.nth_open:
                target += ".." + ("" if self.nth_end is None else str(self.nth_end))
        a = self.action
        if a == "latency":
            d, j = self.args
            arg = _fmt_duration(d) + (f"..{_fmt_duration(d + j)}" if j else "")
            return f"{target}:latency({arg})"
        if a == "bandwidth":
            return f"{target}:bandwidth({_fmt_size(self.args[0])})"
        if a == "reset":
            return f"{target}:reset" + (f"({_fmt_size(self.args[0])})" if self.args[0] else "")
        seconds = self.args[0]
        return f"{target}:partition" + ("" if seconds is None else f"({_fmt_duration(seconds)})")

    def selects(self, client: str) -> bool:
        """Whether the fault applies to the client named ``client``."""
        return self.who is None or fnmatch.fnmatchcase(client, self.who)

    def active_at(self, call: int) -> bool:
        """Whether the fault applies once the client has made ``call`` queue calls."""
        if self.nth is None:
            return True
        if self.nth_open:
            return call >= self.nth and (self.nth_end is None or call <= self.nth_end)
        return call >= self.nth

    @property
    def one_shot(self) -> bool:
        """Whether the fault fires once (reset, partition) rather than shaping traffic."""
        return self.action in ("reset", "partition")


def parse_net(spec: str, source: str | None = None) -> NetFault:
    """Parse one network fault spec; a ``NetFaultError`` names ``source`` and the problem."""
    where = f" from {source}" if source else ""
    m = _SPEC.match(spec)
    if m is None:
        raise NetFaultError(
            f"bad network fault {spec!r}{where}: expected net[@who][#nth]:action[(args)]"
        )
    action = m["action"]
    if action not in NET_ACTIONS:
        raise NetFaultError(
            f"bad network fault {spec!r}{where}: unknown action {action!r} "
            f"(expected one of: {', '.join(NET_ACTIONS)})"
        )
    raw = (m["args"] or "").strip()
    nth = nth_end = None
    nth_open = False
    if m["nth"]:
        first, _, rest = m["nth"].partition("..")
        nth = int(first)
        nth_open = ".." in m["nth"]
        nth_end = int(rest) if rest else None
        if nth < 1 or (nth_end is not None and nth_end < nth):
            raise NetFaultError(f"bad network fault {spec!r}{where}: bad call index {m['nth']!r}")
    try:
        args: tuple[Any, ...]
        if action == "latency":
            if not raw:
                raise NetFaultError(f"bad network fault {spec!r}: latency needs a duration")
            low, _, high = raw.partition("..")
            d = _duration(low, spec)
            d2 = _duration(high, spec) if high else d
            if d2 < d:
                raise NetFaultError(f"bad network fault {spec!r}: the range ends before it starts")
            args = (d, d2 - d)
        elif action == "bandwidth":
            if not raw:
                raise NetFaultError(f"bad network fault {spec!r}: bandwidth needs a rate")
            rate = _size(raw, spec)
            if rate <= 0:
                raise NetFaultError(f"bad network fault {spec!r}: the rate must be positive")
            args = (rate,)
        elif action == "reset":
            args = (_size(raw, spec) if raw else 0,)
        else:
            args = (_duration(raw, spec) if raw else None,)
    except NetFaultError as e:
        raise NetFaultError(f"{e}{where}") from None
    return NetFault(action, args, m["who"], nth, nth_end, nth_open)
