"""Gates, and the coordinator that decides when the processes parked at them go on.

A gate is a ``gate`` fault (:func:`mpfault.faults.gate`): the process that reaches it
announces itself (:meth:`ProcessState.wait_gate <mpfault._runtime.state.ProcessState.wait_gate>`)
and waits for the word to go on.  A :class:`Coordinator` is the test process's end: it
knows who is parked where, and releases them: a whole gate (every process parked
there and every later one), or one parked process at a time, in an order it chooses.

:class:`PassiveHub` is the coordinator a harness uses: it releases only when the test
says so (:meth:`Gate.release`) and has no thread; it reads arrivals when the test
waits or releases.  Schedule exploration is a second implementation of the same
protocol: park every process at an implicit gate on every operation, and
:meth:`Coordinator.release_one` the one its policy picks; :attr:`Coordinator.decisions`
is the order it chose, which the history records and a replay follows.

This module does not import pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._runtime import state as _state

if TYPE_CHECKING:
    from ._runtime.errors import Hang
    from ._runtime.model import Fault

__all__ = ["Arrival", "Coordinator", "Gate", "PassiveHub"]


@dataclass(frozen=True)
class Arrival:
    """A process that reached a gate."""

    gate: str
    process: str
    pid: int


Arrival.__module__ = "mpfault"


class Coordinator(Protocol):
    """The test process's end of gates: who is parked where, and who goes on when.

    Every arrival is answered exactly once: by :meth:`release` of its gate (then and
    for every later arrival there) or by :meth:`release_one`.
    """

    #: every release, in the order it was made: (gate, the arrival released or None
    #: for a whole gate)
    decisions: list[tuple[str, Arrival | None]]

    def poll(self, timeout: float | None) -> bool:
        """Read new arrivals; block up to ``timeout`` for the first.  True if any came."""

    def arrivals(self, gate: str) -> list[Arrival]:
        """Every arrival at ``gate`` so far, in arrival order (released or not)."""

    def parked(self) -> list[Arrival]:
        """The processes waiting right now, at any gate, in arrival order."""

    def release(self, gate: str) -> None:
        """Open ``gate``: every process parked there goes on, and every later one passes."""

    def release_one(self, arrival: Arrival) -> None:
        """Let one parked process go on; its gate stays closed to the others."""

    def is_released(self, gate: str) -> bool:
        """Whether ``gate`` was opened with :meth:`release`."""

    def close(self) -> None:
        """Stop coordinating (a process still parked waits until it is killed)."""


class PassiveHub:
    """The coordinator of a harness: a datagram socket children announce arrivals on,
    released when the test says so.  No thread: arrivals are read when the test
    waits or releases."""

    def __init__(self, run_dir: str, record: Callable[[str], None] | None = None) -> None:
        self._record = record  # notes a decision in the history
        self.dir = os.path.join(run_dir, _state.GATES_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(os.path.join(self.dir, _state.COORD_SOCK))
        self._arrivals: list[tuple[Arrival, str]] = []
        self._waiting: dict[Arrival, str] = {}  # parked: the reply address
        self._released: set[str] = set()
        self.decisions: list[tuple[str, Arrival | None]] = []

    def poll(self, timeout: float | None) -> bool:
        """Read arrivals; block up to ``timeout`` for the first one. True if any was read."""
        got = False
        self._sock.settimeout(timeout)
        while True:
            try:
                data = self._sock.recv(4096)
            except (BlockingIOError, TimeoutError):
                return got
            got = True
            msg = json.loads(data)
            arr = Arrival(msg["gate"], msg["process"], int(msg["pid"]))
            self._arrivals.append((arr, msg["reply"]))
            if arr.gate in self._released:
                self._go(msg["reply"])
            else:
                self._waiting[arr] = msg["reply"]
            self._sock.settimeout(0)

    def _go(self, reply: str) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(b"go", reply)

    def arrivals(self, gate: str) -> list[Arrival]:
        """Every arrival at ``gate`` so far (read what has come)."""
        self.poll(0)
        return [a for a, _ in self._arrivals if a.gate == gate]

    def parked(self) -> list[Arrival]:
        """The processes waiting right now, in arrival order."""
        self.poll(0)
        return list(self._waiting)

    def release(self, gate: str) -> None:
        """Open ``gate`` for every process parked there and every later one."""
        with open(os.path.join(self.dir, f"{gate}.released"), "w"):
            pass
        self._released.add(gate)
        self._decide(gate, None)
        self.poll(0)
        for arr, reply in self._arrivals:
            if arr.gate == gate:
                self._waiting.pop(arr, None)
                self._go(reply)

    def release_one(self, arrival: Arrival) -> None:
        """Let ``arrival`` go on (a KeyError if it is not parked)."""
        reply = self._waiting.pop(arrival)
        self._decide(arrival.gate, arrival)
        self._go(reply)

    def _decide(self, gate: str, arrival: Arrival | None) -> None:
        self.decisions.append((gate, arrival))
        if self._record is not None:
            self._record(gate if arrival is None else f"{gate}: {arrival.process} {arrival.pid}")

    def is_released(self, gate: str) -> bool:
        """Whether ``gate`` was opened."""
        return gate in self._released

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class Gate:
    """A point where a process stops until the test releases it.

    Made by :meth:`Harness.gate`, given in a queue's ``faults``.  The first
    process to reach it (and every later one) waits there until
    :meth:`release`; from then on the gate stays open.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        fault: Fault,
        name: str,
        limit: Callable[[float | None], float],
        hang: Callable[[str, float], Hang],
    ) -> None:
        self._coordinator = coordinator
        self._limit = limit
        self._hang = hang
        self.fault = fault
        self.name = name

    def __repr__(self) -> str:
        return f"<Gate {self.name} {self.fault}>"

    @property
    def reached(self) -> list[Arrival]:
        """The processes that have reached the gate so far."""
        return self._coordinator.arrivals(self.name)

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._coordinator.is_released(self.name)

    def wait_reached(self, timeout: float | None = None, count: int = 1) -> Arrival:
        """Wait until ``count`` processes have reached the gate; return the last arrival.

        Raises :class:`Hang` (with every child's stack) if that does not happen
        within ``timeout`` seconds (or the test's deadline).
        """
        __tracebackhide__ = True
        limit = self._limit(timeout)
        end = time.monotonic() + limit
        while True:
            arrivals = self._coordinator.arrivals(self.name)
            if len(arrivals) >= count:
                return arrivals[count - 1]
            left = end - time.monotonic()
            if left <= 0:
                call = f"gate {self.name!r} ({self.fault}).wait_reached(timeout={timeout})"
                raise self._hang(call, limit)
            self._coordinator.poll(left)

    def release(self) -> None:
        """Let every waiting process go on, and every later one pass."""
        self._coordinator.release(self.name)


Gate.__module__ = "mpfault"
